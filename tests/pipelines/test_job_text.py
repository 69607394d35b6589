"""End to end: ``perceiver-jobs text`` (fill-mask and classify) on local Ray with the tiny language preset."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _job_helpers import (
    TINY,
    check_output,
    check_rerun_adds_nothing,
    manifest_ids,
    run_cli,
    summary,
)

from pipelines import schemas


@pytest.fixture(scope="module")
def fill_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    docs = tmp / "docs"
    docs.mkdir()
    long_line = "word " * 60 + "[MASK][MASK]" + " tail" * 40  # several 126-byte windows (tiny model: 128)
    (docs / "notes.txt").write_text(f"The cat sat on the [MASK]at.\n\nNo mask at all.\n{long_line}\n")
    (docs / "records.jsonl").write_text("\n".join([json.dumps({"text": "Hello [MASK]orld"}), '{"text": 5}',
                                                   "{not json", json.dumps({"body": "x"})]) + "\n")
    pq.write_table(pa.table({"text": ["Parquet [MASK] row", None]}), docs / "rows.parquet")
    (docs / "bytes.txt").write_bytes(b"caf\xe9 [MASK] latin-1, not UTF-8\n")
    out = tmp / "out"
    args = ["text", "--task", "fill-mask", "--input", docs, "--output", out, "--model", "language", *TINY]
    assert run_cli(*args) == 0
    return out, args, long_line


def test_fill_mask(fill_run):
    out, _, long_line = fill_run
    rows = check_output(out, schemas.TEXT_FILL_MASK, manifest_ids(out)).to_pylist()
    assert len(rows) == 3 + 4 + 2 + 1  # blank line skipped
    errors = sorted(r["error_type"] for r in rows if r["error"] is not None)
    assert errors == ["invalid_json", "missing_field", "not_a_string", "null"]
    ok = {r["source"].rsplit("/", 1)[-1] + f":{r['position']}": r for r in rows if r["error"] is None}
    cat = ok["notes.txt:0"]
    assert cat["num_masks"] == 1 and "[MASK]" not in cat["filled_text"]
    assert cat["filled_text"].startswith("The cat sat on the ") and cat["filled_text"].endswith("at.")
    long = ok["notes.txt:3"]  # windowed, not cut: the whole document comes back
    assert long["num_windows"] > 1 and long["num_masks"] == 2 and not long["truncated"]
    assert long["filled_text"].startswith("word " * 60) and long["filled_text"].endswith(" tail" * 40)
    assert len(long["filled_text"].encode()) >= len(long_line.encode()) - 2 * len("[MASK]") + 2
    assert ok["notes.txt:2"]["filled_text"] == "No mask at all." and ok["notes.txt:2"]["num_masks"] == 0
    assert ok["bytes.txt:0"]["num_masks"] == 0  # invalid UTF-8 is read byte for byte: "[MASK]" stays text
    assert ok["rows.parquet:0"]["num_masks"] == 1
    assert summary(out)["metrics"]["masks_filled"] == 1 + 2 + 1 + 1


def test_rerun_adds_nothing(fill_run):
    out, args, _ = fill_run
    check_rerun_adds_nothing(out, args)


def test_classify_labelled_lines(ray_local, tmp_path):
    out = tmp_path / "out"
    source = tmp_path / "sst.txt"  # SST-2 style "<label> <text>" lines
    source.write_text("1 a good film .\n0 a bad film .\nx not a label\n1" + " fine" * 50 + "\n")
    args = ["text", "--task", "classify", "--labelled-lines", "--input", source, "--output", out,
            "--model", "language", *TINY, "--num-labels", "3"]
    assert run_cli(*args) == 0
    rows = check_output(out, schemas.TEXT_CLASSIFY, manifest_ids(out)).to_pylist()
    ok = sorted((r for r in rows if r["error"] is None), key=lambda r: r["position"])
    assert [r["error_type"] for r in rows if r["error"] is not None] == ["bad_label"]
    assert [r["label_index"] for r in ok] == [1, 0, 1]
    assert all(len(r["top_k_ids"]) == 3 and r["top_k_labels"][0] == f"LABEL_{r['top_k_ids'][0]}" for r in ok)
    assert [r["truncated"] for r in ok] == [False, False, True]  # 250 bytes > 128 positions
    metrics = summary(out)["metrics"]
    assert metrics["labelled_items"] == len(ok) and metrics["top5_accuracy"] == 1.0
