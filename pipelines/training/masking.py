"""Byte-level masked language modelling: documents to fixed windows, and span masking.

Ids follow ``PerceiverTokenizer``: byte b is id b + 6, ids 0..5 are special ([PAD]=0, [MASK]=3). Windows are
int16 (L,) arrays so that a Ray Data block of them is compact; masking happens in the training worker, freshly
drawn every step from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from perceiver_core.tokenizer import NUM_SPECIAL_TOKENS, PerceiverTokenizer

PAD_ID = PerceiverTokenizer.pad_token_id
MASK_ID = PerceiverTokenizer.mask_token_id
VOCAB_SIZE = NUM_SPECIAL_TOKENS + 256
IGNORE_INDEX = -100


def byte_ids(text: str | bytes) -> np.ndarray:
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int16) + NUM_SPECIAL_TOKENS


def pack_documents(docs: Iterable[str | bytes], seq_len: int, separator: bytes = b"\n",
                   min_tail: float = 0.5) -> np.ndarray:
    """Concatenate documents (joined by ``separator``) and cut the byte stream into (n, seq_len) windows.

    Every byte is used once; the last, shorter window is padded with [PAD] when it holds at least
    ``min_tail * seq_len`` bytes and dropped otherwise.
    """
    stream = byte_ids(separator.join(d.encode("utf-8") if isinstance(d, str) else bytes(d) for d in docs))
    n_full, tail = divmod(len(stream), seq_len)
    windows = stream[:n_full * seq_len].reshape(n_full, seq_len)
    if tail and tail >= min_tail * seq_len:
        last = np.full((1, seq_len), PAD_ID, dtype=np.int16)
        last[0, :tail] = stream[n_full * seq_len:]
        windows = np.concatenate([windows, last])
    return windows


def crop_documents(docs: Iterable[str | bytes], seq_len: int) -> np.ndarray:
    """One window per document: its first ``seq_len`` bytes, padded with [PAD]. Empty documents are skipped."""
    rows = [ids[:seq_len] for ids in map(byte_ids, docs) if len(ids)]
    out = np.full((len(rows), seq_len), PAD_ID, dtype=np.int16)
    for i, ids in enumerate(rows):
        out[i, :len(ids)] = ids
    return out


def span_mask(ids: np.ndarray, rng: np.random.Generator, mask_prob: float = 0.15, mean_span: float = 3.0,
              max_span: int = 10, replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1)
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mask contiguous byte spans in (B, L) ids; returns (inputs, labels), both int64 (B, L).

    Per row, ``round(mask_prob * n)`` of its n byte positions (never [PAD] or other special ids) are chosen as
    spans with geometric lengths of mean ``mean_span`` (at most ``max_span``) at uniform starts. Chosen
    positions become [MASK], a random byte or stay unchanged with ``replace_probs`` (BERT's 80/10/10); labels
    hold the original ids there and -100 elsewhere.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 2:
        raise ValueError(f"ids must be (B, L), got shape {ids.shape}")
    b, length = ids.shape
    eligible = ids >= NUM_SPECIAL_TOKENS
    chosen = np.zeros_like(eligible)
    p_geom = 1.0 / mean_span
    for row in range(b):
        n = int(eligible[row].sum())
        budget = round(mask_prob * n)
        if n and budget == 0:
            budget = 1
        count = 0
        for _ in range(8 * budget + 8):  # bounded: spans may overlap or fall on ineligible positions
            if count >= budget:
                break
            span = min(int(rng.geometric(p_geom)), max_span, budget - count)
            start = int(rng.integers(0, length))
            window = slice(start, min(start + span, length))
            new = eligible[row, window] & ~chosen[row, window]
            chosen[row, window] |= new
            count += int(new.sum())
    labels = np.where(chosen, ids, IGNORE_INDEX)
    inputs = ids.copy()
    draw = rng.random(ids.shape)
    keep_mask, keep_random = replace_probs[0], replace_probs[0] + replace_probs[1]
    inputs[chosen & (draw < keep_mask)] = MASK_ID
    random_pos = chosen & (draw >= keep_mask) & (draw < keep_random)
    inputs[random_pos] = rng.integers(NUM_SPECIAL_TOKENS, VOCAB_SIZE, int(random_pos.sum()))
    return inputs, labels
