"""Ray Data sources for training: file discovery and readers that every task builds on.

Datasets here are lazy Ray Datasets; Ray Train streams them into the workers (``get_dataset_shard``), so no
worker ever holds the whole corpus. Per-batch transforms are plain functions of numpy batches (tested
without Ray) applied with ``map_batches``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TEXT_SUFFIXES = (".txt", ".text", ".jsonl", ".json", ".parquet")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


def expand_paths(paths: Iterable[str], suffixes: Sequence[str]) -> list[str]:
    """Files named directly, plus every file with one of ``suffixes`` under named folders (sorted)."""
    out: list[str] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in suffixes)
        elif path.is_file():
            out.append(str(path))
        else:
            raise FileNotFoundError(f"no such file or folder: {raw}")
    if not out:
        raise FileNotFoundError(f"no {'/'.join(suffixes)} files in {list(paths)}")
    return out


def _by_format(files: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"text": [], "json": [], "parquet": []}
    for f in files:
        suffix = Path(f).suffix.lower()
        groups["parquet" if suffix == ".parquet" else "json" if suffix in (".jsonl", ".json") else "text"].append(f)
    return groups


def _union(parts: list):
    if not parts:
        raise ValueError("no input files")
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def read_text_documents(paths: Iterable[str], text_column: str = "text"):
    """A Dataset with one ``text`` column: lines of .txt files, ``text_column`` of .jsonl / .parquet rows."""
    import ray.data

    groups = _by_format(expand_paths(paths, TEXT_SUFFIXES))
    parts = []
    if groups["text"]:
        parts.append(ray.data.read_text(groups["text"]))
    if groups["json"]:
        parts.append(ray.data.read_json(groups["json"], lines=True).select_columns([text_column])
                     .rename_columns({text_column: "text"}) if text_column != "text"
                     else ray.data.read_json(groups["json"], lines=True).select_columns(["text"]))
    if groups["parquet"]:
        ds = ray.data.read_parquet(groups["parquet"], columns=[text_column])
        parts.append(ds.rename_columns({text_column: "text"}) if text_column != "text" else ds)
    return _union(parts)


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
    import ray.data

    groups = _by_format(expand_paths(paths, TEXT_SUFFIXES))
    parts = []
    if groups["text"]:
        parts.append(ray.data.read_text(groups["text"]).map_batches(split_labelled_lines, batch_format="numpy"))
    tables = ([ray.data.read_json(groups["json"], lines=True)] if groups["json"] else []) + \
             ([ray.data.read_parquet(groups["parquet"])] if groups["parquet"] else [])
    for ds in tables:
        ds = ds.select_columns([text_column, label_column])
        parts.append(ds.map_batches(_rename_text_label, fn_kwargs={"text": text_column, "label": label_column},
                                    batch_format="numpy"))
    return _union(parts)


def _rename_text_label(batch: dict[str, np.ndarray], text: str, label: str) -> dict[str, np.ndarray]:
    return {"text": batch[text].astype(object), "label": np.array([str(v) for v in batch[label]], dtype=object)}


def read_label_names(path: str | None) -> list[str] | None:
    """Class names, one per line, in id order (e.g. Kinetics-400's label_map_k400.txt)."""
    if path is None:
        return None
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{path}: no label names")
    return names


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


def image_label_rows(paths: Iterable[str], label_column: str = "label") -> list[dict[str, str]]:
    """(path, label) rows for image classification.

    A folder with a ``labels.csv`` (first column the file name, label from ``label_column`` or else the second
    column) or class sub-folders (``root/<class>/<image>``); a .csv file may also be named directly.
    """
    rows: list[dict[str, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        csv_path = path if path.suffix == ".csv" else path / "labels.csv"
        if csv_path.is_file():
            with open(csv_path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                fields = reader.fieldnames or []
                if len(fields) < 2:
                    raise ValueError(f"{csv_path}: needs a file column and a label column")
                column = label_column if label_column in fields else fields[1]
                for rec in reader:
                    rows.append({"path": str(csv_path.parent / rec[fields[0]]), "label": str(rec[column])})
        elif path.is_dir():
            for class_dir in sorted(p for p in path.iterdir() if p.is_dir()):
                for f in sorted(class_dir.rglob("*")):
                    if f.suffix.lower() in IMAGE_SUFFIXES:
                        rows.append({"path": str(f), "label": class_dir.name})
        else:
            raise FileNotFoundError(f"{raw}: expected a folder with labels.csv or class sub-folders")
    if not rows:
        raise FileNotFoundError(f"no labelled images in {list(paths)}")
    return rows
