"""Ground-truth labels files: CSV with a header, one row per input file, a class index or class name column.

Example (``images/imagenet_sample/labels.csv``)::

    file,wnid,imagenet1k_index,name_from_filename
    n01440764_tench.JPEG,n01440764,0,tench

The file column is the first of ``file``, ``filename``, ``path``, ``relpath``; entries match an input by
its path relative to the input root, else by its file name. The label column is ``--label-column``, else
the only column whose values are all integers (``label_index`` wins when several are), else the only other
column. A column whose values are all integers holds class indices; any other holds class names, which are
looked up in the model's ``config.label2id`` (exactly, else ignoring case, ``_`` for spaces and, for
ImageNet-style names such as ``"tench, Tinca tinca"``, any one of the comma-separated synonyms when only one
class has it). A blank value means "no label".

``LabelMapper`` resolves the entries against the model while the manifest is written. A name the model does
not know, or an index outside ``0..num_labels-1``, would otherwise be scored as a wrong prediction (or crash
a metric): such an input counts as *unlabelled* instead (``label_index`` null, left out of the accuracy), a
warning names a few, and the counts go into the job's summary (``labels``).
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FILE_COLUMNS = ("file", "filename", "path", "relpath")
EXAMPLES = 3  # problem examples kept per kind for the warning and the summary
MAX_FUZZY_CLASSES = 1_000_000  # above this many classes names are only matched exactly


class LabelsFileError(ValueError):
    pass


@dataclass(frozen=True)
class LabelsFile:
    """A parsed labels file: ``entries`` maps a file entry to its label text (blank labels left out)."""

    path: str
    file_column: str
    label_column: str
    entries: dict[str, str]
    kind: str  # "index" (every value an integer) or "name"

    def lookup(self, *keys: str | None) -> str | None:
        """The label text of the first of ``keys`` the file has an entry for."""
        return next((self.entries[k] for k in keys if k is not None and k in self.entries), None)


def _is_int(value: str | None) -> bool:
    try:
        int((value or "").strip())
        return True
    except ValueError:
        return False


def read_labels_file(path: str | Path, label_column: str | None = None) -> LabelsFile:
    """Parse a labels CSV (see the module docstring); raises ``LabelsFileError`` with one readable line."""
    from pipelines import storage

    try:
        data = storage.resolve(str(path)).read_bytes()
    except (OSError, storage.StorageError) as e:
        raise LabelsFileError(f"labels file not found: {path}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LabelsFileError(f"{path}: not UTF-8 text ({e})") from e
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    if not rows:
        raise LabelsFileError(f"{path}: no rows")
    header = [c for c in rows[0] if c is not None]
    file_col = next((c for c in FILE_COLUMNS if c in header), None)
    if file_col is None:
        raise LabelsFileError(f"{path}: needs one of the columns {', '.join(FILE_COLUMNS)}; found {header}")
    others = [c for c in header if c != file_col]

    def integers(column: str) -> bool:
        values = [(r.get(column) or "").strip() for r in rows]
        return any(values) and all(_is_int(v) for v in values if v)

    if label_column is None:
        candidates = [c for c in others if integers(c)]
        if "label_index" in candidates:
            label_column = "label_index"
        elif len(candidates) == 1:
            label_column = candidates[0]
        elif not candidates and len(others) == 1:
            label_column = others[0]  # file,label with class names
        else:
            raise LabelsFileError(f"{path}: choose the label column with --label-column (integer columns: "
                                  f"{', '.join(candidates) or 'none'}; columns: {', '.join(others)})")
    if label_column not in header:
        raise LabelsFileError(f"{path}: no column {label_column!r}; columns are {header}")
    entries = {r[file_col]: (r.get(label_column) or "").strip() for r in rows if r.get(file_col)}
    entries = {k: v for k, v in entries.items() if v}
    kind = "index" if integers(label_column) else "name"
    return LabelsFile(path=str(path), file_column=file_col, label_column=label_column, entries=entries, kind=kind)


def read_labels(path: str | Path, label_column: str | None = None) -> dict[str, int]:
    """{file entry: class index} from a labels CSV whose label column holds class indices."""
    labels = read_labels_file(path, label_column)
    if labels.kind != "index":
        bad = [k for k, v in labels.entries.items() if not _is_int(v)]
        raise LabelsFileError(f"{path}: column {labels.label_column!r} is not an integer for {bad[:3]}")
    return {k: int(v) for k, v in labels.entries.items()}


def _normalise(name: str) -> str:
    return " ".join(name.replace("_", " ").casefold().split())


@dataclass
class LabelMapper:
    """A labels file resolved against a model's classes, counting what it finds (see the module docstring).

    ``label_for`` is called once per manifest item, on the driver, while the manifest is written;
    ``report()`` afterwards logs one warning when some labels were unusable and returns the counts.
    """

    labels: LabelsFile
    label2id: Mapping[str, int]
    num_labels: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("labelled", "without_label", "unknown_name", "out_of_range"), 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: {"unknown_name": [], "out_of_range": []})
    _fuzzy: tuple[dict[str, int | None], dict[str, int | None]] | None = None

    @classmethod
    def for_model(cls, labels: LabelsFile, config: Any) -> LabelMapper:
        """``config``: the model's config (``label2id``, ``num_labels``: transformers' fields)."""
        return cls(labels, config.label2id or {}, int(config.num_labels))

    def label_for(self, relpath: str, item_id: str | None = None) -> int | None:
        """The class index of an input (entry by ``item_id``, else relative path, else file name), or None."""
        text = self.labels.lookup(item_id, relpath, relpath.rsplit("/", 1)[-1])
        if text is None:
            self.counts["without_label"] += 1
            return None
        index = self._index_of(text)
        if index is None:
            return self._unusable("unknown_name", f"{text!r} ({relpath})")
        if not 0 <= index < self.num_labels:
            return self._unusable("out_of_range", f"{index} ({relpath})")
        self.counts["labelled"] += 1
        return index

    def _unusable(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(example)
        return None

    def _index_of(self, text: str) -> int | None:
        if self.labels.kind == "index":
            return int(text)
        if text in self.label2id:
            return int(self.label2id[text])
        full, synonyms = self._fuzzy_index()
        key = _normalise(text)
        found = full.get(key, synonyms.get(key))
        if found is None and _is_int(text):  # a class index in a column of names
            return int(text)
        return found

    def _fuzzy_index(self) -> tuple[dict[str, int | None], dict[str, int | None]]:
        """Normalised full names and comma-separated synonyms -> class index (None: more than one class)."""
        if self._fuzzy is None:
            full: dict[str, int | None] = {}
            synonyms: dict[str, int | None] = {}
            if len(self.label2id) <= MAX_FUZZY_CLASSES:
                for name, index in self.label2id.items():
                    for table, keys in ((full, [name]), (synonyms, re.split(r"\s*,\s*", name))):
                        for key in {_normalise(k) for k in keys if k.strip()}:
                            table[key] = int(index) if table.get(key, index) == index else None
            self._fuzzy = (full, synonyms)
        return self._fuzzy

    def report(self) -> dict[str, Any]:
        """The counts (for job.json and the summary); logs one warning when some labels were unusable."""
        unknown, outside = self.counts["unknown_name"], self.counts["out_of_range"]
        if self.counts["without_label"] and not (self.counts["labelled"] or unknown or outside):
            example = next(iter(self.labels.entries), None)
            logger.warning("labels file %s: none of its %d entries (e.g. %r) matches an input; entries match an "
                           "input's path relative to its --input root, or its file name", self.labels.path,
                           len(self.labels.entries), example)
        if unknown or outside:
            problems = []
            if unknown:
                known = ", ".join(repr(n) for n in list(self.label2id)[:3])
                problems.append(f"{unknown} input(s) have a class name the model does not know (e.g. "
                                f"{', '.join(self.examples['unknown_name'])}; its classes are e.g. {known})")
            if outside:
                problems.append(f"{outside} input(s) have a class index outside 0..{self.num_labels - 1} (e.g. "
                                f"{', '.join(self.examples['out_of_range'])})")
            logger.warning("labels file %s, column %r: %s; they count as unlabelled (label_index null, left out "
                           "of the accuracy)", self.labels.path, self.labels.label_column, "; ".join(problems))
        return {"file": self.labels.path, "column": self.labels.label_column, "kind": self.labels.kind,
                "num_labels": self.num_labels, "counts": dict(self.counts),
                "examples": {k: list(v) for k, v in self.examples.items() if v}}


def label_for(labels: dict[str, int] | LabelMapper | None, relpath: str, item_id: str | None = None) -> int | None:
    """The class index of the input at ``relpath`` (or with entry ``item_id``): by id, relative path, else file
    name; None if absent (or, through a ``LabelMapper``, unusable for the model)."""
    if labels is None:
        return None
    if isinstance(labels, LabelMapper):
        return labels.label_for(relpath, item_id)
    for key in (item_id, relpath, relpath.rsplit("/", 1)[-1]):
        if key is not None and key in labels:
            return labels[key]
    return None
