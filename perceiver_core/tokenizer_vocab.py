"""The byte vocabulary of ``PerceiverTokenizer``: special-token roles, token/id conversions and decoding.

Kept apart from the encoding machinery in ``tokenizer.py``; ``ByteVocabulary`` reads the attributes that
``PerceiverTokenizer.__init__`` sets (``_id_tokens``, ``_token_to_id``, ``_roles``, ...). The conversions
follow transformers' ``PerceiverTokenizer`` exactly: ``chr(id - 6)`` for every id >= 6, one character ``c``
to ``ord(c) + 6``, special names to 0..5, no unknown token (``unk_token_id`` is None).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import tokenizer_files as files
from .batch_encoding import reject_unexpected, to_python
from .tokenizer_rules import check_side, resolve_strategies, truncate

TOKENIZER_CONFIG_NAME = files.TOKENIZER_CONFIG_NAME
SPECIAL_TOKENS_MAP_NAME = files.SPECIAL_TOKENS_MAP_NAME
# Role names in id order: role i has id i.
SPECIAL_ROLES = ("pad_token", "bos_token", "eos_token", "mask_token", "cls_token", "sep_token")
DEFAULT_SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]", "[SEP]")
NUM_SPECIAL_TOKENS = len(SPECIAL_ROLES)
NUM_BYTES = 256
# transformers' SPECIAL_TOKENS_ATTRIBUTES order: the order of all_special_tokens and special_tokens_map.
MAP_ORDER = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

TextInput = str | bytes


class _Special:
    """``tok.pad_token`` / ``tok.pad_token_id``: the default on the class (so ``PerceiverTokenizer.pad_token_id``
    is 0), the current value on an instance; assignable like in transformers (``tok.pad_token = tok.eos_token``)."""

    def __init__(self, role: str, as_id: bool = False) -> None:
        self.role, self.as_id = role, as_id

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            if self.role == "unk_token":
                return None
            index = SPECIAL_ROLES.index(self.role)
            return index if self.as_id else DEFAULT_SPECIAL_TOKENS[index]
        token = obj._roles.get(self.role)
        if not self.as_id or token is None:
            return token
        return obj.convert_tokens_to_ids(token)

    def __set__(self, obj: Any, value: Any) -> None:
        if self.as_id and value is not None:
            value = obj.convert_ids_to_tokens(int(value))
        obj._set_role(self.role, value)


class ByteVocabulary:
    """Vocabulary, conversions and decoding of the 262-id byte tokenizer (a mixin of PerceiverTokenizer)."""

    pad_token, pad_token_id = _Special("pad_token"), _Special("pad_token", True)
    bos_token, bos_token_id = _Special("bos_token"), _Special("bos_token", True)
    eos_token, eos_token_id = _Special("eos_token"), _Special("eos_token", True)
    mask_token, mask_token_id = _Special("mask_token"), _Special("mask_token", True)
    cls_token, cls_token_id = _Special("cls_token"), _Special("cls_token", True)
    sep_token, sep_token_id = _Special("sep_token"), _Special("sep_token", True)
    unk_token, unk_token_id = _Special("unk_token"), _Special("unk_token", True)

    def _set_role(self, role: str, value: Any) -> None:
        value = files.token_text(value)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"Cannot set a non-string value as the {role}")
        if role == "unk_token" and value is not None:
            raise ValueError("unk_token: every byte has an id, so the Perceiver tokenizer has no unknown token")
        if role in ("cls_token", "sep_token") and value is None:
            raise ValueError(f"{role} cannot be None: it builds every [CLS] x [SEP] sequence")
        self._roles[role] = value

    # ----------------------------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of byte ids only (256), as transformers reports; ``len(tokenizer)`` is 262."""
        return NUM_BYTES

    def __len__(self) -> int:
        return NUM_SPECIAL_TOKENS + NUM_BYTES

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path='{self.name_or_path}', vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, padding_side='{self.padding_side}', "
                f"truncation_side='{self.truncation_side}', special_tokens={self.special_tokens_map})")

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """The six special token strings in id order (ids 0..5)."""
        return self._id_tokens

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {role: self._roles[role] for role in MAP_ORDER if self._roles.get(role) is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(self.special_tokens_map.values()))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def get_added_vocab(self) -> dict[str, int]:
        return dict(self._token_to_id)

    def get_vocab(self) -> dict[str, int]:
        vocab = {chr(i): i + NUM_SPECIAL_TOKENS for i in range(NUM_BYTES)}
        vocab.update(self._token_to_id)
        return vocab

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return 3 if pair else 2

    # ----------------------------------------------------------------------------------- tokens <-> ids
    def text_to_ids(self, text: TextInput, split_special_tokens: bool | None = None) -> np.ndarray:
        """Ids of ``text`` without special-token wrapping, as an int64 array (M,)."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            return np.frombuffer(bytes(text), dtype=np.uint8).astype(np.int64) + NUM_SPECIAL_TOKENS
        if not isinstance(text, str):
            raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
        split = self.split_special_tokens if split_special_tokens is None else split_special_tokens
        pieces = [text] if split else self._special_re.split(text)
        # re.split with one capture group alternates plain text (even index) and special tokens (odd index).
        arrays = [
            np.array([self._token_to_id[piece]], dtype=np.int64)
            if i % 2
            else np.frombuffer(piece.encode("utf-8"), dtype=np.uint8).astype(np.int64) + NUM_SPECIAL_TOKENS
            for i, piece in enumerate(pieces)
            if piece
        ]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)

    def tokenize(self, text: TextInput, *, split_special_tokens: bool | None = None,
                 add_special_tokens: bool = False) -> list[str]:
        """Token strings: special names, or ``chr(byte)`` per UTF-8 byte (as transformers shows them)."""
        if add_special_tokens:
            raise ValueError("tokenize(add_special_tokens=True): transformers' Python tokenizers ignore it; use "
                             "convert_ids_to_tokens(encode(text)) for the wrapped tokens")
        return self.convert_ids_to_tokens(self.text_to_ids(text, split_special_tokens).tolist())

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> Any:
        """Special names to 0..5, one character ``c`` to ``ord(c) + 6``, anything else to None (no unk)."""
        if isinstance(tokens, str):
            if tokens in self._token_to_id:
                return self._token_to_id[tokens]
            return ord(tokens) + NUM_SPECIAL_TOKENS if len(tokens) == 1 else None
        return [self.convert_tokens_to_ids(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Any, skip_special_tokens: bool = False) -> Any:
        """Token strings of ids: special names, or ``chr(id - 6)`` (for every id >= 6, as transformers)."""
        if isinstance(ids, int):
            return self._id_tokens[ids] if 0 <= ids < NUM_SPECIAL_TOKENS else chr(ids - NUM_SPECIAL_TOKENS)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.convert_ids_to_tokens(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = b"".join(t.encode("utf-8") if t in self._token_to_id else bytes([ord(t)]) for t in tokens)
        return data.decode("utf-8", errors="replace")

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None
                                         ) -> list[int]:
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        return cls + list(token_ids_0) + sep + ([] if token_ids_1 is None else list(token_ids_1) + sep)

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("You should not supply a second sequence if the provided sequence of ids is "
                                 "already formatted with special tokens for the model.")
            special = set(self.all_special_ids)
            return [1 if int(i) in special else 0 for i in token_ids_0]
        mask = [1] + [0] * len(token_ids_0) + [1]
        return mask if token_ids_1 is None else mask + [0] * len(token_ids_1) + [1]

    def create_token_type_ids_from_sequences(self, token_ids_0: list[int], token_ids_1: list[int] | None = None
                                             ) -> list[int]:
        first = len(token_ids_0) + 2
        return [0] * first if token_ids_1 is None else [0] * first + [1] * (len(token_ids_1) + 1)

    def truncate_sequences(self, ids: list[int], pair_ids: list[int] | None = None, num_tokens_to_remove: int = 0,
                           truncation_strategy: Any = "longest_first", stride: int = 0) -> tuple:
        strategy = resolve_strategies(False, truncation_strategy, 1, None, 1).truncation
        pair = None if pair_ids is None else np.asarray(pair_ids, dtype=np.int64)
        a, b, overflow = truncate(np.asarray(ids, dtype=np.int64), pair, num_tokens_to_remove, strategy, stride,
                                  check_side("truncation_side", self.truncation_side))
        return a.tolist(), (None if b is None else b.tolist()), overflow.tolist()

    # ----------------------------------------------------------------------------------- decoding
    def decode(self, token_ids: Any, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> str | list[str]:
        """Text of one id sequence (list, array, tensor or int), or a list of texts for a batch (as in
        transformers 5). Invalid UTF-8 becomes U+FFFD."""
        reject_unexpected("PerceiverTokenizer.decode()", kwargs)
        ids = to_python(token_ids)
        if isinstance(ids, (list, tuple)) and ids and isinstance(ids[0], (list, tuple)):
            return [self._decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in ids]
        return self._decode(ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> list[str]:
        """Texts of a batch of id sequences (list of lists, (B, L) array or tensor)."""
        sequences = to_python(sequences)
        if len(sequences) == 0:
            return []
        result = self.decode(sequences, skip_special_tokens, clean_up_tokenization_spaces, **kwargs)
        return [result] if isinstance(result, str) else result

    def _decode(self, ids: Any, skip_special_tokens: bool, clean_up: bool | None) -> str:
        array = np.asarray([ids] if isinstance(ids, int) else ids, dtype=np.int64).reshape(-1)
        if skip_special_tokens:
            array = array[~np.isin(array, [i for i in self.all_special_ids if i is not None])]
        bad = (array < 0) | (array >= len(self))
        if bad.any():
            raise ValueError(f"id {array[bad][0]} is outside range(0, {len(self)})")
        is_special = array < NUM_SPECIAL_TOKENS
        if not is_special.any():
            data = (array - NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes()
        else:  # specials become their names; bytes on both sides are joined before UTF-8 decoding
            chunks, start = [], 0
            for pos in np.flatnonzero(is_special):
                chunks.append((array[start:pos] - NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes())
                chunks.append(self._id_bytes[int(array[pos])])
                start = pos + 1
            chunks.append((array[start:] - NUM_SPECIAL_TOKENS).astype(np.uint8).tobytes())
            data = b"".join(chunks)
        text = data.decode("utf-8", errors="replace")
        if self.clean_up_tokenization_spaces if clean_up is None else clean_up:
            text = self.clean_up_tokenization(text)
        return text

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """transformers' clean-up: no space before punctuation and English contractions."""
        for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                              (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(before, after)
        return text
