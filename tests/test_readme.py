"""The README is a manual whose promises are checked: its Python snippets run as written, its links resolve,
its fill-mask example has masks to fill, and its `error_type` tables list every code the decoders raise.

The snippets run in the order they appear, each in a fresh namespace (so none silently relies on a variable of
another), in one temporary working directory: the README's first block writes the tiny checkpoints
(``tiny/<preset>``) the others load, as a reader following along would. After each run the test checks the
shapes and equalities the README states in its comments, against the model config and an unchunked forward
pass, so a snippet that runs but does something else fails too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LIBRARY = ROOT / "docs" / "library.md"  # its snippets continue the README's, in the same folder
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def python_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == "python"]


def without_code(text: str) -> str:
    """Markdown with fenced blocks blanked, so `# comments` in bash blocks are not headings or links."""
    return FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to
    hyphens. Inline code keeps its text."""
    text = heading.replace("`", "").strip().lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(without_code(markdown)):
        slug = github_slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links(markdown: str) -> Iterator[str]:
    for target in LINK.findall(without_code(markdown)):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not checked
            yield target


# ----------------------------------------------------------------------------------------------- snippets


def _check_mlm(ns: dict) -> None:
    config = ns["model"].config
    assert tuple(ns["logits"].shape) == (1, config.max_position_embeddings, config.vocab_size)
    assert (ns["enc"]["input_ids"][0, 52:61] == ns["tokenizer"].mask_token_id).all()


def _check_multimodal(ns: dict) -> None:
    import torch

    c, batch, model = ns["c"], ns["batch"], ns["model"]
    _, t, h, w = c.output_shape
    assert tuple(ns["recon"]["image"].shape) == (batch, t, h, w, 3)
    assert tuple(ns["recon"]["audio"].shape) == (batch, c.num_frames * c.audio_samples_per_frame)
    # "encode once, decode in chunks" equals one unchunked forward pass on the same per-example points
    model.eval()
    with torch.inference_mode():
        reference = model(ns["inputs"], subsampled_output_points=ns["points"]).logits
    for key in ("image", "audio", "label"):
        torch.testing.assert_close(ns["out"][key], reference[key], rtol=1e-4, atol=1e-5)
    assert tuple(ns["out"]["image"].shape) == (batch, ns["points"]["image"].shape[1], 3)
    assert torch.isfinite(ns["loss"]) and ns["loss"].item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _check_flow(ns: dict) -> None:
    h, w = ns["h"], ns["w"]
    assert tuple(ns["patches"].shape) == (1, 2, 27, h, w)
    assert tuple(ns["flow"].shape) == (1, h, w, 2)


def _checks() -> dict[str, object]:
    """A check per snippet, keyed by a name the snippet defines (the README's order may change)."""
    return {"presets": None, "tokenizer": _check_mlm, "audio_patches": _check_multimodal, "flow_model": _check_flow}


def test_python_snippets_run_as_written(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # every snippet loads local folders; never the network
    torch.manual_seed(0)
    blocks = [(page.name, i + 1, body) for page in (README, LIBRARY)
              for i, body in enumerate(python_blocks(page.read_text(encoding="utf-8")))]
    checks = _checks()
    assert len(blocks) == len(checks), f"README + library.md have {len(blocks)} python blocks; the checks know " \
                                       f"{len(checks)}"
    done = set()
    for index, (page, number, block) in enumerate(blocks):
        namespace: dict = {"__name__": f"readme_block_{index}"}
        exec(compile(block, f"{page} python block {number}", "exec"), namespace)  # noqa: S102
        key = next(k for k in checks if k in namespace)
        if checks[key] is not None:
            checks[key](namespace)
        done.add(key)
    assert done == set(checks)
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["language", "multimodal", "optical-flow"]


# ------------------------------------------------------------------------------------------------- links


def test_anchor_links_name_a_heading():
    text = README.read_text(encoding="utf-8")
    own = anchors(text)
    assert {"quickstart", "contents", "swapping-the-import", "reliability-guarantees"} <= own
    bad = [t for t in relative_links(text) if t.startswith("#") and t[1:] not in own]
    assert not bad, f"README links to missing headings: {bad}"


def _markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.skipif(not (ROOT / "perceiver_core").is_dir() or not (ROOT / "docs").is_dir(),
                    reason="the README's file links point into the source checkout, which this copy lacks")
def test_relative_links_point_to_existing_files():
    bad = []
    for page in _markdown_files():
        for target in relative_links(page.read_text(encoding="utf-8")):
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
                bad.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "\n".join(bad)


# ------------------------------------------------------------------------------------------- job examples


def test_fill_mask_example_has_masks_to_fill():
    text = README.read_text(encoding="utf-8")
    inputs = re.findall(r"--task fill-mask --input (\S+)", text)
    assert inputs, "the README has no fill-mask example"
    for arg in inputs:
        if arg.isupper():  # a placeholder such as TEXTS
            continue
        target = ROOT / arg
        files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        assert files, f"{arg}: nothing to read"
        masks = sum(p.read_text(encoding="utf-8").count("[MASK]") for p in files)
        assert masks > 0, f"{arg}: no [MASK] in the fill-mask example's input"


def _error_table_codes(text: str, job: str) -> set[str]:
    """The codes in the first column of the `error_type` table of the README's section for ``job``."""
    section = text.split(f"### `{job}`", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    table = section.split("| `error_type` |", 1)[1].split("\n\n", 1)[0]
    codes = set()
    for row in table.splitlines()[2:]:
        codes |= set(re.findall(r"`([a-z0-9_]+)`", row.split("|")[1]))
    return codes


def test_error_type_tables_list_every_decoder_code():
    from pipelines.readers.image_io import IMAGE_ERROR_REASONS
    from pipelines.readers.video_decode import DECODE_ERROR_REASONS

    text = README.read_text(encoding="utf-8")
    video, flow, images = (_error_table_codes(text, job) for job in ("video", "flow", "images"))
    assert set(DECODE_ERROR_REASONS) | {"model_error"} <= video
    assert set(DECODE_ERROR_REASONS) | set(IMAGE_ERROR_REASONS) | {"load_failed", "model_error"} <= flow
    assert set(IMAGE_ERROR_REASONS) | {"read_failed", "preprocess_failed", "model_error"} <= images
    assert {"model_error", "bad_label", "utf16_unsupported", "not_a_string"} <= _error_table_codes(text, "text")
