"""Ground-truth labels files: CSV with a header, one row per input file, an integer class index column.

Example (``images/imagenet_sample/labels.csv``)::

    file,wnid,imagenet1k_index,name_from_filename
    n01440764_tench.JPEG,n01440764,0,tench

The file column is the first of ``file``, ``filename``, ``path``, ``relpath``; entries match an input by
its path relative to the input root, else by its file name. The label column is ``--label-column``, or
the only column whose values are all integers (``label_index`` wins when several are).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow as pa

FILE_COLUMNS = ("file", "filename", "path", "relpath")


class LabelsFileError(ValueError):
    pass


def read_labels(path: str | Path, label_column: str | None = None) -> dict[str, int]:
    """{file entry: class index} from a labels CSV (see the module docstring)."""
    from pipelines import storage

    try:
        data = storage.resolve(path).read_bytes()
    except (OSError, storage.StorageError) as e:
        raise LabelsFileError(f"labels file not found: {path}") from e
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    if not rows:
        raise LabelsFileError(f"{path}: no rows")
    header = list(rows[0])
    file_col = next((c for c in FILE_COLUMNS if c in header), None)
    if file_col is None:
        raise LabelsFileError(f"{path}: needs one of the columns {', '.join(FILE_COLUMNS)}; found {header}")

    def is_int(value: str | None) -> bool:
        try:
            int(value or "")
            return True
        except ValueError:
            return False

    if label_column is None:
        candidates = [c for c in header if c != file_col and all(is_int(r[c]) for r in rows)]
        if "label_index" in candidates:
            label_column = "label_index"
        elif len(candidates) == 1:
            label_column = candidates[0]
        else:
            raise LabelsFileError(f"{path}: choose the label column with --label-column (integer columns: "
                                  f"{', '.join(candidates) or 'none'})")
    if label_column not in header:
        raise LabelsFileError(f"{path}: no column {label_column!r}; columns are {header}")
    bad = [r[file_col] for r in rows if not is_int(r[label_column])]
    if bad:
        raise LabelsFileError(f"{path}: column {label_column!r} is not an integer for {bad[:3]}")
    return {r[file_col]: int(r[label_column]) for r in rows}


def label_for(labels: dict[str, int] | None, relpath: str) -> int | None:
    """The class index of the input at ``relpath``: by relative path, else by file name; None if absent."""
    if labels is None:
        return None
    return labels.get(relpath, labels.get(relpath.rsplit("/", 1)[-1]))


def attach_labels(manifest: pa.Table, labels: dict[str, int] | None) -> pa.Table:
    """Add ``label_index`` (int32, null when unlabelled) to a manifest with ``relpath``."""
    if labels is None:
        values = [None] * manifest.num_rows
    else:
        values = []
        for rel in manifest.column("relpath").to_pylist():
            values.append(labels.get(rel, labels.get(Path(rel).name)))
    return manifest.append_column(pa.field("label_index", pa.int32()), pa.array(values, pa.int32()))
