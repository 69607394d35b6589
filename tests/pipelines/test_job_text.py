"""End to end: ``perceiver-jobs text`` (fill-mask and classify) on local Ray with the tiny language preset.

The manifest of a text job holds items (byte ranges, files, row-group runs), not documents: the expected
document ids are computed here with ``stable_id(relpath, line index)``, independently of the job.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _job_helpers import (
    TINY,
    check_output,
    check_rerun_adds_nothing,
    manifest_ids,
    part_names,
    read_output,
    run_cli,
    summary,
)

from pipelines.batch import schemas
from pipelines.readers.listing import stable_id

LONG_LINE = "word " * 60 + "[MASK][MASK]" + " tail" * 40  # several 126-byte windows (tiny model: 128)
# relpath -> (line or row index, error_type or None) of every document, in manifest (sorted path) order.
DOCUMENTS = {
    "bytes.txt": [(0, None)],
    "ints.parquet": [(0, "not_a_string"), (1, "not_a_string")],
    "notes.txt": [(0, None), (2, None), (3, None)],  # line 1 is blank
    "records.jsonl": [(0, None), (1, "not_a_string"), (2, "invalid_json"), (3, "missing_field")],
    "rows.parquet": [(0, None), (1, "null")],
    "wide.txt": [(None, "utf16_unsupported")],  # one error row for the whole UTF-16 file
}
EXPECTED_IDS = [stable_id(rel, index) for rel, docs in DOCUMENTS.items() for index, _ in docs]


def write_corpus(docs) -> None:
    docs.mkdir()
    (docs / "notes.txt").write_text(f"The cat sat on the [MASK]at.\n\nNo mask at all.\n{LONG_LINE}\n")
    (docs / "records.jsonl").write_text("\n".join([json.dumps({"text": "Hello [MASK]orld"}), '{"text": 5}',
                                                   "{not json", json.dumps({"body": "x"})]) + "\n")
    pq.write_table(pa.table({"text": ["Parquet [MASK] row", None]}), docs / "rows.parquet")
    pq.write_table(pa.table({"text": pa.array([1, 2], pa.int64())}), docs / "ints.parquet")
    (docs / "bytes.txt").write_bytes(b"caf\xe9 [MASK] latin-1, not UTF-8\n")
    (docs / "wide.txt").write_bytes("UTF-16 [MASK] text\nsecond line\n".encode("utf-16"))


def by_id(out) -> dict[str, dict]:
    return {r["id"]: r for r in read_output(out).to_pylist()}


@pytest.fixture(scope="module")
def fill_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    docs = tmp / "docs"
    write_corpus(docs)
    out = tmp / "out"
    args = ["text", "--task", "fill-mask", "--input", docs, "--output", out, "--model", "language", *TINY]
    assert run_cli(*args) == 0
    return out, args, docs


def test_fill_mask(fill_run):
    out, _, _ = fill_run
    rows = check_output(out, schemas.TEXT_FILL_MASK, set(EXPECTED_IDS)).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(EXPECTED_IDS)
    assert len(manifest_ids(out)) == len(DOCUMENTS)  # one item per (small) file
    expected_errors = {stable_id(rel, i): e for rel, d in DOCUMENTS.items() for i, e in d}
    assert {r["id"]: r["error_type"] for r in rows} == expected_errors
    ok = {r["source"].rsplit("/", 1)[-1] + f":{r['position']}": r for r in rows if r["error"] is None}
    cat = ok["notes.txt:0"]
    assert cat["num_masks"] == 1 and "[MASK]" not in cat["filled_text"]
    assert cat["filled_text"].startswith("The cat sat on the ") and cat["filled_text"].endswith("at.")
    long = ok["notes.txt:3"]  # windowed, not cut: the whole document comes back
    assert long["num_windows"] > 1 and long["num_masks"] == 2 and not long["truncated"]
    assert long["filled_text"].startswith("word " * 60) and long["filled_text"].endswith(" tail" * 40)
    assert len(long["filled_text"].encode()) >= len(LONG_LINE.encode()) - 2 * len("[MASK]") + 2
    assert ok["notes.txt:2"]["filled_text"] == "No mask at all." and ok["notes.txt:2"]["num_masks"] == 0
    assert ok["bytes.txt:0"]["num_masks"] == 0  # invalid UTF-8 is read byte for byte: "[MASK]" stays text
    assert ok["rows.parquet:0"]["num_masks"] == 1
    wide = next(r for r in rows if r["error_type"] == "utf16_unsupported")
    assert wide["position"] is None and wide["filled_text"] is None and "wide.txt" in wide["error"]
    assert summary(out)["metrics"]["masks_filled"] == 1 + 2 + 1 + 1
    assert summary(out)["errors_by_type"] == {"not_a_string": 3, "invalid_json": 1, "missing_field": 1,
                                              "null": 1, "utf16_unsupported": 1}


def test_rerun_adds_nothing(fill_run):
    out, args, _ = fill_run
    check_rerun_adds_nothing(out, args)


def test_byte_ranges_and_resume_give_the_same_rows(fill_run, tmp_path):
    """Files cut into 16-byte ranges (lines span range boundaries), a run killed after some shards and
    resumed: the same documents, ids and outputs as one item per file."""
    reference, args, _ = fill_run
    out = tmp_path / "ranged"
    ranged = [*args[:args.index("--output") + 1], out, *args[args.index("--output") + 2:], "--range-bytes", "16"]
    assert run_cli(*ranged) == 0
    assert len(manifest_ids(out)) > 3 * len(DOCUMENTS)
    for name in sorted(part_names(out))[::3]:
        (out / name).unlink()
    (out / "_SUCCESS").unlink()
    assert run_cli(*ranged) == 0
    check_output(out, schemas.TEXT_FILL_MASK, set(EXPECTED_IDS))
    assert summary(out)["run"]["processed_this_run"] > 0
    got, want = by_id(out), by_id(reference)
    assert got.keys() == want.keys()
    for key, row in want.items():
        assert got[key] == row, key


def test_limit_is_the_first_documents(fill_run, tmp_path):
    docs = fill_run[2]
    out = tmp_path / "limited"
    limited = ["text", "--task", "fill-mask", "--input", docs, "--output", out, "--model", "language", *TINY]
    assert run_cli(*limited, "--limit", "5", "--range-bytes", "8") == 0
    check_output(out, schemas.TEXT_FILL_MASK, set(EXPECTED_IDS[:5]))
    assert sorted(by_id(out)) == sorted(EXPECTED_IDS[:5])
    job = json.loads((out / "_meta" / "job.json").read_text())
    assert job["options"]["limit"] == 5
    assert run_cli(*limited, "--limit", "6", "--range-bytes", "8") == 2  # another limit: refused, not mixed


def byte_ids(text: str) -> np.ndarray:
    """The Perceiver's byte ids, written out here: each UTF-8 byte b is b + 6, "[MASK]" is 3."""
    ids: list[int] = []
    for i, piece in enumerate(text.split("[MASK]")):
        ids += ([MASK_ID] if i else []) + [b + 6 for b in piece.encode("utf-8")]
    return np.array(ids, np.int64)


CLS_ID, SEP_ID, MASK_ID = 4, 5, 3
ROOM = 128 - 2  # the tiny model's positions minus [CLS] and [SEP]


def _direct_top_k(texts: list[str], k: int) -> list[tuple[list[int], list[float]]]:
    """The classifier run in this process, one document at a time: the reference for the job's top-k."""
    from pipelines.batch.model_workers import ModelSpec

    model = ModelSpec("language", random_init=True, tiny=True, head="PerceiverForSequenceClassification",
                      num_labels=3).load()
    results = []
    for text in texts:
        ids = np.concatenate([[CLS_ID], byte_ids(text)[:ROOM], [SEP_ID]])  # long documents: their first bytes
        with torch.inference_mode():
            logits = model(inputs=torch.from_numpy(ids)[None], attention_mask=torch.ones(1, len(ids))).logits
        scores, top = logits.double().softmax(-1).topk(k, dim=-1)
        results.append((top[0].tolist(), scores[0].tolist()))
    return results


def direct_fill(model, text: str) -> str:
    """Every [MASK] replaced by the most likely byte (special ids excluded), each window of ROOM ids run alone
    as [CLS] window [SEP]; the bytes decoded as UTF-8 with replacement characters."""
    ids = byte_ids(text)
    filled = ids.copy()
    for start in range(0, len(ids), ROOM):
        window = ids[start:start + ROOM]
        at = np.flatnonzero(window == MASK_ID)
        if at.size:
            inputs = torch.from_numpy(np.concatenate([[CLS_ID], window, [SEP_ID]]))[None]
            with torch.inference_mode():
                logits = model(inputs=inputs, attention_mask=torch.ones_like(inputs)).logits[0]
            filled[start + at] = logits[at + 1, 6:].argmax(-1).numpy() + 6
    return (filled - 6).astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def test_fill_mask_rows_equal_the_model(fill_run):
    """The filled texts of the job equal the tiny MLM run here window by window (the long line's two masks fall
    in its third window, after two windows without a mask); the text without masks and the Latin-1 line come
    back as they were (the latter with U+FFFD for its invalid byte)."""
    from pipelines.batch.model_workers import ModelSpec

    out, _, _ = fill_run
    model = ModelSpec("language", random_init=True, tiny=True).load()  # seed 0: the job's weights
    rows = {r["source"].rsplit("/", 1)[-1] + f":{r['position']}": r for r in read_output(out).to_pylist()
            if r["error"] is None}
    documents = {"notes.txt:0": "The cat sat on the [MASK]at.", "notes.txt:2": "No mask at all.",
                 "notes.txt:3": LONG_LINE, "records.jsonl:0": "Hello [MASK]orld",
                 "rows.parquet:0": "Parquet [MASK] row"}
    for key, text in documents.items():
        want = direct_fill(model, text)
        assert rows[key]["filled_text"] == want, key
        assert rows[key]["num_windows"] == -(-len(byte_ids(text)) // ROOM)
    assert rows["bytes.txt:0"]["filled_text"] == "caf\ufffd [MASK] latin-1, not UTF-8"


def test_classify_labelled_lines(ray_local, tmp_path):
    out = tmp_path / "out"
    source = tmp_path / "sst.txt"  # SST-2 style "<label> <text>" lines
    texts = ["a good film .", "a bad film .", "fine" + " fine" * 49]
    source.write_text(f"1 {texts[0]}\n0 {texts[1]}\nx not a label\n99999999999 does not fit int32\n2 {texts[2]}\n"
                      "7 a class the 3-class model does not have\n")
    args = ["text", "--task", "classify", "--labelled-lines", "--input", source, "--output", out,
            "--model", "language", *TINY, "--num-labels", "3", "--top-k", "2"]
    assert run_cli(*args) == 0
    expected = [stable_id("sst.txt", i) for i in range(6)]
    rows = check_output(out, schemas.TEXT_CLASSIFY, set(expected)).to_pylist()
    ok = sorted((r for r in rows if r["error"] is None), key=lambda r: r["position"])
    errors = sorted((r for r in rows if r["error"] is not None), key=lambda r: r["position"])
    assert [(r["id"], r["error_type"]) for r in errors] == [(expected[2], "bad_label"), (expected[3], "bad_label")]
    assert "32-bit" in errors[1]["error"]
    assert [r["id"] for r in ok] == [expected[0], expected[1], expected[4], expected[5]]
    assert [r["label_index"] for r in ok] == [1, 0, 2, None]  # label 7: no such class, so unlabelled
    assert "outside the model's 3 classes" in ok[3]["warning"] and ok[0]["warning"] is None
    ok = ok[:3]
    assert [r["truncated"] for r in ok] == [False, False, True]  # 249 bytes > 126 document positions
    direct = _direct_top_k(texts, 2)
    for row, (top_ids, top_scores) in zip(ok, direct):
        assert row["top_k_ids"] == top_ids
        assert row["top_k_labels"] == [f"LABEL_{i}" for i in top_ids]
        # scores near 1/3: noise 3e-8, a truncation from the end instead of the start 4e-6
        np.testing.assert_allclose(row["top_k_scores"], top_scores, rtol=0, atol=2e-7)
    metrics = summary(out)["metrics"]
    assert metrics["labelled_items"] == 3
    expected = np.mean([t[0] == r["label_index"] for (t, _), r in zip(direct, ok)])
    assert metrics["top1_accuracy"] == pytest.approx(expected)
    assert metrics["top5_accuracy"] == pytest.approx(np.mean([r["label_index"] in t for (t, _), r in zip(direct, ok)]))


def test_usage_errors(tmp_path):
    (tmp_path / "t.parquet").parent.mkdir(exist_ok=True)
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
    base = ["text", "--task", "fill-mask", "--model", "language", *TINY]
    assert run_cli(*base, "--input", tmp_path / "t.parquet", "--output", tmp_path / "o1") == 2  # no column 'text'
    assert run_cli(*base, "--input", tmp_path, "--output", tmp_path / "o2", "--per-file", "--labelled-lines") == 2
