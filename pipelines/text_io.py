"""Read text corpora into rows for the byte-level (MLM, classification) jobs.

Every reader yields dicts with the same keys, matching `TEXT_ROW_SCHEMA`:

    id      stable id (`manifest.stable_id`): same file + same root + same index -> same id
    source  absolute path of the file
    index   line number - 1 (.txt lines, labelled lines, JSONL records) or Parquet row number;
            None for a whole file
    text    the decoded text (str), or None when the bytes are not valid UTF-8 or the row is an error
    raw     the original bytes when they are not valid UTF-8 (text is None then), else None
    label   int for labelled ("<label> <text>") lines, else None
    error   None, or "<reason>: <detail>" for a row that could not be read (bad JSON, missing
            field, bad label, null value); such rows keep the offending bytes in `raw`

Invalid UTF-8 is not an error: the Perceiver's byte tokenizer needs bytes, not text, so the row
keeps the exact bytes in `raw` (use `row_bytes(row)` to get the model input for any row). Lines are
split on b"\\n" (a trailing "\\r" is dropped), a leading UTF-8 BOM is removed, and blank lines are
skipped but counted, so indices are stable (`manifest.iter_line_spans` does the splitting).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.manifest import UTF8_BOM, iter_line_spans, normalize_relpath, stable_id

TEXT_ROW_SCHEMA = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("index", pa.int64()), ("text", pa.string()),
     ("raw", pa.binary()), ("label", pa.int64()), ("error", pa.string())]
)

Row = dict[str, Any]


def _row(rel: str, source: str, index: int | None, *, text: str | None = None, raw: bytes | None = None,
         label: int | None = None, error: str | None = None) -> Row:
    return {"id": stable_id(rel, index), "source": source, "index": index, "text": text, "raw": raw,
            "label": label, "error": error}


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


def read_text_file(
    path: str | os.PathLike, *, mode: Literal["line", "file"] = "line", root: str | os.PathLike | None = None,
) -> Iterator[Row]:
    """Plain text: mode "line" -> one row per non-blank line; mode "file" -> one row for the file."""
    rel, source = _names(path, root)
    if mode == "file":
        data = Path(path).read_bytes().removeprefix(UTF8_BOM)
        text, raw = decode_utf8(data)
        yield _row(rel, source, None, text=text, raw=raw)
    elif mode == "line":
        for index, _, line in iter_line_spans(path):
            text, raw = decode_utf8(line)
            yield _row(rel, source, index, text=text, raw=raw)
    else:
        raise ValueError(f"mode must be 'line' or 'file', got {mode!r}")


def read_labelled_lines(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Iterator[Row]:
    """SST/TREC lines "<int label> <text>" -> rows with `label`; other lines -> "bad_label" error rows."""
    rel, source = _names(path, root)
    for index, _, line in iter_line_spans(path):
        head, _, rest = line.strip().partition(b" ")
        try:
            label = int(head)
        except ValueError:
            yield _row(rel, source, index, raw=line, error="bad_label: line does not start with an integer label")
            continue
        text, raw = decode_utf8(rest.strip())
        yield _row(rel, source, index, text=text, raw=raw, label=label)


def read_jsonl(
    path: str | os.PathLike, *, field: str = "text", root: str | os.PathLike | None = None,
) -> Iterator[Row]:
    """JSON Lines: text from `field` of each object. Bad lines become error rows (reasons:
    invalid_json, not_an_object, missing_field, not_a_string), never exceptions."""
    rel, source = _names(path, root)
    for index, _, line in iter_line_spans(path):
        try:
            record = json.loads(line)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            yield _row(rel, source, index, raw=line, error=f"invalid_json: {e}")
            continue
        if not isinstance(record, dict):
            yield _row(rel, source, index, raw=line, error=f"not_an_object: {type(record).__name__}")
        elif field not in record:
            yield _row(rel, source, index, raw=line, error=f"missing_field: {field!r}")
        elif not isinstance(record[field], str):
            kind = type(record[field]).__name__
            yield _row(rel, source, index, raw=line, error=f"not_a_string: field {field!r} is {kind}")
        else:
            yield _row(rel, source, index, text=record[field])


def read_parquet_text(
    path: str | os.PathLike, *, column: str = "text", root: str | os.PathLike | None = None,
    batch_rows: int = 8192,
) -> Iterator[Row]:
    """Parquet: one row per Parquet row from a string or binary `column` (index = row number).

    Binary values are decoded like file bytes (invalid UTF-8 -> `raw`); nulls are "null" error
    rows. A missing column raises ValueError (a configuration error, not a row error).
    """
    rel, source = _names(path, root)
    parquet = pq.ParquetFile(path)
    if column not in parquet.schema_arrow.names:
        raise ValueError(f"{path}: no column {column!r}; columns are {parquet.schema_arrow.names}")
    index = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=[column]):
        for value in batch.column(0).to_pylist():
            if value is None:
                yield _row(rel, source, index, error="null: value is null")
            elif isinstance(value, bytes):
                text, raw = decode_utf8(value)
                yield _row(rel, source, index, text=text, raw=raw)
            else:
                yield _row(rel, source, index, text=str(value))
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
