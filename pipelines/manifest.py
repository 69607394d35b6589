"""Manifests: one Arrow row per input with a stable id, built before any Ray job runs.

A job reads the manifest (`ray.data.read_parquet`), keys every output row by `id`, and reconciles
`manifest ids == ok ids + error ids` at the end. The same input always gets the same id:

    id = sha1("<relpath>")[:24]            whole files (videos, images, text files, flow pairs)
    id = sha1("<relpath>#<index>")[:24]    lines / JSONL records / Parquet rows (index from 0)

`relpath` is the input's path relative to the root it was found under (the folder given, the
non-wildcard prefix of a glob, a single file's parent folder, or an explicit `root=`), with "/"
separators and Unicode NFC, so ids do not depend on where the corpus is mounted. Ids are 96 bits,
collision-free in practice; the builders still refuse duplicates.

Inputs: a path or a list of paths; each a folder (searched recursively by extension), a glob
(`"data/**/*.mp4"`) or a file. A missing path raises FileNotFoundError; nothing found raises
ValueError("no inputs found under ..."). Hidden files and folders (".name") are skipped.
"""

from __future__ import annotations

import glob
import hashlib
import os
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.flow_data import discover_flow_pairs
from pipelines.video_decode import VideoDecodeError, probe_video

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp", ".ogv"}
)
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
TEXT_EXTENSIONS = frozenset({".txt", ".text", ".jsonl", ".parquet"})
UTF8_BOM = b"\xef\xbb\xbf"

Inputs = str | os.PathLike | Sequence[str | os.PathLike]

FILE_SCHEMA = pa.schema(
    [("id", pa.string()), ("path", pa.string()), ("relpath", pa.string()), ("size_bytes", pa.int64())]
)
VIDEO_PROBE_FIELDS = [
    ("duration_s", pa.float64()), ("fps", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
    ("num_frames", pa.int64()), ("num_video_streams", pa.int32()), ("num_audio_streams", pa.int32()),
    ("has_audio", pa.bool_()), ("probe_error", pa.string()),
]
VIDEO_SCHEMA_PROBED = pa.schema(list(FILE_SCHEMA) + [pa.field(n, t) for n, t in VIDEO_PROBE_FIELDS])
TEXT_SCHEMA = pa.schema(
    [("id", pa.string()), ("path", pa.string()), ("relpath", pa.string()), ("index", pa.int64()),
     ("byte_offset", pa.int64()), ("byte_length", pa.int64())]
)
PARQUET_ROW_SCHEMA = pa.schema(
    [("id", pa.string()), ("path", pa.string()), ("relpath", pa.string()), ("row_index", pa.int64())]
)
FLOW_SCHEMA = pa.schema(
    [("id", pa.string()), ("pair_id", pa.string()), ("frame1_path", pa.string()), ("frame2_path", pa.string()),
     ("flow_path", pa.string()), ("flow_format", pa.string()), ("layout", pa.string())]
)


# ----------------------------------------------------------------------------- ids and paths


def normalize_relpath(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """`path` relative to `root`, "/"-separated, NFC-normalised (the string ids are made from)."""
    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()
    return unicodedata.normalize("NFC", rel)


def stable_id(relpath: str, index: int | None = None) -> str:
    """24 hex chars of sha1(relpath) or sha1(f"{relpath}#{index}")."""
    key = relpath if index is None else f"{relpath}#{index}"
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def iter_line_spans(path: str | os.PathLike, skip_blank: bool = True) -> Iterator[tuple[int, int, bytes]]:
    """(line index from 0, byte offset, line bytes without "\\n"/"\\r\\n") for each line of a file.

    Lines are split on b"\\n" only; a UTF-8 BOM at the start of the file is skipped; blank lines
    (whitespace only) are skipped when `skip_blank` but still count for the index, so indices are
    line numbers - 1. `text_io` reads lines through this function, so manifest ids and reader ids agree.
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


def _has_magic(s: str) -> bool:
    return glob.has_magic(s)


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    prefix = parts[: next(i for i, p in enumerate(parts) if _has_magic(p))]
    return Path(*prefix) if prefix else Path(".")


def _visible(rel: Path) -> bool:
    return not any(part.startswith(".") for part in rel.parts)


def find_files(
    inputs: Inputs, extensions: frozenset[str] | None, recursive: bool = True
) -> list[tuple[Path, Path]]:
    """(file, root it was found under) for every input file, de-duplicated, in input order.

    `extensions` filters files found in folders and by globs (None = keep all); a file named
    explicitly is always kept.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("no inputs given")
    found: list[tuple[Path, Path]] = []

    def keep(p: Path) -> bool:
        return p.is_file() and (extensions is None or p.suffix.lower() in extensions)

    for item in items:
        text = os.fspath(item)
        if _has_magic(text):
            root = _glob_root(text)
            if not root.is_dir():
                raise FileNotFoundError(f"input folder does not exist: {root} (from pattern {text!r})")
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            found += [(m, root) for m in matches if keep(m) and _visible(m.relative_to(root))]
        elif os.path.isdir(text):
            root = Path(text)
            walk = root.rglob("*") if recursive else root.glob("*")
            found += [(p, root) for p in sorted(walk) if keep(p) and _visible(p.relative_to(root))]
        elif os.path.isfile(text):
            found.append((Path(text), Path(text).parent))
        else:
            raise FileNotFoundError(f"input path does not exist: {text}")
    unique: dict[str, tuple[Path, Path]] = {}
    for path, root in found:
        unique.setdefault(os.path.abspath(path), (path, root))
    if not unique:
        shown = ", ".join(os.fspath(i) for i in items)
        exts = "any" if extensions is None else " ".join(sorted(extensions))
        raise ValueError(f"no inputs found under {shown} (extensions: {exts})")
    return list(unique.values())


def _rel(path: Path, found_root: Path, root: str | os.PathLike | None) -> str:
    return normalize_relpath(path, found_root if root is None else root)


def _check_unique(table: pa.Table) -> pa.Table:
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        rel = table.column("relpath").to_pylist()[ids.index(dup)] if "relpath" in table.column_names else dup
        raise ValueError(f"two inputs share the id {dup} ({rel!r}); pass a common root= to tell them apart")
    return table


# ----------------------------------------------------------------------------- builders


def file_manifest(
    inputs: Inputs, extensions: frozenset[str] | None, *, recursive: bool = True,
    root: str | os.PathLike | None = None,
) -> pa.Table:
    """One row per file: id, path (absolute), relpath, size_bytes; sorted by relpath."""
    rows = []
    for path, found_root in find_files(inputs, extensions, recursive):
        rel = _rel(path, found_root, root)
        rows.append({"id": stable_id(rel), "path": os.path.abspath(path), "relpath": rel,
                     "size_bytes": path.stat().st_size})
    rows.sort(key=lambda r: r["relpath"])
    return _check_unique(pa.Table.from_pylist(rows, schema=FILE_SCHEMA))


def video_manifest(
    inputs: Inputs, *, extensions: frozenset[str] = VIDEO_EXTENSIONS, recursive: bool = True,
    root: str | os.PathLike | None = None, probe: bool = False,
) -> pa.Table:
    """Video files -> FILE_SCHEMA rows; with probe=True also container metadata (`probe_video`),
    with `probe_error` set (and metadata null) for files that cannot be opened."""
    table = file_manifest(inputs, extensions, recursive=recursive, root=root)
    if not probe:
        return table
    columns: dict[str, list] = {name: [] for name, _ in VIDEO_PROBE_FIELDS}
    for path in table.column("path").to_pylist():
        try:
            info, error = probe_video(path), None
        except VideoDecodeError as e:
            info, error = {}, str(e)
        for name, _ in VIDEO_PROBE_FIELDS[:-1]:
            columns[name].append(info.get(name))
        columns["probe_error"].append(error)
    for name, dtype in VIDEO_PROBE_FIELDS:
        table = table.append_column(pa.field(name, dtype), pa.array(columns[name], dtype))
    return table


def image_manifest(
    inputs: Inputs, *, extensions: frozenset[str] = IMAGE_EXTENSIONS, recursive: bool = True,
    root: str | os.PathLike | None = None,
) -> pa.Table:
    """Image files -> FILE_SCHEMA rows."""
    return file_manifest(inputs, extensions, recursive=recursive, root=root)


def _binary_column(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if pa.types.is_struct(column.type) and column.type.get_field_index("bytes") >= 0:
        column = pa.chunked_array([chunk.field("bytes") for chunk in column.chunks], column.type.field("bytes").type)
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise ValueError(f"column {name!r} must hold image bytes (binary or struct<bytes>), got {column.type}")
    return column.cast(pa.large_binary())


def image_manifest_from_parquet(
    inputs: Inputs, *, column: str = "image", id_column: str | None = None, include_bytes: bool = True,
    root: str | os.PathLike | None = None,
) -> pa.Table:
    """Parquet files with an image-bytes column -> one row per Parquet row.

    Columns: id, path (the Parquet file), relpath, row_index [, image (large_binary) when
    include_bytes]. `column` may be binary or a Hugging Face `struct<bytes, path>` image column.
    id = str(row[id_column]) when given, else stable_id(relpath, row_index).
    """
    tables = []
    for path, found_root in find_files(inputs, frozenset({".parquet"})):
        rel = _rel(path, found_root, root)
        wanted = [column] + ([id_column] if id_column else [])
        schema_names = pq.read_schema(path).names
        missing = [c for c in wanted if c not in schema_names]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r}; columns are {schema_names}")
        data = pq.read_table(path, columns=wanted if include_bytes else [c for c in wanted if c != column])
        n = pq.ParquetFile(path).metadata.num_rows
        ids = ([str(v) for v in data.column(id_column).to_pylist()] if id_column
               else [stable_id(rel, i) for i in range(n)])
        part = pa.table({"id": ids, "path": [os.path.abspath(path)] * n, "relpath": [rel] * n,
                         "row_index": pa.array(range(n), pa.int64())}, schema=PARQUET_ROW_SCHEMA)
        if include_bytes:
            part = part.append_column("image", _binary_column(data.column(column), column))
        tables.append(part)
    return _check_unique(pa.concat_tables(tables))


def text_manifest(
    inputs: Inputs, *, mode: Literal["line", "file"] = "line", extensions: frozenset[str] = TEXT_EXTENSIONS,
    recursive: bool = True, root: str | os.PathLike | None = None,
) -> pa.Table:
    """Text inputs -> TEXT_SCHEMA rows (id, path, relpath, index, byte_offset, byte_length).

    .txt/.text: mode "line" gives one row per non-blank line (index = line number - 1, byte span
    of the line without its newline); mode "file" one row per file (index null). .jsonl: one row
    per non-blank line (record). .parquet: one row per Parquet row (index = row number, no span).
    Ids match the `id` of the rows `text_io` reads from the same files with the same root.
    """
    if mode not in ("line", "file"):
        raise ValueError(f"mode must be 'line' or 'file', got {mode!r}")
    rows = []
    for path, found_root in find_files(inputs, extensions, recursive):
        rel, abspath = _rel(path, found_root, root), os.path.abspath(path)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            n = pq.ParquetFile(path).metadata.num_rows
            rows += [{"id": stable_id(rel, i), "path": abspath, "relpath": rel, "index": i,
                      "byte_offset": None, "byte_length": None} for i in range(n)]
        elif mode == "file" and suffix != ".jsonl":
            rows.append({"id": stable_id(rel), "path": abspath, "relpath": rel, "index": None,
                         "byte_offset": 0, "byte_length": path.stat().st_size})
        else:
            rows += [{"id": stable_id(rel, i), "path": abspath, "relpath": rel, "index": i,
                      "byte_offset": start, "byte_length": len(line)}
                     for i, start, line in iter_line_spans(path)]
    if not rows:
        raise ValueError(f"no inputs found under {inputs}: the text files hold no non-blank line")
    return _check_unique(pa.Table.from_pylist(rows, schema=TEXT_SCHEMA))


def flow_manifest(root: str | os.PathLike) -> pa.Table:
    """Frame pairs under `root` (`flow_data.discover_flow_pairs`) -> FLOW_SCHEMA rows,
    id = stable_id(pair_id) (pair_id is frame 1's relpath without extension)."""
    pairs = discover_flow_pairs(root)
    if not pairs:
        raise ValueError(f"no inputs found under {root}: no frame pairs in any known layout")
    rows = [{"id": stable_id(p.pair_id), "pair_id": p.pair_id, "frame1_path": os.path.abspath(p.frame1_path),
             "frame2_path": os.path.abspath(p.frame2_path),
             "flow_path": None if p.flow_path is None else os.path.abspath(p.flow_path),
             "flow_format": p.flow_format, "layout": p.layout} for p in pairs]
    return _check_unique(pa.Table.from_pylist(rows, schema=FLOW_SCHEMA))


def write_manifest(table: pa.Table, path: str | os.PathLike) -> Path:
    """Write a manifest as one zstd Parquet file (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path
