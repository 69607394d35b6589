"""``perceiver-jobs <subcommand> --help`` is plain text with every default; a mistyped flag gets the subcommand's
usage and exit status 2. Checked for every subcommand (``train`` included: only its help and typo behaviour).

No Ray, no model: argparse only.
"""

from __future__ import annotations

import argparse
import re

import pytest

from jobs.cli import SUBCOMMANDS, build_parser, main, plain

MARKUP = re.compile(r"``|`|\*\*|:[a-z]+:`|::$", re.MULTILINE)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


NAMES = sorted(subparsers())


def help_text(capsys, monkeypatch, name: str) -> str:
    monkeypatch.setenv("COLUMNS", "200")  # one line per flag where it fits: blocks are easy to cut
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def flag_blocks(text: str) -> dict[str, str]:
    """Each flag's lines of the help, keyed by its first option string."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^  (-{1,2}[\w-]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.startswith("      "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def test_every_subcommand_is_checked():
    assert {"video", "flow", "images", "text"} <= set(NAMES) <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", NAMES)
def test_help_is_plain_and_shows_defaults(name, capsys, monkeypatch):
    text = help_text(capsys, monkeypatch, name)
    assert text.startswith(f"usage: perceiver-jobs {name} ")
    assert not MARKUP.search(text), MARKUP.search(text)
    blocks = flag_blocks(text)
    checked = 0
    for action in subparsers()[name]._actions:  # the reference: the defaults argparse would apply
        default = action.default
        if (not action.option_strings or action.help == argparse.SUPPRESS or default is None or default is False
                or default == [] or default == argparse.SUPPRESS):
            continue
        block = blocks[action.option_strings[0]]
        assert "default" in block, block
        own_wording = "(default" in plain(action.help or "")
        assert own_wording or f"default: {default}" in block, block
        checked += 1
    assert checked >= 3


def test_batch_job_help_names_the_common_defaults(capsys, monkeypatch):
    blocks = flag_blocks(help_text(capsys, monkeypatch, "images"))
    assert "(default: 16)" in blocks["--batch-size"]
    assert "(default: 30.0)" in blocks["--progress-interval"]
    assert "(default: 5)" in blocks["--top-k"]
    assert "default" not in blocks["--random-init"]  # off by default: nothing to show


def test_plain_strips_docstring_markup():
    assert plain("``pipelines.batch.schemas.IMAGES`` and `x` and **bold** and :class:`Job`") == \
        "pipelines.batch.schemas.IMAGES and x and bold and Job"
    assert plain("Data flow::\n\n    a -> b") == "Data flow:\n\n    a -> b"
    assert plain("globs such as shards/*.parquet stay") == "globs such as shards/*.parquet stay"


@pytest.mark.parametrize("name", NAMES)
def test_flag_typo_shows_the_subcommand_usage(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--inptu", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: perceiver-jobs {name} " in err
    assert "usage: perceiver-jobs [-h]" not in err  # not the top-level usage
    assert f"perceiver-jobs {name}: error: unrecognized argument: --inptu" in err


def test_typo_suggests_the_flag(capsys):
    with pytest.raises(SystemExit):
        main(["video", "--clips-per-vidoe", "2", "--input", "x", "--output", "y"])
    assert "did you mean --clips-per-video" in capsys.readouterr().err


def test_valid_spellings_are_not_typos():
    video = subparsers()["video"]
    for args in (["--inp", "a.mp4", "--output=o"], ["--audio-stream", "-1"], ["--input", "--", "-odd-name.mp4"],
                 ["--output", "-"], ["--chunk-size", "-.5"]):
        assert video._first_unknown_flag(args) is None, args
    assert video._first_unknown_flag(["--input", "a", "--frobnicate=3"]) == "--frobnicate"
