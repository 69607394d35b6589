"""Read text corpora into rows for the byte-level (MLM, classification) jobs.

Every reader yields dicts with the same keys, matching `TEXT_ROW_SCHEMA`:

    id      stable id (`listing.stable_id`): same file + same root + same index -> same id
    source  absolute path of the file (or its URI)
    index   line number - 1 (.txt lines, labelled lines, JSONL records) or Parquet row number;
            None for a whole file (and for an error that concerns the whole file)
    text    the decoded text (str), or None when the bytes are not valid UTF-8 or the row is an error
    raw     the original bytes when they are not valid UTF-8 (text is None then), else None
    label   int for labelled ("<label> <text>") lines, else None
    error   None, or "<reason>: <detail>" for a row that could not be read (bad JSON, missing
            field, non-string value, bad label, null value, UTF-16 lines); such rows keep the offending
            bytes in `raw` where there are any

Invalid UTF-8 is not an error: the Perceiver's byte tokenizer needs bytes, not text, so the row
keeps the exact bytes in `raw` (use `row_bytes(row)` to get the model input for any row). Lines are
split on b"\\n" (a trailing "\\r" is dropped), a leading UTF-8 BOM is removed, and blank lines are
skipped but counted, so indices are stable (`iter_line_spans` splits whole files,
`iter_range_lines` a byte range of one, with the same result).

One rule for values that are not text, whatever the format: a JSON number or a Parquet int column is a
`not_a_string` error row, never silently stringified. A file that starts with a UTF-16/UTF-32 byte order
mark cannot be split into lines byte-wise: read per line it is one `utf16_unsupported` (or
`utf32_unsupported`) error row for the file; read whole (`mode="file"`) it is decoded.

The parsers (`parse_plain`, `parse_jsonl`, `parse_labelled`, `parse_value`) turn one record's bytes or
value into the row's `text`/`raw`/`label`/`error`; the whole-file readers here and the range reader of
`pipelines.readers.text_items` share them, so a document reads the same whichever way its file is cut.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.readers.listing import normalize_relpath, stable_id

TEXT_ROW_SCHEMA = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("index", pa.int64()), ("text", pa.string()),
     ("raw", pa.binary()), ("label", pa.int64()), ("error", pa.string())]
)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
RANGE_READ_CHUNK = 1 << 20  # bytes per read() when splitting a byte range into lines
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
             (b"\xfe\xff", "utf-16"))

Row = dict[str, Any]
Fields = dict[str, Any]  # the text / raw / label / error part of a row


UTF8_BOM = b"\xef\xbb\xbf"


def iter_line_spans(path: str | os.PathLike, skip_blank: bool = True) -> Iterator[tuple[int, int, bytes]]:
    """(line index from 0, byte offset, line bytes without "\\n"/"\\r\\n") for each line of a file.

    Lines are split on b"\\n" only; a UTF-8 BOM at the start of the file is skipped; blank lines
    (whitespace only) are skipped when `skip_blank` but still count for the index, so indices are
    line numbers - 1. Every line reader goes through this function, so ids agree between readers.
    """
    offset = 0
    with open(path, "rb") as f:
        for index, line in enumerate(f):
            start, size = offset, len(line)
            offset += size
            if index == 0 and line.startswith(UTF8_BOM):
                line, start = line[len(UTF8_BOM):], start + len(UTF8_BOM)
            line = line.rstrip(b"\n").removesuffix(b"\r")
            if skip_blank and not line.strip():
                continue
            yield index, start, line


def make_row(row_id: str, source: str, index: int | None, fields: Fields) -> Row:
    return {"id": row_id, "source": source, "index": index, "text": fields.get("text"), "raw": fields.get("raw"),
            "label": fields.get("label"), "error": fields.get("error")}


def _row(rel: str, source: str, index: int | None, fields: Fields) -> Row:
    return make_row(stable_id(rel, index), source, index, fields)


def _names(path: str | os.PathLike, root: str | os.PathLike | None) -> tuple[str, str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text input does not exist: {path}")
    return normalize_relpath(path, path.parent if root is None else root), os.path.abspath(path)


def decode_utf8(data: bytes) -> tuple[str | None, bytes | None]:
    """(text, None) for valid UTF-8, else (None, data)."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, data


def row_bytes(row: Row) -> bytes:
    """The UTF-8 bytes a byte-level model should see for a row (b"" for error rows without raw)."""
    if row["text"] is not None:
        return row["text"].encode("utf-8")
    return row["raw"] or b""


def wide_encoding(head: bytes) -> str | None:
    """"utf-16" / "utf-32" when ``head`` (a file's first bytes) starts with that byte order mark, else None."""
    return next((name for bom, name in WIDE_BOMS if head.startswith(bom)), None)


def wide_error(encoding: str, source: str) -> Fields:
    """The error of a UTF-16/32 file read line by line (its b"\\n" bytes are not line ends)."""
    reason = "utf16_unsupported" if encoding == "utf-16" else "utf32_unsupported"
    return {"error": f"{reason}: {source} is {encoding.upper()} (byte order mark); lines can only be split in "
                     f"UTF-8: convert it (iconv -f {encoding.upper()} -t UTF-8) or read it whole with --per-file"}


# ----------------------------------------------------------------------------- parsers (one record each)


def parse_plain(line: bytes) -> Fields:
    text, raw = decode_utf8(line)
    return {"text": text, "raw": raw}


def parse_file(data: bytes) -> Fields:
    """A whole file as one document: UTF-8 (BOM dropped), or UTF-16/32 with a byte order mark, decoded."""
    encoding = wide_encoding(data[:4])
    if encoding is None:
        return parse_plain(data.removeprefix(UTF8_BOM))
    try:
        return {"text": data.decode(encoding)}  # the codec reads and drops the mark
    except UnicodeDecodeError as e:
        reason = "invalid_utf16" if encoding == "utf-16" else "invalid_utf32"
        return {"raw": data, "error": f"{reason}: {e}"}


def parse_labelled(line: bytes) -> Fields:
    """SST/TREC "<int label> <text>"; a line without an integer label fitting int32 is a bad_label error."""
    head, _, rest = line.strip().partition(b" ")
    try:
        label = int(head)
    except ValueError:
        return {"raw": line, "error": "bad_label: line does not start with an integer label"}
    if not INT32_MIN <= label <= INT32_MAX:
        return {"raw": line, "error": f"bad_label: label {label} does not fit a 32-bit integer"}
    text, raw = decode_utf8(rest.strip())
    return {"text": text, "raw": raw, "label": label}


def parse_jsonl(line: bytes, field: str) -> Fields:
    """Text from `field` of a JSON object; errors: invalid_json, not_an_object, missing_field, not_a_string."""
    try:
        record = json.loads(line)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        return {"raw": line, "error": f"invalid_json: {e}"}
    if not isinstance(record, dict):
        return {"raw": line, "error": f"not_an_object: {type(record).__name__}"}
    if field not in record:
        return {"raw": line, "error": f"missing_field: {field!r}"}
    if not isinstance(record[field], str):
        kind = "null" if record[field] is None else type(record[field]).__name__
        return {"raw": line, "error": f"not_a_string: field {field!r} is {kind}"}
    return {"text": record[field]}


def parse_value(value: Any, column: str, arrow_type: pa.DataType) -> Fields:
    """One Parquet value: strings are text, binary is decoded like file bytes, null is a "null" error, and
    anything else (ints, floats, lists, ...) is not_a_string, as a JSON number is."""
    if value is None:
        return {"error": "null: value is null"}
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, bytes):
        return parse_plain(value)
    return {"error": f"not_a_string: column {column!r} is {arrow_type}"}


LINE_PARSERS: dict[str, Callable[..., Fields]] = {"lines": parse_plain, "labelled": parse_labelled,
                                                 "jsonl": parse_jsonl}


# ----------------------------------------------------------------------------- byte ranges


def iter_range_lines(f: BinaryIO, start: int, end: int, first_line: int,
                     chunk_size: int = RANGE_READ_CHUNK) -> Iterator[tuple[int, bytes]]:
    """(line index, line bytes) of the non-blank lines whose first byte lies in [start, end) of the
    seekable binary file ``f`` (standard split semantics: a range > 0 skips the line it starts inside,
    the last line is read past ``end`` to its newline). ``first_line`` is the index of the first line
    starting in the range (the planner counted the newlines before it). The UTF-8 BOM of line 0 and
    a trailing "\\r" are dropped; blank lines count for the index but are not yielded, as in
    ``iter_line_spans``."""
    if start >= end:
        return
    f.seek(max(start - 1, 0))
    pos, buf, i = max(start - 1, 0), b"", 0
    if start > 0:  # the line holding byte start-1 belongs to an earlier range: skip through its newline
        while True:
            buf = f.read(chunk_size)
            if not buf:
                return
            cut = buf.find(b"\n")
            if cut >= 0:
                pos, i = pos + cut + 1, cut + 1
                break
            pos += len(buf)
    index = first_line
    while pos < end:
        pieces, eof = [], False
        while True:  # an index into the chunk, never a slice of its rest: lines cost O(their length)
            cut = buf.find(b"\n", i)
            if cut >= 0:
                pieces.append(buf[i:cut])
                i = cut + 1
                break
            pieces.append(buf[i:])
            buf, i = f.read(chunk_size), 0
            if not buf:
                eof = True
                break
        line = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if eof and not line:
            return  # no line starts at the end of the file
        line_start, pos = pos, pos + len(line) + 1
        if line_start == 0 and line.startswith(UTF8_BOM):
            line = line[len(UTF8_BOM):]
        line = line.removesuffix(b"\r")
        if line and not line.isspace():  # blank = ASCII whitespace only, as bytes.strip() sees it
            yield index, line
        if eof:
            return
        index += 1


# ----------------------------------------------------------------------------- whole-file readers


def _wide(path: str | os.PathLike) -> str | None:
    with open(path, "rb") as f:
        return wide_encoding(f.read(4))


def _line_rows(path: str | os.PathLike, root: str | os.PathLike | None, parse: Callable[[bytes], Fields]
               ) -> Iterator[Row]:
    rel, source = _names(path, root)
    encoding = _wide(path)
    if encoding is not None:
        yield _row(rel, source, None, wide_error(encoding, source))
        return
    for index, _, line in iter_line_spans(path):
        yield _row(rel, source, index, parse(line))


def read_text_file(
    path: str | os.PathLike, *, mode: Literal["line", "file"] = "line", root: str | os.PathLike | None = None,
) -> Iterator[Row]:
    """Plain text: mode "line" -> one row per non-blank line; mode "file" -> one row for the file."""
    if mode == "file":
        rel, source = _names(path, root)
        yield _row(rel, source, None, parse_file(Path(path).read_bytes()))
    elif mode == "line":
        yield from _line_rows(path, root, parse_plain)
    else:
        raise ValueError(f"mode must be 'line' or 'file', got {mode!r}")


def read_labelled_lines(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Iterator[Row]:
    """SST/TREC lines "<int label> <text>" -> rows with `label`; other lines -> "bad_label" error rows."""
    return _line_rows(path, root, parse_labelled)


def read_jsonl(
    path: str | os.PathLike, *, field: str = "text", root: str | os.PathLike | None = None,
) -> Iterator[Row]:
    """JSON Lines: text from `field` of each object. Bad lines become error rows (reasons:
    invalid_json, not_an_object, missing_field, not_a_string), never exceptions."""
    return _line_rows(path, root, lambda line: parse_jsonl(line, field))


def read_parquet_text(
    path: str | os.PathLike, *, column: str = "text", root: str | os.PathLike | None = None,
    batch_rows: int = 8192,
) -> Iterator[Row]:
    """Parquet: one row per Parquet row from `column` (index = row number), values read by `parse_value`.

    A missing column raises ValueError (a configuration error, not a row error).
    """
    rel, source = _names(path, root)
    parquet = pq.ParquetFile(path)
    if column not in parquet.schema_arrow.names:
        raise ValueError(f"{path}: no column {column!r}; columns are {parquet.schema_arrow.names}")
    arrow_type = parquet.schema_arrow.field(column).type
    index = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[column]):
        for value in batch.column(0).to_pylist():
            yield _row(rel, source, index, parse_value(value, column, arrow_type))
            index += 1


def read_texts(
    path: str | os.PathLike, *, mode: Literal["line", "file"] = "line", field: str = "text",
    column: str = "text", root: str | os.PathLike | None = None,
) -> Iterator[Row]:
    """Dispatch on the file extension: .jsonl -> `read_jsonl(field)`, .parquet ->
    `read_parquet_text(column)`, anything else -> `read_text_file(mode)`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path, field=field, root=root)
    if suffix == ".parquet":
        return read_parquet_text(path, column=column, root=root)
    return read_text_file(path, mode=mode, root=root)


def rows_to_table(rows: list[Row]) -> pa.Table:
    """Rows from any reader -> an Arrow table with TEXT_ROW_SCHEMA."""
    return pa.Table.from_pylist(rows, schema=TEXT_ROW_SCHEMA)
