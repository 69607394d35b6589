"""Symlinks planted in the output folder never redirect a write outside it.

A link where a part, ``_summary.json`` or ``_SUCCESS`` goes, or ``_pictures``/``_meta`` linked to a folder
elsewhere: the job either replaces the link itself (never its target) or refuses the path and fails with one
line (exit 1, or 2 when the folder is refused before any work). The file or folder outside is untouched.

Guarantee (pipelines/storage.py ``write_atomic``/``check_writable``): every folder between the output and
the target, and the target itself, must not be a symlink; writes go to a fresh temporary in the target's
folder and are renamed over the name (a rename replaces a link, it does not follow it); a planted link at a
part's name never counts as a commit (``sink.is_committed``).
"""

from __future__ import annotations

import pytest
from _reliability_helpers import make_clips

OUTSIDE_TEXT = "outside: must stay as it is\n"


def args(inp, out, *extra):
    return ["video", "--input", inp, "--output", out, "--model", "multimodal", "--random-init", "--tiny",
            "--no-progress", "--clips-per-video", 1, "--batch-size", 1, "--num-workers", 1, *extra]


@pytest.fixture
def setup(tmp_path):
    inp = make_clips(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text(OUTSIDE_TEXT)
    return inp, out, outside


def check_refused(rc: int, err: list[str], code: int, path) -> None:
    assert rc == code, err
    assert err[-1].startswith("perceiver-jobs video: error: ") and str(path) in err[-1], err
    assert "symlink" in err[-1] and sum(line.startswith("perceiver-jobs") for line in err) == 1, err


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_link_at_a_part_is_refused(cli, setup):
    inp, out, outside = setup
    (out / "part-00000000.parquet").symlink_to(outside / "victim")
    before = snapshot(outside)
    rc, err = cli(*args(inp, out))
    check_refused(rc, err, 1, out / "part-00000000.parquet")
    assert snapshot(outside) == before and (out / "part-00000000.parquet").is_symlink()
    assert not (out / "_SUCCESS").exists()


def test_links_at_summary_and_success(cli, setup):
    """``_SUCCESS`` is deleted when a run starts: the link itself goes, its target stays; ``_summary.json``
    is refused when the job writes it, after every shard is committed."""
    inp, out, outside = setup
    (outside / "other").write_text(OUTSIDE_TEXT)
    (out / "_SUCCESS").symlink_to(outside / "victim")
    (out / "_summary.json").symlink_to(outside / "other")
    before = snapshot(outside)
    rc, err = cli(*args(inp, out))
    check_refused(rc, err, 1, out / "_summary.json")
    assert snapshot(outside) == before
    assert not (out / "_SUCCESS").exists() and not (out / "_SUCCESS").is_symlink()


@pytest.mark.parametrize("folder,extra,code", [("_pictures", ["--pictures"], 1), ("_meta", [], 2)])
def test_linked_folder_is_refused(cli, setup, folder, extra, code):
    inp, out, outside = setup
    (out / folder).parent.mkdir(parents=True, exist_ok=True)
    (out / folder).symlink_to(outside)
    before = snapshot(outside)
    rc, err = cli(*args(inp, out, *extra))
    check_refused(rc, err, code, out / folder)
    assert snapshot(outside) == before  # nothing created, written or deleted there
