"""Text stages: byte-level tokenization (CPU tasks), then classification or fill-mask (model actors).

Data flow::

    manifest row (id, path, position, data bytes | error, label_index)   read on the driver by text_io
      -> tokenize_texts (CPU task)   ids (M,) int32: the document's bytes + 6, "[MASK]" -> 3 (no [CLS]/[SEP]);
                                     unreadable rows (bad JSON, missing field, null) stay error rows
      -> TextClassifyWorker          [CLS] ids[:L-2] [SEP], top-k labels         (long documents TRUNCATED)
         or FillMaskWorker           windows of L-2 ids, each [CLS] w [SEP]; every [MASK] gets the most
                                     likely byte; windows without a mask are not run (documents WINDOWED)
      -> sink                        schemas.TEXT_CLASSIFY or schemas.TEXT_FILL_MASK

L is the checkpoint's ``max_position_embeddings`` (2048 bytes for deepmind/language-perceiver).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from perceiver_core import PerceiverTokenizer
from perceiver_core.tokenizer import NUM_SPECIAL_TOKENS
from pipelines import schemas
from pipelines.model_workers import ModelWorker, top_k

TOKEN_SCHEMA = pa.schema(
    [schemas.TEXT_CLASSIFY.field(n) for n in ("id", "source", "position", "num_bytes", "label_index", "warning",
                                              "error_type", "error")]
    + [pa.field("ids", pa.list_(pa.int32()))]
    + list(schemas.BOOKKEEPING))

_TOKENIZER = PerceiverTokenizer()


def tokenize_texts(batch: pa.Table) -> pa.Table:
    """Ray ``map_batches`` function: manifest rows -> token rows (or the manifest's error rows)."""
    rows = batch.to_pylist()
    ids, num_bytes, error_types, errors = [], [], [], []
    for row in rows:
        if row.get("error") is not None:
            reason, _, _ = row["error"].partition(":")
            ids.append(None), num_bytes.append(None), error_types.append(reason), errors.append(row["error"])
            continue
        # str: "[MASK]" etc. become special ids; bytes (invalid UTF-8) are taken byte for byte.
        content = row["text"] if row.get("text") is not None else (row.get("raw") or b"")
        ids.append(_TOKENIZER.text_to_ids(content).astype(np.int32))
        num_bytes.append(len(content.encode("utf-8")) if isinstance(content, str) else len(content))
        error_types.append(None), errors.append(None)
    n = len(rows)
    return schemas.build_table(TOKEN_SCHEMA, {
        "id": [r["id"] for r in rows], "source": [r["path"] for r in rows],
        "position": [r.get("position") for r in rows], "num_bytes": num_bytes,
        "label_index": [r.get("label_index") for r in rows], "error_type": error_types, "error": errors,
        "ids": [None if i is None else i.tolist() for i in ids],
        schemas.UNIT: [r["id"] for r in rows], schemas.PART: [0] * n, schemas.FINAL: [True] * n}, n)


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
        return [np.asarray(v, np.int64) for v in batch.column("ids").to_pylist()]


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
        return {**top_k(logits, self.k, self.labels), "truncated": [len(d) > self.max_tokens for d in docs]}


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
