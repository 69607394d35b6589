"""Text stages: read the documents of text items and tokenize them (in the shard worker), then classification
or fill-mask (the model worker).

Data flow::

    manifest row = a text item (a byte range, a whole file or a row-group run; ``pipelines.readers.text_items``)
      -> tokenize_items (read_fn, generator)  the item's documents, one row each: ids (M,) int32 = the
                                              document's bytes + 6, "[MASK]" -> 3 (no [CLS]/[SEP]); records
                                              that cannot be read (bad JSON, missing field, non-string,
                                              null, bad label, UTF-16 lines) are error rows
      -> TextClassifyWorker                   [CLS] ids[:L-2] [SEP], top-k labels       (long documents TRUNCATED)
         or FillMaskWorker                    windows of L-2 ids, each [CLS] w [SEP]; every [MASK] gets the most
                                              likely byte; windows without a mask are not run (documents WINDOWED)
      -> part file                            schemas.TEXT_CLASSIFY or schemas.TEXT_FILL_MASK

L is the checkpoint's ``max_position_embeddings`` (2048 bytes for deepmind/language-perceiver). A document's
``_unit`` is its own id: the shard worker counts the documents the reader found (``items_are_inputs=False``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from perceiver_core import PerceiverTokenizer
from perceiver_core.tokenizer import DEFAULT_SPECIAL_TOKENS, NUM_SPECIAL_TOKENS
from pipelines.batch import schemas
from pipelines.batch.model_workers import ModelWorker, top_k
from pipelines.readers.text_io import Row
from pipelines.readers.text_items import ReadOptions, read_item

TOKEN_SCHEMA = pa.schema(
    [schemas.TEXT_CLASSIFY.field(n) for n in ("id", "source", "position", "num_bytes", "label_index", "warning",
                                              "error_type", "error")]
    + [pa.field("ids", pa.list_(pa.int32()))]
    + list(schemas.BOOKKEEPING))
ROWS_PER_TABLE = 256  # documents per table handed to the batcher
_CHARS_PER_ID = max(len(t) for t in DEFAULT_SPECIAL_TOKENS)  # a token never spans more characters

_TOKENIZER = PerceiverTokenizer()

logger = logging.getLogger(__name__)


def _ids_of(content: str | bytes, max_ids: int | None) -> np.ndarray:
    if max_ids is not None:  # tokenize a prefix only: a classifier reads max_ids, a document may be 1 GB
        content = content[:max_ids * _CHARS_PER_ID]
    ids = _TOKENIZER.text_to_ids(content)
    return (ids if max_ids is None else ids[:max_ids]).astype(np.int32)


def token_table(rows: list[Row], max_ids: int | None = None) -> pa.Table:
    """``text_io`` rows -> TOKEN_SCHEMA rows (error rows keep their error, with null ids). ``max_ids``:
    keep only a document's first ids (``num_bytes`` still counts all of it)."""
    arrays, num_bytes, error_types, errors = [], [], [], []
    for row in rows:
        if row["error"] is not None:
            arrays.append(None), num_bytes.append(None)
            error_types.append(row["error"].partition(":")[0]), errors.append(row["error"])
            continue
        # str: "[MASK]" etc. become special ids; bytes (invalid UTF-8) are taken byte for byte.
        content = row["text"] if row["text"] is not None else (row["raw"] or b"")
        arrays.append(_ids_of(content, max_ids))
        num_bytes.append(len(content.encode("utf-8")) if isinstance(content, str) else len(content))
        error_types.append(None), errors.append(None)
    n = len(rows)
    lengths = np.asarray([0 if a is None else len(a) for a in arrays], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = np.concatenate([a for a in arrays if a is not None] or [np.zeros(0, np.int32)])
    ids = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()),
                                   mask=pa.array([a is None for a in arrays], pa.bool_()))
    units = [r["id"] for r in rows]
    return schemas.build_table(TOKEN_SCHEMA, {
        "id": units, "source": [r["source"] for r in rows], "position": [r["index"] for r in rows],
        "num_bytes": num_bytes, "label_index": [r["label"] for r in rows], "error_type": error_types,
        "error": errors, "ids": ids, schemas.UNIT: units, schemas.PART: [0] * n, schemas.FINAL: [True] * n}, n)


def tokenize_items(items: pa.Table, options: ReadOptions, max_ids: int | None = None,
                   rows_per_table: int = ROWS_PER_TABLE) -> Iterator[pa.Table]:
    """The shard worker's read function: a shard's items -> token tables, ``rows_per_table`` documents each
    (the shard's documents are never all in memory at once). ``max_ids``: see ``token_table`` (classify
    passes its positions + 1, so that truncation is still seen)."""
    rows: list[Row] = []
    for item in items.to_pylist():
        for row in read_item(item, options):
            rows.append(row)
            if len(rows) == rows_per_table:
                yield token_table(rows, max_ids)
                rows = []
    if rows:
        yield token_table(rows, max_ids)


def _padded(sequences: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] s [SEP] for each sequence, right-padded -> ids (B, L), attention mask (B, L)."""
    wrapped = [np.concatenate([[_TOKENIZER.cls_token_id], s, [_TOKENIZER.sep_token_id]]) for s in sequences]
    length = max(len(w) for w in wrapped)
    ids = np.zeros((len(wrapped), length), np.int64)
    mask = np.zeros((len(wrapped), length), np.int64)
    for i, w in enumerate(wrapped):
        ids[i, :len(w)], mask[i, :len(w)] = w, 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


class _TextWorker(ModelWorker):
    def dummy_batch(self) -> pa.Table:
        return schemas.build_table(TOKEN_SCHEMA, {
            "id": ["warm-up"], "ids": [[_TOKENIZER.mask_token_id] + [40] * 8],
            schemas.UNIT: ["warm-up"], schemas.PART: [0], schemas.FINAL: [True]}, 1)

    @property
    def max_tokens(self) -> int:
        """Document tokens per model call: the position table minus [CLS] and [SEP]."""
        return self.max_length - 2

    @staticmethod
    def _ids(batch: pa.Table) -> list[np.ndarray]:
        """The documents' ids as int64 arrays, from the list column's buffers (no Python int per byte)."""
        column = batch.column("ids").combine_chunks()
        offsets = column.offsets.to_numpy()
        values = column.values.to_numpy(zero_copy_only=False).astype(np.int64)
        return [values[offsets[i]:offsets[i + 1]] for i in range(len(column))]


class TextClassifyWorker(_TextWorker):
    """Sequence classification; documents longer than the model's positions are truncated (flagged)."""

    schema = schemas.TEXT_CLASSIFY

    def setup(self, k: int = 5, max_length: int | None = None) -> None:
        self.k = k
        self.max_length = min(max_length or self.model.config.max_position_embeddings,
                              self.model.config.max_position_embeddings)
        self.labels = self.model.config.labels

    def predict(self, batch: pa.Table) -> dict[str, Any]:
        docs = self._ids(batch)
        ids, mask = _padded([d[:self.max_tokens] for d in docs], self.device)
        with self.autocast():
            logits = self.model(inputs=ids, attention_mask=mask).logits
        return {**top_k(logits, self.k, self.labels), "truncated": [len(d) > self.max_tokens for d in docs],
                **self._checked_labels(batch)}

    def _checked_labels(self, batch: pa.Table) -> dict[str, list]:
        """A ``--labelled-lines`` label the model has no class for becomes null (left out of the accuracy, not
        counted wrong), with a row ``warning`` and one log line per batch."""
        labels = batch.column("label_index").to_pylist()
        num = self.model.config.num_labels
        outside = [y is not None and not 0 <= y < num for y in labels]
        if not any(outside):
            return {}
        warnings = batch.column("warning").to_pylist() if "warning" in batch.column_names else [None] * len(labels)
        for i, y in enumerate(labels):
            if outside[i]:
                note = f"label {y} is outside the model's {num} classes: counted as unlabelled"
                warnings[i] = note if not warnings[i] else f"{warnings[i]}; {note}"
        logger.warning("%d label(s) outside the model's %d classes (e.g. %s) count as unlabelled", sum(outside), num,
                       next(y for y, o in zip(labels, outside) if o))
        return {"label_index": [None if o else y for y, o in zip(labels, outside)], "warning": warnings}


class FillMaskWorker(_TextWorker):
    """Fill every [MASK] token with the most likely byte, window by window (any document length)."""

    schema = schemas.TEXT_FILL_MASK

    def setup(self, max_length: int | None = None, windows_per_call: int = 8) -> None:
        self.max_length = min(max_length or self.model.config.max_position_embeddings,
                              self.model.config.max_position_embeddings)
        self.windows_per_call = windows_per_call

    def predict(self, batch: pa.Table) -> dict[str, Any]:
        docs = self._ids(batch)
        filled = [d.copy() for d in docs]
        windows = [(i, start) for i, d in enumerate(docs) for start in range(0, len(d), self.max_tokens)
                   if (d[start:start + self.max_tokens] == _TOKENIZER.mask_token_id).any()]
        for chunk in range(0, len(windows), self.windows_per_call):
            part = windows[chunk:chunk + self.windows_per_call]
            ids, mask = _padded([docs[i][s:s + self.max_tokens] for i, s in part], self.device)
            with self.autocast():
                logits = self.model(inputs=ids, attention_mask=mask).logits  # (B, L, vocab)
            # The most likely *byte* (special ids cannot stand in text).
            best = logits[..., NUM_SPECIAL_TOKENS:].argmax(dim=-1).cpu().numpy() + NUM_SPECIAL_TOKENS
            for row, (i, s) in enumerate(part):
                window = docs[i][s:s + self.max_tokens]
                at = np.flatnonzero(window == _TOKENIZER.mask_token_id)
                filled[i][s + at] = best[row, at + 1]  # +1: [CLS] comes first
        texts = [_TOKENIZER.decode(f) for f in filled]
        return {"filled_text": texts,
                "num_masks": [int((d == _TOKENIZER.mask_token_id).sum()) for d in docs],
                "num_windows": [max(1, -(-len(d) // self.max_tokens)) for d in docs],
                "truncated": [False] * len(docs)}
