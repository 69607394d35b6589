"""pipelines.readers.text_io: line/file/JSONL/Parquet/labelled readers, invalid UTF-8, error rows, stable ids."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.readers.listing import stable_id
from pipelines.readers.text_io import (
    TEXT_ROW_SCHEMA,
    iter_range_lines,
    read_jsonl,
    read_labelled_lines,
    read_parquet_text,
    read_text_file,
    read_texts,
    row_bytes,
    rows_to_table,
)

KEYS = {"id", "source", "index", "text", "raw", "label", "error"}
BAD_UTF8 = b"caf\xe9 au lait"  # Latin-1 bytes, not UTF-8


@pytest.fixture()
def corpus(tmp_path):
    (tmp_path / "doc.txt").write_bytes(
        b"\xef\xbb\xbfFirst line\r\n\n   \nSecond \xe2\x80\x94 line\n" + BAD_UTF8 + b"\nlast without newline"
    )
    return tmp_path


def test_line_mode(corpus):
    rows = list(read_text_file(corpus / "doc.txt"))
    assert all(set(r) == KEYS for r in rows)
    assert [(r["index"], r["text"]) for r in rows] == [
        (0, "First line"), (3, "Second \u2014 line"), (4, None), (5, "last without newline")
    ]  # BOM and "\r" removed, blank lines skipped but counted
    assert rows[2]["raw"] == BAD_UTF8 and rows[2]["error"] is None
    assert row_bytes(rows[2]) == BAD_UTF8 and row_bytes(rows[1]) == "Second \u2014 line".encode()
    assert all(r["source"] == str(corpus / "doc.txt") and r["label"] is None for r in rows)


def test_ids_are_stable_unique_and_relative_to_root(corpus):
    first = [r["id"] for r in read_text_file(corpus / "doc.txt")]
    assert first == [r["id"] for r in read_text_file(corpus / "doc.txt")]
    assert len(set(first)) == len(first)
    assert first[1] == stable_id("doc.txt", 3)
    nested = [r["id"] for r in read_text_file(corpus / "doc.txt", root=corpus.parent)]
    assert nested[1] == stable_id(f"{corpus.name}/doc.txt", 3) != first[1]


def test_file_mode(corpus):
    (row,) = read_text_file(corpus / "doc.txt", mode="file")
    assert row["index"] is None and row["id"] == stable_id("doc.txt")
    assert row["text"] is None and row["raw"].startswith(b"First line\r\n")  # whole file has bad bytes
    (corpus / "ok.txt").write_text("\ufeffhello\nworld\n", encoding="utf-8")
    (ok,) = read_text_file(corpus / "ok.txt", mode="file")
    assert ok["text"] == "hello\nworld\n" and ok["raw"] is None
    with pytest.raises(ValueError):
        list(read_text_file(corpus / "ok.txt", mode="para"))


def test_jsonl_bad_lines_become_error_rows(tmp_path):
    lines = [
        json.dumps({"text": "good", "other": "x"}).encode(),
        b"{not json",
        json.dumps({"body": "no text field"}).encode(),
        json.dumps({"text": 42}).encode(),
        json.dumps(["a", "list"]).encode(),
        b'{"text": "' + BAD_UTF8 + b'"}',
        b"",
        json.dumps({"text": "\u00e9t\u00e9 \U0001f600"}).encode(),
    ]
    (tmp_path / "d.jsonl").write_bytes(b"\n".join(lines))
    rows = list(read_jsonl(tmp_path / "d.jsonl"))
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4, 5, 7]
    errors = [(r["error"] or "").split(":")[0] for r in rows]
    assert errors == ["", "invalid_json", "missing_field", "not_a_string", "not_an_object", "invalid_json", ""]
    assert rows[0]["text"] == "good" and rows[-1]["text"] == "\u00e9t\u00e9 \U0001f600"
    assert all(r["text"] is None and r["raw"] == lines[r["index"]] for r in rows if r["error"])
    assert [r["text"] for r in read_jsonl(tmp_path / "d.jsonl", field="body") if not r["error"]] == ["no text field"]


def test_parquet_text_column(tmp_path):
    table = pa.table({
        "text": pa.array(["a", None, "c"], pa.string()),
        "blob": pa.array([b"ok", BAD_UTF8, None], pa.binary()),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    rows = list(read_parquet_text(tmp_path / "t.parquet", batch_rows=2))
    assert [(r["index"], r["text"], r["error"]) for r in rows] == [
        (0, "a", None), (1, None, "null: value is null"), (2, "c", None)]
    blob = list(read_parquet_text(tmp_path / "t.parquet", column="blob"))
    assert (blob[0]["text"], blob[1]["raw"], blob[2]["error"] is not None) == ("ok", BAD_UTF8, True)
    assert [r["id"] for r in rows] == [stable_id("t.parquet", i) for i in range(3)]
    with pytest.raises(ValueError, match="no column 'body'"):
        list(read_parquet_text(tmp_path / "t.parquet", column="body"))


def test_labelled_lines(tmp_path):
    (tmp_path / "sst.dev").write_bytes(b"1 a stirring , funny and finally transporting re-imagining .\n"
                                       b"0 it 's slow -- very , very slow .\r\n"
                                       b"positive not a label\n\n"
                                       b"5 How far is it from Denver to Aspen ?\n"
                                       b"2147483648 one past int32\n-2147483648 int32 min\n")
    rows = list(read_labelled_lines(tmp_path / "sst.dev"))
    assert [(r["index"], r["label"]) for r in rows] == [(0, 1), (1, 0), (2, None), (4, 5), (5, None),
                                                         (6, -2147483648)]
    assert rows[1]["text"] == "it 's slow -- very , very slow ."
    assert rows[2]["error"].startswith("bad_label") and rows[2]["raw"] == b"positive not a label"
    assert rows[3]["text"] == "How far is it from Denver to Aspen ?"
    assert rows[4]["error"] == "bad_label: label 2147483648 does not fit a 32-bit integer"


def test_non_string_values_are_not_a_string_in_every_format(tmp_path):
    pq.write_table(pa.table({"text": pa.array([7, None], pa.int32())}), tmp_path / "ints.parquet")
    (tmp_path / "ints.jsonl").write_text('{"text": 7}\n{"text": null}\n{"text": [1]}\n')
    parquet = list(read_parquet_text(tmp_path / "ints.parquet"))
    jsonl = list(read_jsonl(tmp_path / "ints.jsonl"))
    assert [r["error"] for r in parquet] == ["not_a_string: column 'text' is int32", "null: value is null"]
    assert [r["error"] for r in jsonl] == ["not_a_string: field 'text' is int", "not_a_string: field 'text' is null",
                                           "not_a_string: field 'text' is list"]
    assert all(r["text"] is None for r in parquet + jsonl)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files(tmp_path, encoding):
    text = "\u00e9t\u00e9\nhiver [MASK]\n"
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}.get(encoding, b"")
    (tmp_path / "w.txt").write_bytes(bom + text.encode(encoding))  # "utf-16"/"utf-32" write their own BOM
    (row,) = read_text_file(tmp_path / "w.txt")  # per line: one error row for the file, never garbage
    reason = "utf32_unsupported" if encoding == "utf-32" else "utf16_unsupported"
    assert row["error"].startswith(f"{reason}: ") and row["text"] is None and row["index"] is None
    assert row["id"] == stable_id("w.txt")
    (whole,) = read_text_file(tmp_path / "w.txt", mode="file")  # whole: decoded
    assert (whole["text"], whole["error"]) == (text, None)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00\xd8")  # a lone surrogate
    (bad,) = read_text_file(tmp_path / "bad.txt", mode="file")
    assert bad["error"].startswith("invalid_utf16: ") and bad["raw"] == b"\xff\xfe\x00\xd8"


def test_iter_range_lines_against_a_byte_by_byte_split():
    import io

    data = b"\xef\xbb\xbfa\r\n\n b\nccc\r\n  \nd"
    starts = [0] + [k + 1 for k, c in enumerate(data) if c == 10]
    expected = {0: b"a", 2: b" b", 3: b"ccc", 5: b"d"}
    for cut in range(1, len(data) + 1):
        got = {}
        for lo, hi in ((0, cut), (cut, len(data))):
            first = sum(1 for s in starts if s < lo)
            for index, line in iter_range_lines(io.BytesIO(data), lo, hi, first, chunk_size=2):
                assert index not in got
                assert starts[index] >= lo and (starts[index] < hi or lo == hi)  # the line starts in the range
                got[index] = line
        assert got == expected, cut


def test_read_texts_dispatch_and_table(tmp_path, corpus):
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    pq.write_table(pa.table({"text": ["p", "q"]}), tmp_path / "t.parquet")
    assert [r["text"] for r in read_texts(tmp_path / "d.jsonl")] == ["x"]
    assert [r["text"] for r in read_texts(tmp_path / "t.parquet")] == ["p", "q"]
    rows = list(read_texts(corpus / "doc.txt")) + list(read_texts(tmp_path / "d.jsonl"))
    table = rows_to_table(rows)
    assert table.schema == TEXT_ROW_SCHEMA and table.num_rows == 5


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_text_file(tmp_path / "nope.txt"))
