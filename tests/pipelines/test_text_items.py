"""pipelines.readers.text_items without Ray: range planning and reading give the documents of whole-file reading.

The reference is ``pipelines.readers.text_io``'s whole-file readers (lines split by ``text_io.iter_line_spans``, a
separate splitter); ids are also checked against ``stable_id`` computed here from the relpath.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import storage
from pipelines.readers import text_io, text_items
from pipelines.readers.listing import stable_id
from pipelines.readers.text_items import ReadOptions, TextInputError, plan_items, read_item

# BOM, CRLF, blank and whitespace-only lines, invalid UTF-8, multi-byte characters, a long line, no final newline.
TRICKY = (b"\xef\xbb\xbfFirst line\r\n\n   \r\n\tSecond \xe2\x80\x94 line\n" + b"caf\xe9 au lait\n"
          + b"long " * 40 + b"\n\n\n\xf0\x9f\x98\x80 emoji\r\nlast without newline")


DEFAULT = ReadOptions()


def _read_all(items: list[dict], options: ReadOptions = DEFAULT) -> list[dict]:
    return [row for item in items for row in read_item(item, options)]


def _plan(root, options: ReadOptions = DEFAULT, **kwargs) -> list[dict]:
    return list(plan_items([str(root)], options, **kwargs))


@pytest.fixture()
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "doc.txt").write_bytes(TRICKY)
    (root / "ends.txt").write_bytes(b"one\ntwo\n\n")
    return root


@pytest.mark.parametrize("range_bytes", [1, 2, 3, 4, 5, 7, 16, 64, len(TRICKY) - 1, len(TRICKY), 10_000])
def test_cut_ranges_give_the_whole_file_documents(corpus, monkeypatch, range_bytes):
    monkeypatch.setattr(text_items, "RANGE_BYTES", range_bytes)
    items = _plan(corpus)
    expected = [r for name in ("doc.txt", "ends.txt") for r in text_io.read_text_file(corpus / name, root=corpus)]
    assert _read_all(items) == expected
    assert [r["index"] for r in expected[:3]] == [0, 3, 4] and expected[0]["text"] == "First line"
    if range_bytes < len(TRICKY):
        assert len([i for i in items if i["relpath"] == "doc.txt"]) == -(-len(TRICKY) // range_bytes)


def test_ranges_tile_the_file_and_first_line_counts_lines_before(corpus, monkeypatch):
    monkeypatch.setattr(text_items, "RANGE_BYTES", 9)
    items = [i for i in _plan(corpus) if i["relpath"] == "doc.txt"]
    assert [i["byte_start"] for i in items] == list(range(0, len(TRICKY), 9))
    assert [i["byte_end"] for i in items] == [*range(9, len(TRICKY), 9), len(TRICKY)]
    line_starts = [0] + [k + 1 for k, b in enumerate(TRICKY) if b == ord("\n")]
    for item in items:  # index of the first line starting at or after byte_start
        assert item["first_line"] == sum(1 for s in line_starts if s < item["byte_start"])
    ids = [i["id"] for i in items]
    assert len(set(ids)) == len(ids) and ids == [i["id"] for i in _plan(corpus) if i["relpath"] == "doc.txt"]


def test_small_file_is_one_item_and_document_ids_are_stable_ids(corpus):
    items = _plan(corpus)
    assert [(i["relpath"], i["kind"], i["byte_start"], i["byte_end"], i["first_line"]) for i in items] == [
        ("doc.txt", "lines", 0, len(TRICKY), 0), ("ends.txt", "lines", 0, 9, 0)]
    assert items[1]["id"] == stable_id("ends.txt")
    rows = _read_all(items)
    assert [r["id"] for r in rows if r["source"].endswith("ends.txt")] == [stable_id("ends.txt", 0),
                                                                           stable_id("ends.txt", 1)]


@pytest.mark.parametrize("range_bytes", [3, 11, 1000])
def test_jsonl_and_labelled_ranges(tmp_path, monkeypatch, range_bytes):
    monkeypatch.setattr(text_items, "RANGE_BYTES", range_bytes)
    lines = [json.dumps({"text": "good [MASK]"}), "{not json", json.dumps({"text": 42}), "",
             json.dumps({"body": "x"}), json.dumps({"text": "\u00e9t\u00e9"})]
    (tmp_path / "d.jsonl").write_text("\r\n".join(lines) + "\n")
    (tmp_path / "sst.txt").write_bytes(b"1 a good film .\r\n0 bad\n\nx not a label\n99999999999 too big\n-1 neg\n")
    options = ReadOptions(labelled=True)
    rows = _read_all(_plan(tmp_path, options), options)
    expected = [*text_io.read_jsonl(tmp_path / "d.jsonl", root=tmp_path),
                *text_io.read_labelled_lines(tmp_path / "sst.txt", root=tmp_path)]
    assert rows == expected
    reasons = [(r["error"] or "").split(":")[0] for r in rows]
    assert reasons == ["", "invalid_json", "not_a_string", "missing_field", "", "", "", "bad_label", "bad_label", ""]
    assert [r["label"] for r in rows[-5:]] == [1, 0, None, None, -1]


def test_limit_counts_documents_in_order_and_truncates_the_last_item(corpus, tmp_path, monkeypatch):
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(10)]}), corpus / "rows.parquet", row_group_size=3)
    every = [*text_io.read_text_file(corpus / "doc.txt", root=corpus),
             *text_io.read_text_file(corpus / "ends.txt", root=corpus),
             *text_io.read_parquet_text(corpus / "rows.parquet", root=corpus)]
    for range_bytes in (5, 10_000):
        monkeypatch.setattr(text_items, "RANGE_BYTES", range_bytes)
        for limit in (1, 2, 6, 7, 8, 9, 12, 100):
            items = _plan(corpus, limit=limit)
            assert _read_all(items) == every[:limit], (range_bytes, limit)
    items = _plan(corpus, limit=9)  # doc.txt has 6 documents, ends.txt 2, then one Parquet row
    assert items[-1]["kind"] == "parquet" and (items[-1]["row_start"], items[-1]["row_end"]) == (0, 1)
    (last_doc,) = [i for i in _plan(corpus, limit=2) if i["relpath"] == "doc.txt"]
    assert last_doc["byte_end"] == TRICKY.index(b"\tSecond") + 1  # ends just past the 2nd document's first byte


def test_parquet_row_group_runs(tmp_path, monkeypatch):
    values = ["a", None, "c", "d", b"\xff raw", "f", "g"]
    pq.write_table(pa.table({"text": pa.array([v if not isinstance(v, bytes) else v.decode("latin-1")
                                               for v in values]),
                             "blob": pa.array([v.encode() if isinstance(v, str) else v for v in values]),
                             "n": pa.array(range(7), pa.int64())}), tmp_path / "t.parquet", row_group_size=2)
    monkeypatch.setattr(text_items, "RANGE_BYTES", 1)  # one item per row group
    for column in ("text", "blob", "n"):
        options = ReadOptions(column=column)
        items = _plan(tmp_path, options)
        assert [(i["row_start"], i["row_end"]) for i in items] == [(0, 2), (2, 4), (4, 6), (6, 7)]
        rows = _read_all(items, options)
        assert rows == list(text_io.read_parquet_text(tmp_path / "t.parquet", column=column, root=tmp_path))
        assert [r["id"] for r in rows] == [stable_id("t.parquet", k) for k in range(7)]
    assert rows[0]["error"] == "not_a_string: column 'n' is int64"  # never stringified
    assert len({i["id"] for i in items}) == 4
    with pytest.raises(TextInputError, match="no column 'body'"):
        _plan(tmp_path, ReadOptions(column="body"))


def test_several_roots_get_distinct_ids(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "same.txt").write_text("x\ny\n")
    items = list(plan_items([str(tmp_path / "a"), str(tmp_path / "b")], ReadOptions()))
    ids = [r["id"] for r in _read_all(items)]
    assert ids == [stable_id(f"{k}:same.txt", i) for k in (0, 1) for i in (0, 1)]


def test_utf16_file_is_one_error_row_per_line_mode_and_decoded_per_file(tmp_path, monkeypatch):
    text = "premi\u00e8re ligne\nsecond line\n"
    (tmp_path / "le.txt").write_bytes(text.encode("utf-16"))  # BOM FF FE
    (tmp_path / "be.txt").write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    for range_bytes in (8, 10_000):  # a large UTF-16 file is one item too: it cannot be cut at newlines
        monkeypatch.setattr(text_items, "RANGE_BYTES", range_bytes)
        items = _plan(tmp_path)
        assert len(items) == 2
        rows = _read_all(items)
        assert [(r["id"], r["index"], r["text"], r["error"].split(":")[0]) for r in rows] == [
            (stable_id("be.txt"), None, None, "utf16_unsupported"), (stable_id("le.txt"), None, None,
                                                                     "utf16_unsupported")]
        assert rows == [*text_io.read_text_file(tmp_path / "be.txt", root=tmp_path),
                        *text_io.read_text_file(tmp_path / "le.txt", root=tmp_path)]
    options = ReadOptions(per_file=True)
    rows = _read_all(_plan(tmp_path, options), options)
    assert [(r["id"], r["text"], r["error"]) for r in rows] == [(stable_id("be.txt"), text, None),
                                                                (stable_id("le.txt"), text, None)]


def test_per_file_mode(corpus):
    options = ReadOptions(per_file=True)
    items = _plan(corpus, options)
    assert [i["kind"] for i in items] == ["file", "file"]
    assert _read_all(items, options) == [*text_io.read_text_file(corpus / "doc.txt", mode="file", root=corpus),
                                         *text_io.read_text_file(corpus / "ends.txt", mode="file", root=corpus)]
    assert _plan(corpus, options, limit=1) == items[:1]


class _Recorder:
    """Wraps the files the planner opens: which paths, and the size of every read."""

    def __init__(self, monkeypatch):
        self.opened: list[str] = []
        self.reads: list[int] = []
        original = storage.Location.open_input
        recorder = self

        class Wrapped:
            def __init__(self, f):
                self.f = f

            def read(self, n=-1):
                recorder.reads.append(n)
                return self.f.read(n)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        def open_input(loc):
            recorder.opened.append(loc.name)
            return Wrapped(original(loc))

        monkeypatch.setattr(storage.Location, "open_input", open_input)


def test_planner_reads_in_bounded_chunks_and_leaves_small_files_alone(tmp_path, monkeypatch):
    (tmp_path / "big.txt").write_bytes(b"y" * 50_000 + b"\n" + b"z" * 30_000 + b"\n")  # lines longer than a chunk
    (tmp_path / "small.txt").write_bytes(b"tiny\n")
    monkeypatch.setattr(text_items, "RANGE_BYTES", 20_000)
    monkeypatch.setattr(text_items, "SCAN_CHUNK", 4096)
    recorder = _Recorder(monkeypatch)
    items = _plan(tmp_path)
    assert recorder.opened == ["big.txt"]
    assert recorder.reads and all(0 < n <= 4096 for n in recorder.reads)
    assert [i["first_line"] for i in items] == [0, 1, 1, 2, 2, 0]  # cuts at 20k, 40k, 60k, 80k bytes
    monkeypatch.undo()
    rows = _read_all(items)
    assert [(r["index"], len(r["text"])) for r in rows] == [(0, 50_000), (1, 30_000), (0, 4)]


def test_a_file_gone_before_reading_is_one_read_error_row(corpus):
    items = _plan(corpus)
    (corpus / "ends.txt").unlink()
    rows = _read_all(items)
    assert rows[-1]["id"] == items[-1]["id"] == stable_id("ends.txt")
    assert rows[-1]["error"].startswith("read_error: ") and rows[-1]["index"] is None


def test_tokenize_items(corpus, monkeypatch):
    from pipelines.batch import schemas
    from pipelines.stages.text import TOKEN_SCHEMA, tokenize_items

    (corpus / "m.jsonl").write_text('{"text": "a [MASK]"}\n{"text": 1}\n')
    monkeypatch.setattr(text_items, "RANGE_BYTES", 8)
    items = pa.Table.from_pylist(_plan(corpus), schema=text_items.ITEM_SCHEMA)
    tables = list(tokenize_items(items, ReadOptions(), rows_per_table=3))
    assert all(t.schema == TOKEN_SCHEMA and t.num_rows <= 3 for t in tables)
    out = pa.concat_tables(tables).to_pylist()
    expected = [*text_io.read_text_file(corpus / "doc.txt", root=corpus),
                *text_io.read_text_file(corpus / "ends.txt", root=corpus),
                *text_io.read_jsonl(corpus / "m.jsonl", root=corpus)]
    assert [r["id"] for r in out] == [r["id"] for r in expected] == [r[schemas.UNIT] for r in out]
    for got, want in zip(out, expected):
        if want["error"] is None:
            data = text_io.row_bytes(want)
            assert got["num_bytes"] == len(data) and got["position"] == want["index"]
            if b"[MASK]" not in data:
                assert got["ids"] == (np.frombuffer(data, np.uint8).astype(np.int32) + 6).tolist()
        else:
            assert got["ids"] is None and got["error"] == want["error"]
            assert got["error_type"] == want["error"].split(":")[0]
    masked = next(r for r, w in zip(out, expected) if w["text"] == "a [MASK]")
    assert masked["ids"] == [ord("a") + 6, ord(" ") + 6, 3]  # "[MASK]" is one special id


def test_token_table_keeps_a_prefix_for_the_classifier():
    from pipelines.stages.text import token_table

    def row(text=None, raw=None):
        return {"id": "x", "source": "s", "index": 0, "text": text, "raw": raw, "label": None, "error": None}

    long_text = "[MASK]" * 10 + "\u00e9" * 1000
    table = token_table([row(long_text), row(raw=b"\xff" * 50), row("ab")], max_ids=12)
    ids = table.column("ids").to_pylist()
    assert ids[0] == [3] * 10 + [0xC3 + 6, 0xA9 + 6]  # the specials, then the first UTF-8 bytes of "é"
    assert ids[1] == [0xFF + 6] * 12 and ids[2] == [ord("a") + 6, ord("b") + 6]
    assert table.column("num_bytes").to_pylist() == [len(long_text.encode()), 50, 2]  # the whole documents
    full = token_table([row(long_text)]).column("ids").to_pylist()[0]
    assert len(full) == 10 + 2000 and full[:12] == ids[0]
