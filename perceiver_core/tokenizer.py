"""Byte-level tokenizer of Perceiver IO, id-compatible with transformers' ``PerceiverTokenizer``.

Id space (262 ids): six special tokens ``[PAD]=0 [BOS]=1 [EOS]=2 [MASK]=3 [CLS]=4 [SEP]=5``, then every
UTF-8 byte ``b`` as id ``b + 6``. A sequence is wrapped as ``[CLS] x [SEP]``, a pair as
``[CLS] a [SEP] b [SEP]`` (BOS/EOS are reserved and never inserted). The literal strings ``"[MASK]"`` etc.
inside a ``str`` become their special ids, as in transformers; ``bytes`` input is taken byte for byte (no
UTF-8 check, no special-token matching), which suits corpora with invalid UTF-8.

Padding is on the right with id 0 unless ``padding_side="left"``; truncation removes tokens from the end and
follows transformers' rules (``longest_first`` splits the excess between the two sequences of a pair).
Everything is vectorised with numpy: a text is turned into ids with one ``np.frombuffer`` per special-token
free span.

Deliberate differences from transformers: ``decode`` takes one sequence and ``batch_decode`` a batch (one
return type per function); there is no hub download, ``from_pretrained`` reads a local directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"

# Role names in id order: role i has id i.
SPECIAL_ROLES = ("pad_token", "bos_token", "eos_token", "mask_token", "cls_token", "sep_token")
DEFAULT_SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
NUM_SPECIAL_TOKENS = len(SPECIAL_ROLES)
NUM_BYTES = 256

_TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
_PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")

TextInput = str | bytes


class BatchEncoding(dict):
    """The tokenizer's output: a dict (``input_ids``, ``attention_mask``, ...) with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


class PerceiverTokenizer:
    """UTF-8 bytes to ids in ``range(262)``; see the module docstring for the id layout."""

    model_input_names = ("input_ids", "attention_mask")

    def __init__(
        self,
        pad_token: str = "[PAD]",
        bos_token: str = "[BOS]",
        eos_token: str = "[EOS]",
        mask_token: str = "[MASK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        model_max_length: int = 2048,
        padding_side: str = "right",
    ) -> None:
        tokens = (pad_token, bos_token, eos_token, mask_token, cls_token, sep_token)
        if len(set(tokens)) != NUM_SPECIAL_TOKENS or not all(isinstance(t, str) and t for t in tokens):
            raise ValueError(f"special tokens must be distinct non-empty strings, got {tokens}")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if model_max_length < 1:
            raise ValueError(f"model_max_length must be positive, got {model_max_length}")
        self.special_tokens: tuple[str, ...] = tokens
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self._special_to_id = {tok: i for i, tok in enumerate(tokens)}
        self._special_bytes = [tok.encode("utf-8") for tok in tokens]
        # Longest first so that a token that is a prefix of another cannot shadow it.
        alternatives = sorted(tokens, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in alternatives) + ")")

    # ----------------------------------------------------------------------------------- id attributes
    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    mask_token_id = 3
    cls_token_id = 4
    sep_token_id = 5
    unk_token_id = None

    @property
    def pad_token(self) -> str:
        return self.special_tokens[0]

    @property
    def bos_token(self) -> str:
        return self.special_tokens[1]

    @property
    def eos_token(self) -> str:
        return self.special_tokens[2]

    @property
    def mask_token(self) -> str:
        return self.special_tokens[3]

    @property
    def cls_token(self) -> str:
        return self.special_tokens[4]

    @property
    def sep_token(self) -> str:
        return self.special_tokens[5]

    @property
    def all_special_ids(self) -> list[int]:
        return list(range(NUM_SPECIAL_TOKENS))

    @property
    def vocab_size(self) -> int:
        """Number of byte ids only (256), as transformers reports; ``len(tokenizer)`` is 262."""
        return NUM_BYTES

    def __len__(self) -> int:
        return NUM_SPECIAL_TOKENS + NUM_BYTES

    def __repr__(self) -> str:
        return f"PerceiverTokenizer(model_max_length={self.model_max_length}, padding_side={self.padding_side!r})"

    # ----------------------------------------------------------------------------------- encoding
    def text_to_ids(self, text: TextInput) -> np.ndarray:
        """Ids of ``text`` without special-token wrapping, as an int64 array (M,)."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            return np.frombuffer(bytes(text), dtype=np.uint8).astype(np.int64) + NUM_SPECIAL_TOKENS
        if not isinstance(text, str):
            raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
        pieces = self._special_re.split(text)
        # re.split with one capture group alternates plain text (even index) and special tokens (odd index).
        arrays = [
            np.array([self._special_to_id[piece]], dtype=np.int64)
            if i % 2
            else np.frombuffer(piece.encode("utf-8"), dtype=np.uint8).astype(np.int64) + NUM_SPECIAL_TOKENS
            for i, piece in enumerate(pieces)
            if piece
        ]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)

    def encode(
        self,
        text: TextInput,
        text_pair: TextInput | None = None,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        """Ids of one text (or pair) as a list, wrapped in ``[CLS] ... [SEP]`` unless told otherwise."""
        enc = self(
            text,
            text_pair=text_pair,
            add_special_tokens=add_special_tokens,
            truncation=truncation,
            max_length=max_length,
            return_attention_mask=False,
        )
        return enc["input_ids"]

    def batch_encode(self, texts: Sequence[TextInput], **kwargs: Any) -> BatchEncoding:
        """``__call__`` on a list of texts (kept for callers that want the batch spelled out)."""
        if isinstance(texts, (str, bytes)):
            raise TypeError("batch_encode takes a list of texts; use encode or __call__ for one text")
        return self(list(texts), **kwargs)

    def __call__(
        self,
        text: TextInput | Sequence[TextInput],
        text_pair: TextInput | Sequence[TextInput] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
        return_special_tokens_mask: bool = False,
    ) -> BatchEncoding:
        """Encode one text or a batch; values are lists (one text: flat list), or (B, L) arrays/tensors.

        ``padding``: False/"do_not_pad", True/"longest", "max_length" (to ``max_length`` or
        ``model_max_length``). ``truncation``: True/"longest_first", "only_first", "only_second", False.
        Passing only ``max_length`` turns on ``longest_first`` truncation, as in transformers.
        """
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        if text_pair is None:
            pairs: list[TextInput | None] = [None] * len(texts)
        elif batched:
            if not isinstance(text_pair, (list, tuple)) or len(text_pair) != len(texts):
                raise ValueError("when text is a batch, text_pair must be a batch of the same length")
            pairs = list(text_pair)
        else:
            pairs = [text_pair]
        padding_strategy, truncation_strategy, max_length = self._resolve_strategies(
            padding, truncation, max_length
        )
        if (
            pad_to_multiple_of
            and padding_strategy != "do_not_pad"
            and truncation_strategy != "do_not_truncate"
            and max_length % pad_to_multiple_of
        ):
            raise ValueError(
                f"max_length {max_length} must be a multiple of pad_to_multiple_of {pad_to_multiple_of}"
            )

        sequences, special_masks = [], []
        for first, second in zip(texts, pairs):
            ids, special = self._build_sequence(
                first, second, add_special_tokens, truncation_strategy, max_length
            )
            sequences.append(ids)
            special_masks.append(special)

        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        if padding_strategy == "longest":
            target = int(lengths.max()) if len(sequences) else 0
        elif padding_strategy == "max_length":
            target = max_length
        else:
            target = None
        if target is not None and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of

        ids_out, mask_out, special_out = [], [], []
        for ids, special in zip(sequences, special_masks):
            pad = max(target - len(ids), 0) if target is not None else 0
            mask = np.ones(len(ids), dtype=np.int64)
            if pad:
                ids = self._pad(ids, pad, self.pad_token_id)
                mask = self._pad(mask, pad, 0)
                special = self._pad(special, pad, 1)
            ids_out.append(ids)
            mask_out.append(mask)
            special_out.append(special)

        columns = {"input_ids": ids_out}
        if return_attention_mask:
            columns["attention_mask"] = mask_out
        if return_special_tokens_mask:
            columns["special_tokens_mask"] = special_out
        return BatchEncoding(
            {key: self._convert(values, batched, return_tensors) for key, values in columns.items()}
        )

    def _resolve_strategies(
        self, padding: bool | str, truncation: bool | str | None, max_length: int | None
    ) -> tuple[str, str, int | None]:
        """transformers' rules for turning (padding, truncation, max_length) into strategies."""
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"
        if padding is True:
            padding = "longest"
        elif padding is False:
            padding = "do_not_pad"
        if truncation is True:
            truncation = "longest_first"
        elif truncation is None or truncation is False:
            truncation = "do_not_truncate"
        if padding not in _PADDING_STRATEGIES:
            raise ValueError(f"padding must be one of {_PADDING_STRATEGIES} or a bool, got {padding!r}")
        if truncation not in _TRUNCATION_STRATEGIES:
            raise ValueError(
                f"truncation must be one of {_TRUNCATION_STRATEGIES} or a bool, got {truncation!r}"
            )
        if max_length is None and (padding == "max_length" or truncation != "do_not_truncate"):
            max_length = self.model_max_length
        return padding, truncation, max_length

    def _build_sequence(
        self,
        first: TextInput,
        second: TextInput | None,
        add_special_tokens: bool,
        truncation: str,
        max_length: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids (L,) of one example after truncation and special tokens, plus its special-tokens mask (L,)."""
        a = self.text_to_ids(first)
        b = self.text_to_ids(second) if second is not None else None
        num_special = (2 if b is None else 3) if add_special_tokens else 0
        excess = len(a) + (len(b) if b is not None else 0) + num_special - (max_length or 0)
        if truncation != "do_not_truncate" and max_length and excess > 0:
            a, b = _truncate(a, b, excess, truncation)
        if not add_special_tokens:
            ids = a if b is None else np.concatenate([a, b])
            return ids, np.zeros(len(ids), dtype=np.int64)
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        parts = [cls, a, sep] if b is None else [cls, a, sep, b, sep]
        ids = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
        # Only the inserted positions count as special, not literal "[SEP]" typed in the text.
        special = np.zeros(len(ids), dtype=np.int64)
        special[[0, len(a) + 1]] = 1
        if b is not None:
            special[-1] = 1
        return ids, special

    def _pad(self, values: np.ndarray, pad: int, fill: int) -> np.ndarray:
        filler = np.full(pad, fill, dtype=np.int64)
        parts = [values, filler] if self.padding_side == "right" else [filler, values]
        return np.concatenate(parts)

    @staticmethod
    def _convert(values: list[np.ndarray], batched: bool, return_tensors: str | None) -> Any:
        if return_tensors is None:
            lists = [v.tolist() for v in values]
            return lists if batched else lists[0]
        if len({len(v) for v in values}) > 1:
            raise ValueError("sequences have different lengths; pass padding=True to return tensors")
        array = np.stack(values) if values else np.zeros((0, 0), dtype=np.int64)  # (B, L)
        if return_tensors == "np":
            return array
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(array)
        raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}")

    # ----------------------------------------------------------------------------------- decoding
    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of one id sequence (list, 1-D array or tensor). Invalid UTF-8 becomes U+FFFD."""
        array = _as_id_array(ids)
        if array.ndim == 0:
            array = array.reshape(1)
        if array.ndim != 1:
            raise ValueError(f"decode takes one sequence (1-D); got shape {array.shape}, use batch_decode")
        if array.size and (array.min() < 0 or array.max() >= len(self)):
            bad = array[(array < 0) | (array >= len(self))][0]
            raise ValueError(f"id {bad} is outside range(0, {len(self)})")
        is_special = array < NUM_SPECIAL_TOKENS
        if skip_special_tokens:
            array, is_special = array[~is_special], is_special[~is_special]
        if not is_special.any():
            data = (array - NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes()
        else:
            # Specials become their literal names; bytes on both sides are joined before UTF-8 decoding.
            chunks: list[bytes] = []
            bounds = np.flatnonzero(is_special)
            start = 0
            for pos in bounds:
                chunks.append((array[start:pos] - NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes())
                chunks.append(self._special_bytes[int(array[pos])])
                start = pos + 1
            chunks.append((array[start:] - NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes())
            data = b"".join(chunks)
        return data.decode("utf-8", errors="replace")

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        """Texts of a batch of id sequences (list of lists, (B, L) array or tensor)."""
        if not isinstance(sequences, (list, tuple)):
            sequences = _as_id_array(sequences)
            if sequences.ndim != 2:
                raise ValueError(f"batch_decode takes a (B, L) batch, got shape {sequences.shape}")
        return [self.decode(seq, skip_special_tokens=skip_special_tokens) for seq in sequences]

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        """Token strings as transformers shows them: special names, or ``chr(byte)`` for a byte id."""
        return [
            self.special_tokens[i] if i < NUM_SPECIAL_TOKENS else chr(i - NUM_SPECIAL_TOKENS)
            for i in (int(i) for i in ids)
        ]

    # ----------------------------------------------------------------------------------- files
    def save_pretrained(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``tokenizer_config.json`` and ``special_tokens_map.json`` (loadable by transformers)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        special_map = dict(zip(SPECIAL_ROLES, self.special_tokens))
        added = {
            str(i): {
                "content": tok,
                "lstrip": False,
                "normalized": True,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, tok in enumerate(self.special_tokens)
        }
        config = {
            "added_tokens_decoder": added,
            **special_map,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "tokenizer_class": "PerceiverTokenizer",
        }
        config_path = directory / TOKENIZER_CONFIG_NAME
        map_path = directory / SPECIAL_TOKENS_MAP_NAME
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        map_path.write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return config_path, map_path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> PerceiverTokenizer:
        """Read a local directory written by this class or by transformers; missing files mean defaults."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {directory}")
        config: dict[str, Any] = {}
        for name in (SPECIAL_TOKENS_MAP_NAME, TOKENIZER_CONFIG_NAME):  # the config wins
            path = directory / name
            if path.is_file():
                config.update(json.loads(path.read_text(encoding="utf-8")))
        tokens = {}
        for role, default in zip(SPECIAL_ROLES, DEFAULT_SPECIAL_TOKENS):
            value = config.get(role, default)
            tokens[role] = value["content"] if isinstance(value, dict) else value
        # Ids are fixed by role; a file that assigns a token to another id cannot be honoured.
        for key, entry in config.get("added_tokens_decoder", {}).items():
            content = entry["content"] if isinstance(entry, dict) else entry
            expected = tokens[SPECIAL_ROLES[int(key)]] if int(key) < NUM_SPECIAL_TOKENS else None
            if content != expected:
                raise ValueError(f"{directory}: added token {content!r} at id {key} is not supported")
        max_length = config.get("model_max_length", 2048)
        # transformers writes a huge sentinel when no length is known.
        max_length = 2048 if max_length is None or max_length > 10**12 else int(max_length)
        return cls(**tokens, model_max_length=max_length, padding_side=config.get("padding_side", "right"))


def _truncate(a: np.ndarray, b: np.ndarray | None, excess: int, strategy: str) -> tuple[np.ndarray, Any]:
    """Drop ``excess`` tokens from the end(s), by transformers' rules (which may over-cut short inputs)."""
    if strategy == "only_second":  # transformers leaves a lone sequence alone here
        return a, (b[: max(len(b) - excess, 0)] if b is not None else None)
    if b is None or strategy == "only_first":
        return a[: max(len(a) - excess, 0)], b
    # longest_first: first even out the lengths, then split what remains (the odd token goes to b).
    first_remove = min(abs(len(a) - len(b)), excess)
    rest = excess - first_remove
    if len(a) > len(b):
        cut_a, cut_b = first_remove + rest // 2, rest - rest // 2
    else:
        cut_a, cut_b = rest // 2, first_remove + rest - rest // 2
    return a[: max(len(a) - cut_a, 0)], b[: max(len(b) - cut_b, 0)]


def _as_id_array(ids: Any) -> np.ndarray:
    """Ids from a list, int, numpy array or torch tensor, as int64 numpy."""
    if hasattr(ids, "detach"):  # torch.Tensor, without importing torch
        ids = ids.detach().cpu().numpy()
    array = np.asarray(ids)
    if array.dtype.kind not in "iu" and array.size:
        raise TypeError(f"ids must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)
