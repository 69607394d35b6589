"""Text work items: the driver plans byte ranges and row-group runs, the workers find the documents in them.

A text corpus is never read into the driver's memory. The manifest of a text job holds *items*, not
documents (``ITEM_SCHEMA``):

    kind "lines" / "jsonl" / "labelled"   bytes [byte_start, byte_end) of a .txt/.jsonl file: the documents
                                          are the non-blank lines whose first byte lies in the range
                                          (standard split semantics); ``first_line`` is the index of the
                                          first line starting in it
    kind "file"                           a whole file, one document (``--per-file``)
    kind "parquet"                        rows [row_start, row_end) of a Parquet file (whole row groups,
                                          offsets from the footer)

Files up to ``RANGE_BYTES`` are one item and are not opened by the planner (``first_line`` = 0). Larger
files are cut every ``RANGE_BYTES`` bytes, and the planner streams through them in ``SCAN_CHUNK`` pieces
counting newlines to fill ``first_line``: its memory is one chunk, whatever the file holds. Row-group
runs are cut at about ``RANGE_BYTES`` of uncompressed data. ``limit`` (the first N documents) makes the
planner count documents in order, up to the N-th, and end the last item there.

Document ids do not depend on the cutting: ``listing.file_id(relpath, root_index, root_count, index)``
(``stable_id(relpath, index)`` with one ``--input``), the index being the line number - 1 or the Parquet
row; ``file_id(relpath, ...)`` for a whole file, and for an error that concerns a whole file (a UTF-16
file read per line, see ``pipelines.readers.text_io``). Item ids: the file's id when the file is one item, else
``stable_id(<file id>, <byte or row start>)``. An item that cannot be read at all gives one ``read_error``
row under the item's id.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.readers import listing
from pipelines.readers.listing import TEXT_EXTENSIONS, stable_id
from pipelines.readers.text_io import (
    LINE_PARSERS,
    UTF8_BOM,
    Row,
    iter_range_lines,
    make_row,
    parse_file,
    parse_jsonl,
    parse_value,
    wide_encoding,
    wide_error,
)

RANGE_BYTES = 64 << 20  # bytes of a .txt/.jsonl file per item (and uncompressed Parquet bytes per run)
SCAN_CHUNK = 1 << 20  # bytes per read when the planner counts newlines
PARQUET_BATCH_ROWS = 8192

ITEM_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False), pa.field("path", pa.string()), pa.field("relpath", pa.string()),
    pa.field("root_index", pa.int32()), pa.field("root_count", pa.int32()), pa.field("kind", pa.string()),
    pa.field("byte_start", pa.int64()), pa.field("byte_end", pa.int64()), pa.field("first_line", pa.int64()),
    pa.field("row_start", pa.int64()), pa.field("row_end", pa.int64()),
    pa.field("error", pa.string()),  # set when the planner found the file unreadable: one error row
])


class TextInputError(ValueError):
    """A configuration problem found while planning (a Parquet file without the text column)."""


@dataclass(frozen=True)
class ReadOptions:
    """How documents are found in files (shipped to the workers with the read function)."""

    per_file: bool = False  # .txt: one document per file
    labelled: bool = False  # .txt: "<label> <text>" lines
    field: str = "text"  # .jsonl
    column: str = "text"  # .parquet

    def kind(self, relpath: str) -> str:
        suffix = posixpath.splitext(relpath)[1].lower()
        if suffix == ".parquet":
            return "parquet"
        if suffix == ".jsonl":
            return "jsonl"
        return "labelled" if self.labelled else "file" if self.per_file else "lines"


@dataclass
class _Planned:
    items: list[dict] = field(default_factory=list)
    docs: int = 0  # documents in the items (counted only when a limit asks for it)


@dataclass
class _Scan:
    ranges: list[tuple[int, int]]  # (byte_start, first_line) per range
    end: int  # byte_end of the last range
    docs: int  # non-blank lines seen (with a limit)


def _item(found: listing.Found, kind: str, item_id: str, **values) -> dict:
    return {"id": item_id, "path": listing.display(found.uri), "relpath": found.relpath,
            "root_index": found.root_index, "root_count": found.root_count, "kind": kind, "byte_start": None,
            "byte_end": None, "first_line": None, "row_start": None, "row_end": None, "error": None, **values}


def _error_item(found: listing.Found, kind: str, error: str) -> _Planned:
    return _Planned([_item(found, kind, found.id, error=error)], 1)


def plan_items(inputs: Sequence[str], options: ReadOptions, *, exclude: str | None = None, limit: int | None = None,
               range_bytes: int | None = None) -> Iterator[dict]:
    """The items (``ITEM_SCHEMA`` rows) of the text files under ``inputs``, streamed in listing order.

    ``limit``: only the first ``limit`` documents. Raises ``TextInputError`` for a Parquet file without
    ``options.column``, and what ``listing.iter_files`` raises for missing inputs."""
    range_bytes = range_bytes or RANGE_BYTES  # read at call time: tests shrink it
    left = limit
    for found in listing.iter_files(inputs, TEXT_EXTENSIONS, exclude=exclude):
        kind = options.kind(found.relpath)
        if kind == "parquet":
            planned = _parquet_items(found, options.column, range_bytes, left)
        elif kind == "file":
            size = max(found.entry.size, 0)
            planned = _Planned([_item(found, kind, found.id, byte_start=0, byte_end=size)], 1)
        else:
            planned = _line_items(found, kind, range_bytes, left)
        yield from planned.items
        if left is not None:
            left -= planned.docs
            if left <= 0:
                return


def _line_items(found: listing.Found, kind: str, range_bytes: int, limit: int | None) -> _Planned:
    size = found.entry.size
    if size == 0:
        return _Planned()
    if limit is None and size <= range_bytes:  # one item; the worker finds the lines (and a UTF-16 mark)
        return _Planned([_item(found, kind, found.id, byte_start=0, byte_end=max(size, 1), first_line=0)])
    try:
        with found.entry.location.open_input() as f:
            if wide_encoding(f.read(4)) is not None:  # one error row, written by the worker
                return _Planned([_item(found, kind, found.id, byte_start=0, byte_end=size, first_line=0)], 1)
            f.seek(0)
            scan = _scan_lines(f, size, range_bytes, limit)
    except OSError as e:
        return _error_item(found, kind, f"read_error: {listing.display(found.uri)}: {e}")
    items = [_item(found, kind, found.id if len(scan.ranges) == 1 else stable_id(found.id, start),
                   byte_start=start, byte_end=scan.ranges[k + 1][0] if k + 1 < len(scan.ranges) else scan.end,
                   first_line=first)
             for k, (start, first) in enumerate(scan.ranges) if start < scan.end]
    return _Planned(items, scan.docs)


def _scan_lines(f, size: int, range_bytes: int, limit: int | None) -> _Scan:
    """Stream ``f`` once: the line index at every cut (a multiple of ``range_bytes``), and with a limit
    the start of the ``limit``-th non-blank line, where the last range then ends."""
    cuts = iter(range(range_bytes, size, range_bytes))
    cut = next(cuts, None)
    ranges = [(0, 0)]
    pos = newlines = docs = 0
    content, line_start = False, 0
    while True:
        chunk = f.read(SCAN_CHUNK)
        if not chunk:
            break
        n = len(chunk)
        while cut is not None and cut - 1 < pos + n:  # lines starting before the cut: 1 + newlines before cut-1
            ranges.append((cut, 1 + newlines + chunk.count(b"\n", 0, cut - 1 - pos)))
            cut = next(cuts, None)
        if limit is not None:
            i = len(UTF8_BOM) if pos == 0 and chunk.startswith(UTF8_BOM) else 0
            while i <= n:
                j = chunk.find(b"\n", i)
                stop = n if j < 0 else j
                if not content and i < stop and not chunk[i:stop].isspace():
                    content, docs = True, docs + 1
                    if docs == limit:
                        return _Scan([r for r in ranges if r[0] <= line_start], line_start + 1, docs)
                if j < 0:
                    break
                content, line_start, i = False, pos + j + 1, j + 1
        newlines += chunk.count(b"\n")
        pos += n
    return _Scan(ranges, pos, docs)


def _parquet_items(found: listing.Found, column: str, range_bytes: int, limit: int | None) -> _Planned:
    try:
        with found.entry.location.open_input() as f:
            parquet = pq.ParquetFile(f)
            names, meta = parquet.schema_arrow.names, parquet.metadata
    except (OSError, pa.ArrowException) as e:
        return _error_item(found, "parquet", f"unreadable_parquet: {listing.display(found.uri)}: {e}")
    if column not in names:
        raise TextInputError(f"{listing.display(found.uri)}: no column {column!r}; columns are {names} "
                             "(choose it with --column)")
    runs: list[tuple[int, int]] = []  # (row_start, row_end), whole row groups of about range_bytes each
    start = rows = run_bytes = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        rows += group.num_rows
        run_bytes += group.total_byte_size
        if run_bytes >= range_bytes or g == meta.num_row_groups - 1:
            if rows > start:
                runs.append((start, rows))
            start, run_bytes = rows, 0
    if limit is not None:
        runs = [(a, min(b, limit)) for a, b in runs if a < limit]
    items = [_item(found, "parquet", found.id if len(runs) == 1 else stable_id(found.id, a), row_start=a, row_end=b)
             for a, b in runs]
    return _Planned(items, sum(b - a for a, b in runs))


# ----------------------------------------------------------------------------- reading (workers)


def _doc_id(item: dict, index: int | None) -> str:
    return listing.file_id(item["relpath"], item["root_index"], item["root_count"], index)


def read_item(item: dict, options: ReadOptions) -> Iterator[Row]:
    """The documents of one item as ``text_io`` rows (ids as in the module docstring), error rows for
    records that cannot be read, one ``read_error`` row when the file itself cannot be read."""
    source = item["path"]
    if item["error"] is not None:
        yield make_row(item["id"], source, None, {"error": item["error"]})
        return
    try:
        yield from _read(item, options)
    except (OSError, pa.ArrowException) as e:
        yield make_row(item["id"], source, None, {"error": f"read_error: {source}: {type(e).__name__}: {e}"})


def _read(item: dict, options: ReadOptions) -> Iterator[Row]:
    source, kind = item["path"], item["kind"]
    with storage.resolve(source).open_input() as f:
        if kind == "file":
            yield make_row(_doc_id(item, None), source, None, parse_file(f.read()))
        elif kind == "parquet":
            yield from _parquet_rows(f, item, options.column)
        else:
            if item["byte_start"] == 0:
                encoding = wide_encoding(f.read(4))
                if encoding is not None:
                    yield make_row(_doc_id(item, None), source, None, wide_error(encoding, source))
                    return
            parse = LINE_PARSERS[kind] if kind != "jsonl" else lambda line: parse_jsonl(line, options.field)
            for index, line in iter_range_lines(f, item["byte_start"], item["byte_end"], item["first_line"]):
                yield make_row(_doc_id(item, index), source, index, parse(line))


def _parquet_rows(f, item: dict, column: str) -> Iterator[Row]:
    source, start, end = item["path"], item["row_start"], item["row_end"]
    parquet = pq.ParquetFile(f)
    if column not in parquet.schema_arrow.names:  # the file changed since the plan
        yield make_row(item["id"], source, None, {"error": f"missing_column: {source} has no column {column!r}"})
        return
    arrow_type = parquet.schema_arrow.field(column).type
    offsets = [0]
    for g in range(parquet.metadata.num_row_groups):
        offsets.append(offsets[-1] + parquet.metadata.row_group(g).num_rows)
    groups = [g for g in range(len(offsets) - 1) if offsets[g] < end and offsets[g + 1] > start]
    if not groups:
        return
    index = offsets[groups[0]]
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=[column]):
        values = batch.column(0)
        lo, hi = max(start - index, 0), min(end - index, len(values))
        for k, value in enumerate(values.slice(lo, max(hi - lo, 0)).to_pylist(), start=index + lo):
            yield make_row(_doc_id(item, k), source, k, parse_value(value, column, arrow_type))
        index += len(values)
        if index >= end:
            return
