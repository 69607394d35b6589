"""transformers' padding and truncation rules, on numpy id arrays, for ``PerceiverTokenizer``.

Ported rule by rule from transformers 5.x (``_get_padding_truncation_strategies``, ``truncate_sequences``,
``_pad``) so that every combination of ``padding`` / ``truncation`` / ``max_length`` / ``stride`` /
``pad_to_multiple_of`` / ``padding_side`` / ``truncation_side`` gives the same ids, including the quirks
(``max_length`` alone turns truncation on; ``only_first`` may cut a short first sequence to nothing; a
``model_max_length`` above 1e20 means "unknown" and switches default truncation and max-length padding off).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

VERY_LARGE_INTEGER = int(1e30)  # transformers' model_max_length when none is known
LARGE_INTEGER = int(1e20)
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("only_first", "only_second", "longest_first", "do_not_truncate")
SIDES = ("right", "left")
TEXT_TYPES = (str, bytes, bytearray, memoryview)


@dataclass(frozen=True)
class Strategies:
    """What one call pads and truncates to; ``max_length`` is None when nothing needs it."""

    padding: str
    truncation: str
    max_length: int | None


def check_side(name: str, value: Any) -> str:
    if value not in SIDES:
        label = name.replace("_", " ").capitalize()
        raise ValueError(f"{label} should be selected between 'right' and 'left', current value: {value}")
    return value


def _strategy(value: Any, allowed: tuple[str, ...], kind: str) -> str:
    text = str(getattr(value, "value", value))  # transformers' PaddingStrategy / TruncationStrategy enums
    if text not in allowed:
        raise ValueError(f"{text} is not a valid {kind}, please select one of {list(allowed)}")
    return text


def resolve_strategies(padding: Any, truncation: Any, max_length: int | None, pad_to_multiple_of: int | None,
                       model_max_length: int, verbose: bool = True) -> Strategies:
    """transformers' ``_get_padding_truncation_strategies``."""
    if max_length is not None and padding is False and truncation is None:
        truncation = "longest_first"  # backward compatibility: max_length alone truncates
    if padding is False or padding is None:
        pad = "do_not_pad"
    elif padding is True:
        if verbose and max_length is not None and truncation in (None, False, "do_not_truncate"):
            warnings.warn("`max_length` is ignored when `padding`=`True` and there is no truncation strategy. "
                          "To pad to max length, use `padding='max_length'`.", stacklevel=3)
        pad = "longest"
    else:
        pad = _strategy(padding, PADDING_STRATEGIES, "PaddingStrategy")
    if truncation is None or truncation is False:
        trunc = "do_not_truncate"
    elif truncation is True:
        trunc = "longest_first"
    else:
        trunc = _strategy(truncation, TRUNCATION_STRATEGIES, "TruncationStrategy")
    if max_length is None:
        if pad == "max_length":
            if model_max_length > LARGE_INTEGER:
                pad = "do_not_pad"
            else:
                max_length = model_max_length
        if trunc != "do_not_truncate":
            if model_max_length > LARGE_INTEGER:
                trunc = "do_not_truncate"
            else:
                max_length = model_max_length
    if (trunc != "do_not_truncate" and pad != "do_not_pad" and pad_to_multiple_of is not None
            and max_length is not None and max_length % pad_to_multiple_of != 0):
        raise ValueError("Truncation and padding are both activated but truncation length "
                         f"({max_length}) is not a multiple of pad_to_multiple_of ({pad_to_multiple_of}).")
    return Strategies(pad, trunc, max_length)


def truncate(ids: np.ndarray, pair: np.ndarray | None, num_remove: int, strategy: str, stride: int,
             side: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """transformers' ``truncate_sequences``: (ids, pair, overflowing tokens incl. ``stride`` context)."""
    empty = ids[:0]
    if num_remove <= 0:
        return ids, pair, empty
    if strategy == "only_first" or (strategy == "longest_first" and pair is None):
        window = min(len(ids), stride + num_remove)
        if side == "left":
            return ids[num_remove:], pair, ids[:window]
        return ids[:-num_remove], pair, (ids[-window:] if window > 0 else ids)
    if strategy == "longest_first":
        # First even out the lengths, then split what remains (the odd token goes to the pair).
        first_remove = min(abs(len(pair) - len(ids)), num_remove)
        rest = num_remove - first_remove
        if len(ids) > len(pair):
            cut_ids, cut_pair = first_remove + rest // 2, rest - rest // 2
        else:
            cut_ids, cut_pair = rest // 2, first_remove + rest - rest // 2
        if side == "right":
            ids = ids[:-cut_ids] if cut_ids > 0 else ids
            pair = pair[:-cut_pair] if len(pair) and cut_pair > 0 else pair
        else:
            ids, pair = ids[cut_ids:], pair[cut_pair:]
        return ids, pair, empty
    if strategy == "only_second" and pair is not None and len(pair):
        window = min(len(pair), stride + num_remove)
        if side == "right":
            return ids, pair[:-num_remove], (pair[-window:] if window > 0 else pair)
        return ids, pair[num_remove:], pair[:window]
    return ids, pair, empty


def round_up(length: int, multiple: int | None) -> int:
    if multiple is not None and length % multiple:
        return (length // multiple + 1) * multiple
    return length


def pad_target(strategy: str, max_length: int | None, lengths: list[int], multiple: int | None) -> int | None:
    """The length every sequence of a batch is padded to, or None for no padding."""
    if strategy == "do_not_pad":
        return None
    target = max(lengths, default=0) if strategy == "longest" else max_length
    return None if target is None else round_up(target, multiple)


def pad_array(values: np.ndarray, target: int | None, fill: int, side: str) -> np.ndarray:
    """``values`` (L,) padded with ``fill`` up to ``target`` on ``side`` (never shortened)."""
    if target is None or len(values) >= target:
        return values
    filler = np.full(target - len(values), fill, dtype=values.dtype if values.dtype != object else np.int64)
    return np.concatenate([values, filler] if side == "right" else [filler, values])


def pad_list(values: list, target: int | None, fill: Any, side: str) -> list:
    """``pad_array`` for the plain lists of ``PerceiverTokenizer.pad``."""
    if target is None or len(values) >= target:
        return values
    filler = [fill] * (target - len(values))
    return values + filler if side == "right" else filler + values


def is_batched(text: Any, is_split_into_words: bool) -> bool:
    """transformers' rule: a list of texts (or of pre-split lists / pairs) is a batch."""
    if not isinstance(text, (list, tuple)):
        return False
    if not text:
        return not is_split_into_words
    if is_split_into_words:
        return isinstance(text[0], (list, tuple))
    return isinstance(text[0], (*TEXT_TYPES, list, tuple))


def split_pair(first: Any, second: Any, is_split_into_words: bool) -> tuple[Any, Any]:
    """A batch item given as ``(text, pair)`` (or a one-element list) into its two parts."""
    if (isinstance(first, (list, tuple)) and first and not isinstance(first[0], (int, np.integer))
            and second is None):
        parts_ok = all(isinstance(part, (*TEXT_TYPES, list, tuple)) for part in first)
        if len(first) == 2 and (not is_split_into_words or isinstance(first, tuple)) and parts_ok:
            return first[0], first[1]
        if len(first) == 1:
            return first[0], None
        if not is_split_into_words:
            raise ValueError(f"Expected a pair of sequences, got {len(first)} sequences.")
    return first, second


def key_order(rows: list[dict[str, Any]]) -> list[str]:
    """Output keys in transformers' order (per-example keys first, then the batch padding's mask)."""
    keys = [k for k in rows[0] if k != "attention_mask"]
    return keys + (["attention_mask"] if "attention_mask" in rows[0] else [])


def to_output(columns: dict[str, list], kind: str | None, single: bool) -> dict[str, Any]:
    """Columns of per-example arrays/ints into lists (flat for one text) or (B, ...) arrays/tensors."""
    out = {}
    for key, values in columns.items():
        if kind is None:
            lists = [v.tolist() if isinstance(v, np.ndarray) else v for v in values]
            out[key] = lists[0] if single else lists
            continue
        if len({np.shape(v) for v in values}) > 1:
            raise ValueError(f"`{key}`: sequences have different lengths; pass padding=True (and truncation=True) "
                             "to return tensors")
        array = np.stack(values) if isinstance(values[0], np.ndarray) else np.asarray(values, dtype=np.int64)
        if kind == "pt":
            import torch

            array = torch.from_numpy(np.ascontiguousarray(array))
        out[key] = array
    return out
