"""Ray Data sources for training: file discovery and readers that every task builds on.

Datasets here are lazy Ray Datasets; Ray Train streams them into the workers (``get_dataset_shard``), so no
worker ever holds the whole corpus and the driver never reads it: the driver only lists file names. Per-batch
transforms are plain functions of numpy batches (tested without Ray) applied with ``map_batches``.

Inputs may be local paths or URIs (``s3://bucket/corpus/``, ``s3://bucket/corpus/*.parquet``), through
``pipelines.storage``: a file, a folder (every file with a known suffix below it, sorted; names starting with
``.`` or ``_`` below the folder are skipped, like Spark's and Arrow's ``_SUCCESS`` / ``_meta/``), or a glob
pattern (``*``, ``?``, ``[...]`` within one path component, ``**`` for any number of folders). Ray Data
reads the files in its own tasks with ``filesystem=`` the store's pyarrow filesystem.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import io
import itertools
import json
import posixpath
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from pipelines import storage
from pipelines.storage import Location

TEXT_SUFFIXES = (".txt", ".text", ".jsonl", ".json", ".parquet")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
GLOB_CHARS = "*?["


def suffix_of(path: str) -> str:
    name = posixpath.basename(path)
    return name[name.rfind("."):].lower() if "." in name else ""


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _match(parts: list[str], pattern: list[str]) -> bool:
    """Path components against glob components (``**`` = any number of components). As in a shell, a
    component starting with ``.`` or ``_`` only matches a pattern component starting with the same character
    (``*`` never picks up ``_meta/`` or ``_SUCCESS``, ``**`` never descends into them)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return _match(parts, pattern[1:]) or (bool(parts) and _visible(parts[0]) and _match(parts[1:], pattern))
    if not parts or not fnmatch.fnmatchcase(parts[0], pattern[0]):
        return False
    return (_visible(parts[0]) or parts[0][0] == pattern[0][0]) and _match(parts[1:], pattern[1:])


def _visible(relative: str) -> bool:
    return not any(p.startswith((".", "_")) for p in _parts(relative))


def _glob(pattern: Location) -> list[Location]:
    """The files matching a pattern location (the wildcards may sit in any component after the bucket)."""
    parts = pattern.path.split("/")
    first = next(i for i, p in enumerate(parts) if any(c in p for c in GLOB_CHARS))
    root_path = "/".join(parts[:first]) or "/"
    tail = "/".join(parts[first:])
    root = Location(pattern.fs, root_path, pattern.uri[:len(pattern.uri) - len(tail)].rstrip("/") or root_path)
    wanted = _parts(tail)
    recursive = len(wanted) > 1 or "**" in wanted
    prefix = root.path.rstrip("/") + "/"
    return [e.location for e in storage.walk_files(root, recursive=recursive)
            if _match(_parts(e.location.path[len(prefix):]), wanted)]


def find_files(paths: Iterable[str], suffixes: Sequence[str]) -> list[Location]:
    """Files named directly, files matching glob patterns, and every file with one of ``suffixes`` under
    named folders (sorted per folder). Raises FileNotFoundError for a missing path or when nothing is found."""
    paths = list(paths)
    out: list[Location] = []
    for raw in paths:
        loc = storage.resolve(raw)
        if any(c in loc.path for c in GLOB_CHARS) and not loc.exists():
            found = _glob(loc)
            if not found:
                raise FileNotFoundError(f"no files match {raw}")
            out.extend(found)
        elif loc.is_dir():
            prefix = loc.path.rstrip("/")
            out.extend(e.location for e in storage.walk_files(loc)
                       if suffix_of(e.location.path) in suffixes and _visible(e.location.path[len(prefix):]))
        elif loc.is_file():
            out.append(loc)
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    if not out:
        raise FileNotFoundError(f"no {'/'.join(suffixes)} files in {paths}")
    return out


def _kind(f: Location) -> str:
    suffix = suffix_of(f.path)
    return "parquet" if suffix == ".parquet" else "json" if suffix in (".jsonl", ".json") else "text"


def _by_format(files: Sequence[Location]) -> dict[tuple[str, int], list[Location]]:
    """Files grouped by reader and filesystem: one Ray Data read per group."""
    groups: dict[tuple[str, int], list[Location]] = {}
    for f in files:
        groups.setdefault((_kind(f), id(f.fs)), []).append(f)
    return groups


def _read(kind: str, files: list[Location], **kwargs):
    """One Ray Data read of same-format files on one filesystem (the workers open them through it)."""
    import ray.data

    paths = [f.path for f in files]
    fs = None if files[0].is_local else files[0].fs
    if kind == "text":
        return ray.data.read_text(paths, filesystem=fs)
    if kind == "json":
        return ray.data.read_json(paths, lines=True, filesystem=fs)
    return ray.data.read_parquet(paths, filesystem=fs, **kwargs)


def _union(parts: list):
    if not parts:
        raise ValueError("no input files")
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def read_text_documents(paths: Iterable[str], text_column: str = "text"):
    """A Dataset with one ``text`` column: lines of .txt files, ``text_column`` of .jsonl / .parquet rows."""
    parts = []
    for (kind, _), files in _by_format(find_files(paths, TEXT_SUFFIXES)).items():
        if kind == "text":
            parts.append(_read(kind, files))
            continue
        ds = _read(kind, files, columns=[text_column]) if kind == "parquet" else \
            _read(kind, files).select_columns([text_column])
        parts.append(ds.rename_columns({text_column: "text"}) if text_column != "text" else ds)
    return _union(parts)


# ----------------------------------------------------------------------------- bounded samples (driver side)
# The label set and the baselines need a look at the data before step 1. A Ray Data ``limit`` bounds the rows
# it returns, not what it reads: its read tasks cover several files each (more per task as the corpus grows)
# and several run at once. These helpers instead stream the first ``n`` rows in file order (the same rows
# every run, so a label set is reproducible) and stop reading there: at most the files before the n-th row
# and part of the file holding it.

SAMPLE_CHUNK = 1 << 20


def _lines(f: Location) -> Iterator[str]:
    """Non-empty lines of a UTF-8 text file, streamed (what ``ray.data.read_text`` yields)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    with f.fs.open_input_stream(f.path) as raw:
        while True:
            chunk = raw.read(SAMPLE_CHUNK)
            pending += decoder.decode(chunk, final=not chunk)
            *complete, pending = pending.split("\n")
            yield from (line for line in complete if line)
            if not chunk:
                break
    if pending:
        yield pending


def _records(f: Location, columns: list[str]) -> Iterator[dict[str, Any]]:
    """Rows of a .jsonl / .parquet file with ``columns``, streamed (parquet: one record batch at a time)."""
    if _kind(f) == "json":
        for line in _lines(f):
            if line.strip():
                rec = json.loads(line)
                yield {c: rec.get(c) for c in columns}
        return
    import pyarrow.parquet as pq

    with f.open_input() as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=1024, columns=columns):
            yield from batch.to_pylist()


def head_documents(paths: Iterable[str], text_column: str, n: int) -> np.ndarray:
    """The first ``n`` documents of ``read_text_documents(paths)``, in file order (object array)."""
    def rows() -> Iterator[str]:
        for f in find_files(paths, TEXT_SUFFIXES):
            yield from _lines(f) if _kind(f) == "text" else (str(r[text_column]) for r in _records(f, [text_column]))

    return np.array(list(itertools.islice(rows(), n)), dtype=object)


def head_labelled(paths: Iterable[str], n: int, text_column: str = "text", label_column: str = "label"
                  ) -> dict[str, np.ndarray]:
    """The first ``n`` rows of ``read_labelled_text(paths)``, in file order: ``text`` and ``label`` columns."""
    def rows() -> Iterator[tuple[str, str]]:
        for f in find_files(paths, TEXT_SUFFIXES):
            if _kind(f) == "text":
                for line in _lines(f):
                    parts = line.strip().split(maxsplit=1)
                    if parts:
                        yield parts[0], parts[1] if len(parts) > 1 else ""
            else:
                for r in _records(f, [text_column, label_column]):
                    yield str(r[label_column]), r[text_column]

    head = list(itertools.islice(rows(), n))
    return {"label": np.array([label for label, _ in head], dtype=object),
            "text": np.array([text for _, text in head], dtype=object)}


def split_labelled_lines(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``<label> <text>`` lines (the SST / TREC files) -> label and text columns; blank lines are dropped."""
    labels, texts = [], []
    for line in batch["text"]:
        parts = str(line).strip().split(maxsplit=1)
        if parts:
            labels.append(parts[0])
            texts.append(parts[1] if len(parts) > 1 else "")
    return {"label": np.array(labels, dtype=object), "text": np.array(texts, dtype=object)}


def read_labelled_text(paths: Iterable[str], text_column: str = "text", label_column: str = "label"):
    """A Dataset with ``text`` and ``label`` (str) columns: ``<label> <text>`` .txt lines, or .jsonl / .parquet
    rows with ``text_column`` and ``label_column``."""
    parts = []
    for (kind, _), files in _by_format(find_files(paths, TEXT_SUFFIXES)).items():
        if kind == "text":
            parts.append(_read(kind, files).map_batches(split_labelled_lines, batch_format="numpy"))
            continue
        ds = _read(kind, files, columns=[text_column, label_column]) if kind == "parquet" else \
            _read(kind, files).select_columns([text_column, label_column])
        parts.append(ds.map_batches(_rename_text_label, fn_kwargs={"text": text_column, "label": label_column},
                                    batch_format="numpy"))
    return _union(parts)


def _rename_text_label(batch: dict[str, np.ndarray], text: str, label: str) -> dict[str, np.ndarray]:
    return {"text": batch[text].astype(object), "label": np.array([str(v) for v in batch[label]], dtype=object)}


def read_label_names(path: str | None) -> list[str] | None:
    """Class names, one per line, in id order (e.g. Kinetics-400's label_map_k400.txt); local or a URI."""
    if path is None:
        return None
    names = [line.strip() for line in storage.resolve(path).read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{path}: no label names")
    return names


class LabelWarning(UserWarning):
    """Rows whose label the model has no class for: they are skipped, never given another class's id."""


def label_lookup(id2label: dict[int, str], ids_too: bool = False) -> dict[str, int]:
    """Label string -> class id for a model's ``id2label``: its names, and with ``ids_too`` (labels given by
    ``--label-names``, or a model whose names are transformers' ``LABEL_<i>`` defaults) also every id
    ``0 <= i < num_labels`` written as an integer. A name wins when both match."""
    mapping = {str(i): i for i in id2label} if ids_too else {}
    mapping.update({name: i for i, name in id2label.items()})
    return mapping


def has_default_names(id2label: dict[int, str]) -> bool:
    """True for transformers' placeholder names (``LABEL_0``, ``LABEL_1``, ...): the ids are the labels."""
    return all(name == f"LABEL_{i}" for i, name in id2label.items())


def encode_labels(values: Iterable[Any], lookup: dict[str, int], where: str = "") -> np.ndarray:
    """Class ids (int64, one per value) with -1 where ``lookup`` lacks the label (a name the model has no class
    for, an id outside its range): callers skip those rows, and a ``LabelWarning`` names them, so that no row
    is trained on, or counted as, another class."""
    keys = [str(v) for v in values]
    ids = np.array([lookup.get(k, -1) for k in keys], dtype=np.int64)
    if (ids < 0).any():
        warn_unknown_labels([k for k, i in zip(keys, ids) if i < 0], lookup, where)
    return ids


def warn_unknown_labels(unknown: Sequence[str], lookup: dict[str, int], where: str = "") -> None:
    classes = len(set(lookup.values()))
    shown = ", ".join(repr(v) for v in sorted(set(unknown))[:5])
    warnings.warn(f"{len(unknown)} {where + ' ' if where else ''}row(s) skipped: label(s) {shown} not among the "
                  f"model's {classes} classes (names, or ids 0..{classes - 1} with --label-names); give every "
                  f"class with --label-names FILE", LabelWarning, stacklevel=3)


def label_vocabulary(values: Iterable[Any], names: list[str] | None = None) -> dict[str, int]:
    """Map label strings to ids. With ``names`` (id order), a label is a name or an integer id; without, the
    distinct labels are sorted (numerically when all are integers) and numbered from 0."""
    values = sorted({str(v) for v in values})
    if names is not None:
        mapping = {name: i for i, name in enumerate(names)}
        for v in values:
            if v not in mapping:
                if v.lstrip("-").isdigit() and 0 <= int(v) < len(names):
                    mapping[v] = int(v)
                else:
                    raise ValueError(f"label {v!r} is neither a name in the label list nor an id < {len(names)}")
        return mapping
    if all(v.lstrip("-").isdigit() for v in values):
        values = sorted(values, key=int)
    return {v: i for i, v in enumerate(values)}


def _entry(folder: Location, name: str) -> str:
    """A labels.csv entry as an absolute path or URI: itself when absolute or a URI, else beside the csv."""
    if storage.scheme_of(name) is not None or (folder.is_local and name.startswith("/")):
        return storage.resolve(name).uri
    return folder.join(name).uri


def image_label_rows(paths: Iterable[str], label_column: str = "label") -> list[dict[str, str]]:
    """(path, label) rows for image classification (paths: absolute local paths or URIs).

    A folder with a ``labels.csv`` (first column the file name, label from ``label_column`` or else the second
    column) or class sub-folders (``root/<class>/<image>``); a .csv file may also be named directly. Only the
    csv and the file names are read here; the images are read by Ray Data tasks.
    """
    paths = list(paths)
    rows: list[dict[str, str]] = []
    for raw in paths:
        root = storage.resolve(raw)
        csv_loc = root if root.path.endswith(".csv") else root.join("labels.csv")
        if csv_loc.is_file():
            folder = Location(root.fs, posixpath.dirname(csv_loc.path), csv_loc.uri.rsplit("/", 1)[0]) \
                if csv_loc is root else root
            reader = csv.DictReader(io.StringIO(csv_loc.read_text(), newline=""))
            fields = reader.fieldnames or []
            if len(fields) < 2:
                raise ValueError(f"{csv_loc.uri}: needs a file column and a label column")
            column = label_column if label_column in fields else fields[1]
            for rec in reader:
                rows.append({"path": _entry(folder, rec[fields[0]]), "label": str(rec[column])})
        elif root.is_dir():
            prefix = root.path.rstrip("/") + "/"
            for entry in storage.walk_files(root):
                parts = _parts(entry.location.path[len(prefix):])
                if len(parts) >= 2 and suffix_of(entry.location.path) in IMAGE_SUFFIXES and _visible(
                        "/".join(parts)):
                    rows.append({"path": entry.uri, "label": parts[0]})
        else:
            raise FileNotFoundError(f"{raw}: expected a folder with labels.csv or class sub-folders")
    if not rows:
        raise FileNotFoundError(f"no labelled images in {paths}")
    return rows
