"""Byte-level tokenizer of Perceiver IO, a drop-in for transformers' ``PerceiverTokenizer`` (5.x).

Id space (262 ids): six special tokens ``[PAD]=0 [BOS]=1 [EOS]=2 [MASK]=3 [CLS]=4 [SEP]=5``, then every
UTF-8 byte ``b`` as id ``b + 6``. A sequence is wrapped as ``[CLS] x [SEP]``, a pair as
``[CLS] a [SEP] b [SEP]`` (BOS/EOS are reserved and never inserted). The literal strings ``"[MASK]"`` etc.
inside a ``str`` become their special ids, as in transformers (unless ``split_special_tokens``); ``bytes``
input is taken byte for byte (no UTF-8 check, no special-token matching), which suits corpora with invalid
UTF-8 (transformers rejects ``bytes``).

The call, ``pad``, ``encode``, ``decode`` and conversion methods follow transformers' signatures, defaults
and return conventions (see ``tokenizer_rules`` for padding/truncation); the returned ``BatchEncoding`` has
attribute access and ``.to(device)``. Encoding is vectorised with numpy (one ``np.frombuffer`` per
special-token-free span), so megabyte documents are fast.

Deliberately different from transformers: unknown call keywords raise ``TypeError`` (transformers ignores
them) and ``return_offsets_mapping=True`` raises (it needs a fast tokenizer; transformers silently returns
nothing); a batch where only some examples overflow gets ``[]`` / 0 for the others (transformers fails an
assert); ``from_pretrained(pad_token="<new>")`` renaming a stored special token raises (transformers adds
id 262, past the model's embedding); ``save_pretrained`` also writes ``special_tokens_map.json`` and returns
only the files it wrote; ``pad([])`` raises ``ValueError``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sized
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import tokenizer_files as files
from .batch_encoding import (
    BatchEncoding,
    UnsupportedOptionError,
    reject_unexpected,
    save_folder,
    tensor_type,
    to_python,
)
from .tokenizer_rules import (
    TEXT_TYPES,
    VERY_LARGE_INTEGER,
    Strategies,
    check_side,
    is_batched,
    key_order,
    pad_array,
    pad_list,
    pad_target,
    resolve_strategies,
    round_up,
    split_pair,
    to_output,
    truncate,
)
from .tokenizer_vocab import (
    DEFAULT_SPECIAL_TOKENS,
    NUM_BYTES,
    NUM_SPECIAL_TOKENS,
    SPECIAL_ROLES,
    SPECIAL_TOKENS_MAP_NAME,
    TOKENIZER_CONFIG_NAME,
    ByteVocabulary,
    TextInput,
)

__all__ = ["DEFAULT_SPECIAL_TOKENS", "NUM_BYTES", "NUM_SPECIAL_TOKENS", "SPECIAL_ROLES", "PerceiverTokenizer",
           "TextInput"]

@dataclass(frozen=True)
class _Options:
    """One call's resolved settings."""

    add_special_tokens: bool
    strategies: Strategies
    stride: int
    is_split_into_words: bool
    pad_to_multiple_of: int | None
    padding_side: str
    return_tensors: str | None
    return_token_type_ids: bool
    return_attention_mask: bool
    return_overflowing_tokens: bool
    return_special_tokens_mask: bool
    return_length: bool
    split_special_tokens: bool


class PerceiverTokenizer(ByteVocabulary):
    """UTF-8 bytes to ids in ``range(262)``; see the module docstring for the id layout."""

    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    truncation_side = "right"
    pad_token_type_id = 0
    is_fast = False
    vocab_files_names: dict[str, str] = {}

    def __init__(self, pad_token: Any = "[PAD]", bos_token: Any = "[BOS]", eos_token: Any = "[EOS]",
                 mask_token: Any = "[MASK]", cls_token: Any = "[CLS]", sep_token: Any = "[SEP]",
                 model_max_length: int | None = 2048, *, padding_side: str = "right",
                 truncation_side: str = "right", clean_up_tokenization_spaces: bool = False,
                 split_special_tokens: bool = False, model_input_names: list[str] | None = None,
                 name_or_path: str = "", unk_token: Any = None, verbose: bool = False, **kwargs: Any) -> None:
        for key in kwargs:
            if callable(getattr(type(self), key, None)):
                raise AttributeError(f"{key} conflicts with the method {key} in {type(self).__name__}")
        given = [files.token_text(t) for t in (pad_token, bos_token, eos_token, mask_token, cls_token, sep_token)]
        # A role set to None keeps its id's default name (transformers leaves the role unset). A stored
        # added_tokens_decoder names the ids itself; the roles may then point at any of them.
        id_tokens = tuple(d if t is None else t for t, d in zip(given, DEFAULT_SPECIAL_TOKENS))
        decoder = kwargs.pop("added_tokens_decoder", None)
        if decoder:
            id_tokens = files.decoder_tokens(decoder, id_tokens, "added_tokens_decoder")
        if len(set(id_tokens)) != NUM_SPECIAL_TOKENS or not all(isinstance(t, str) and t for t in id_tokens):
            raise ValueError(f"special tokens must be distinct non-empty strings, got {id_tokens}")
        self._id_tokens: tuple[str, ...] = id_tokens
        self._id_bytes = [t.encode("utf-8") for t in id_tokens]
        self._token_to_id = {t: i for i, t in enumerate(id_tokens)}
        alternatives = sorted(id_tokens, key=len, reverse=True)  # longest first: no prefix shadows a token
        self._special_re = re.compile("(" + "|".join(re.escape(t) for t in alternatives) + ")")
        self._roles: dict[str, str | None] = {"unk_token": None}
        for role, token in zip(SPECIAL_ROLES, given):
            self._set_role(role, token)
        self._set_role("unk_token", files.token_text(unk_token))
        model_max_length = kwargs.pop("max_len", model_max_length)
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        if self.model_max_length < 1:
            raise ValueError(f"model_max_length must be positive, got {model_max_length}")
        self.padding_side = check_side("padding_side", padding_side)
        self.truncation_side = check_side("truncation_side", truncation_side)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        self.split_special_tokens = bool(split_special_tokens)
        self.model_input_names = list(model_input_names or type(self).model_input_names)
        self.name_or_path = str(name_or_path)
        self.verbose = verbose
        self._extra = self._check_extra_kwargs(kwargs)
        self.init_kwargs = {**dict(zip(SPECIAL_ROLES, given)), "model_max_length": self.model_max_length,
                            "padding_side": padding_side, "truncation_side": truncation_side, **self._extra,
                            "name_or_path": self.name_or_path}

    def _check_extra_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Keep unknown keys (as transformers does); refuse what would add ids or need a chat template."""
        extra = {}
        for key, value in kwargs.items():
            if key in files.BOOKKEEPING_KEYS:
                continue
            elif key in ("extra_special_tokens", "additional_special_tokens", "model_specific_special_tokens"):
                if value:
                    raise ValueError(f"{key}={value!r}: extra special tokens would need ids beyond the fixed 262")
            elif key == "chat_template":
                if value:
                    raise UnsupportedOptionError("chat_template: chat templates are not supported")
            elif key.endswith("_token") and isinstance(files.token_text(value), str):
                raise ValueError(f"{key}={value!r}: extra named special tokens are not supported")
            else:
                extra[key] = value
        return extra

    # ----------------------------------------------------------------------------------- encoding
    def __call__(self, text: Any = None, text_pair: Any = None, text_target: Any = None,
                 text_pair_target: Any = None, add_special_tokens: bool = True, padding: Any = False,
                 truncation: Any = None, max_length: int | None = None, stride: int = 0,
                 is_split_into_words: bool = False, pad_to_multiple_of: int | None = None,
                 padding_side: str | None = None, return_tensors: Any = None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                 tokenizer_kwargs: dict[str, Any] | None = None, split_special_tokens: bool | None = None,
                 max_target_length: int | None = None, **kwargs: Any) -> BatchEncoding:
        """Encode one text, a pair, a batch, or a batch of ``(text, pair)`` tuples, like transformers.

        Values are lists (one text: flat lists), or (B, L) arrays/tensors with ``return_tensors``. ``text``
        may also be pre-split words (``is_split_into_words=True``), token strings or ids; ``text_target``
        adds ``labels``.
        """
        opts = {k: v for k, v in locals().items() if k not in ("self", "text", "text_pair", "text_target",
                                                                 "text_pair_target", "tokenizer_kwargs", "kwargs")}
        extra = {**(tokenizer_kwargs or {}), **kwargs}  # transformers: these override the named keywords
        reject_unexpected("PerceiverTokenizer.__call__()", {k: v for k, v in extra.items() if k not in opts})
        opts.update(extra)
        if opts.pop("return_offsets_mapping"):
            raise UnsupportedOptionError("return_offsets_mapping=True needs a fast (Rust) tokenizer; transformers' "
                                         "PerceiverTokenizer has none (it silently returns no offsets)")
        if text is None and text_target is None:
            raise ValueError("You need to specify either `text` or `text_target`.")
        target_length = opts.pop("max_target_length")
        encodings = self._encode(text, text_pair, **opts) if text is not None else None
        if text_target is None:
            return encodings
        if target_length is not None:
            opts["max_length"] = target_length
        targets = self._encode(text_target, text_pair_target, **opts)
        if encodings is None:
            return targets
        encodings["labels"] = targets["input_ids"]
        return encodings

    def _options(self, *, add_special_tokens: bool, padding: Any, truncation: Any, max_length: int | None,
                 stride: int, is_split_into_words: bool, pad_to_multiple_of: int | None, padding_side: str | None,
                 return_tensors: Any, return_token_type_ids: bool | None, return_attention_mask: bool | None,
                 return_overflowing_tokens: bool, return_special_tokens_mask: bool, return_length: bool,
                 verbose: bool, split_special_tokens: bool | None) -> _Options:
        strategies = resolve_strategies(padding, truncation, max_length, pad_to_multiple_of, self.model_max_length,
                                        verbose)
        if strategies.padding != "do_not_pad":
            self._require_pad_token()
        return _Options(
            bool(add_special_tokens), strategies, int(stride), bool(is_split_into_words), pad_to_multiple_of,
            padding_side or self.padding_side, tensor_type(return_tensors),
            "token_type_ids" in self.model_input_names if return_token_type_ids is None else return_token_type_ids,
            "attention_mask" in self.model_input_names if return_attention_mask is None else return_attention_mask,
            bool(return_overflowing_tokens), bool(return_special_tokens_mask), bool(return_length),
            self.split_special_tokens if split_special_tokens is None else bool(split_special_tokens))

    def _require_pad_token(self) -> None:
        if self.pad_token is None or self.pad_token_id is None or self.pad_token_id < 0:
            raise ValueError("Asking to pad but the tokenizer does not have a padding token.")

    def _encode(self, text: Any, pair: Any, **kwargs: Any) -> BatchEncoding:
        o = self._options(**kwargs)
        if not is_batched(text, o.is_split_into_words):
            first = self._input_ids(text, o)
            row = self._prepare(first, None if pair is None else self._input_ids(pair, o), o)
            target = pad_target(o.strategies.padding, o.strategies.max_length, [len(row["input_ids"])],
                                o.pad_to_multiple_of)
            if o.strategies.padding != "do_not_pad" or o.return_attention_mask:
                self._pad_row(row, target, o.padding_side, o.return_attention_mask)
            if o.return_length:
                row["length"] = len(row["input_ids"])
            return BatchEncoding(to_output({k: [v] for k, v in row.items()}, o.return_tensors, single=True))
        if pair is not None and (not isinstance(pair, (list, tuple)) or len(pair) != len(text)):
            raise ValueError("If `text` is a batch, `text_pair` must also be a batch of the same length.")
        rows = []
        for first, second in zip(text, pair if pair is not None else [None] * len(text)):
            first, second = split_pair(first, second, o.is_split_into_words)
            rows.append(self._prepare(self._input_ids(first, o),
                                      None if second is None else self._input_ids(second, o), o))
            if o.return_length:
                rows[-1]["length"] = len(rows[-1]["input_ids"])
        if not rows:
            raise ValueError("You should supply an encoding or a list of encodings to this method that includes "
                             "input_ids, but you provided []")
        if any("overflowing_tokens" in row for row in rows):  # transformers fails on a mixed batch
            for row in rows:
                row.setdefault("overflowing_tokens", row["input_ids"][:0])
                row.setdefault("num_truncated_tokens", 0)
        target = pad_target(o.strategies.padding, o.strategies.max_length, [len(r["input_ids"]) for r in rows],
                            o.pad_to_multiple_of)
        for row in rows:
            self._pad_row(row, target, o.padding_side, o.return_attention_mask)
        columns = {key: [row[key] for row in rows] for key in key_order(rows)}
        return BatchEncoding(to_output(columns, o.return_tensors, single=False))

    def _input_ids(self, text: Any, o: _Options) -> np.ndarray:
        """transformers' ``get_input_ids``: a text, pre-split words, token strings or ids -> ids (M,)."""
        if isinstance(text, TEXT_TYPES):
            return self.text_to_ids(text, o.split_special_tokens)
        if isinstance(text, (list, tuple)) and text:
            if isinstance(text[0], (int, np.integer)):
                return np.asarray(text, dtype=np.int64)
            if isinstance(text[0], TEXT_TYPES):
                if o.is_split_into_words:
                    return np.concatenate([self.text_to_ids(word, o.split_special_tokens) for word in text])
                ids = self.convert_tokens_to_ids(list(text))
                if None in ids:
                    raise ValueError(f"token {text[ids.index(None)]!r} has no id (a token is one character or a "
                                     "special token name; pass is_split_into_words=True for words)")
                return np.asarray(ids, dtype=np.int64)
        raise ValueError(f"Input must be a string, list of strings, or list of ints, got: {type(text)}")

    def _prepare(self, ids: np.ndarray, pair: np.ndarray | None, o: _Options) -> dict[str, Any]:
        """transformers' ``prepare_for_model`` without padding: truncate, add special tokens, masks."""
        s = o.strategies
        if o.return_overflowing_tokens and s.truncation == "longest_first" and pair is not None:
            raise ValueError("Not possible to return overflowing tokens for pair of sequences with the "
                             "`longest_first`. Please select another truncation strategy than `longest_first`, "
                             "for instance `only_second` or `only_first`.")
        num_special = (2 if pair is None else 3) if o.add_special_tokens else 0
        total = len(ids) + (0 if pair is None else len(pair)) + num_special
        overflow = ids[:0]
        if s.truncation != "do_not_truncate" and s.max_length and total > s.max_length:
            ids, pair, overflow = truncate(ids, pair, total - s.max_length, s.truncation, o.stride,
                                           check_side("truncation_side", self.truncation_side))
        if o.add_special_tokens:
            cls, sep = np.array([self.cls_token_id]), np.array([self.sep_token_id])
            sequence = np.concatenate([cls, ids, sep] + ([] if pair is None else [pair, sep])).astype(np.int64)
            types, special = np.zeros(len(sequence), np.int64), np.zeros(len(sequence), np.int64)
            special[[0, len(ids) + 1, len(sequence) - 1]] = 1  # only inserted positions, not typed "[SEP]"
            if pair is not None:
                types[len(ids) + 2:] = 1
        else:
            sequence = ids if pair is None else np.concatenate([ids, pair])
            types = special = np.zeros(len(sequence), np.int64)
        row: dict[str, Any] = {"input_ids": sequence}
        if o.return_token_type_ids:
            row["token_type_ids"] = types
        if o.return_special_tokens_mask:
            row["special_tokens_mask"] = special
        if o.return_overflowing_tokens and not o.return_tensors and len(overflow):
            row["overflowing_tokens"] = overflow
            row["num_truncated_tokens"] = total - s.max_length
        return row

    def _pad_row(self, row: dict[str, Any], target: int | None, side: str, attention_mask: bool) -> None:
        length = len(row["input_ids"])
        if attention_mask:
            row["attention_mask"] = np.ones(length, dtype=np.int64)
        if target is None or length >= target:
            return
        side = check_side("padding_side", side)
        fills = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": self.pad_token_type_id,
                 "special_tokens_mask": 1}
        for key, fill in fills.items():
            if key in row:
                row[key] = pad_array(row[key], target, fill, side)

    def encode(self, text: Any, text_pair: Any = None, add_special_tokens: bool = True, padding: Any = False,
               truncation: Any = None, max_length: int | None = None, stride: int = 0,
               padding_side: str | None = None, return_tensors: Any = None, **kwargs: Any) -> Any:
        """``input_ids`` of ``__call__`` (a list; a (1, L) tensor/array with ``return_tensors``)."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding, truncation=truncation,
                    max_length=max_length, stride=stride, padding_side=padding_side, return_tensors=return_tensors,
                    **kwargs)["input_ids"]

    def batch_encode(self, texts: Any, **kwargs: Any) -> BatchEncoding:
        """``__call__`` on a list of texts (kept for callers that want the batch spelled out)."""
        if isinstance(texts, TEXT_TYPES):
            raise TypeError("batch_encode takes a list of texts; use encode or __call__ for one text")
        return self(list(texts), **kwargs)

    # ----------------------------------------------------------------------------------- padding
    def pad(self, encoded_inputs: Any, padding: Any = True, max_length: int | None = None,
            pad_to_multiple_of: int | None = None, padding_side: str | None = None,
            return_attention_mask: bool | None = None, return_tensors: Any = None, verbose: bool = True) -> Any:
        """Pad encoded examples (what ``DataCollatorWithPadding`` calls): a list of dicts, a dict of lists or
        one example; lists, arrays or tensors. Other keys (``label``...) are carried along and converted."""
        if isinstance(encoded_inputs, (list, tuple)):
            if not encoded_inputs:
                raise ValueError("pad() got an empty list of examples")
            if isinstance(encoded_inputs[0], Mapping):
                encoded_inputs = {key: [ex[key] for ex in encoded_inputs] for key in encoded_inputs[0].keys()}
        main = self.model_input_names[0]
        if not isinstance(encoded_inputs, Mapping) or main not in encoded_inputs:
            given = list(encoded_inputs.keys()) if isinstance(encoded_inputs, Mapping) else type(encoded_inputs)
            raise ValueError("You should supply an encoding or a list of encodings to this method that includes "
                             f"{main}, but you provided {given}")
        required = encoded_inputs[main]
        if required is None or (isinstance(required, Sized) and len(required) == 0):
            if return_attention_mask:
                encoded_inputs["attention_mask"] = []
            return encoded_inputs
        first = required[0]
        if isinstance(first, (list, tuple)):
            first = next((item[0] for item in required if len(item)), first)
        if not isinstance(first, (int, list, tuple)):
            if hasattr(first, "detach"):
                return_tensors = "pt" if return_tensors is None else return_tensors
            elif isinstance(first, np.ndarray):
                return_tensors = "np" if return_tensors is None else return_tensors
            elif not isinstance(first, np.integer):
                raise ValueError(f"type of {first} unknown: {type(first)}. Should be one of a python, numpy, or "
                                 "pytorch object.")
        inputs = {key: to_python(value) for key, value in encoded_inputs.items()}
        strategies = resolve_strategies(padding, None, max_length, None, self.model_max_length, verbose)
        if strategies.padding != "do_not_pad":
            self._require_pad_token()
        pad_args = (strategies.padding, strategies.max_length, pad_to_multiple_of, padding_side, return_attention_mask)
        required = inputs[main]
        if not isinstance(required[0], (list, tuple)):
            return BatchEncoding(self._pad_example(inputs, *pad_args), tensor_type=return_tensors)
        sizes = {key: len(value) for key, value in inputs.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Some items in the output dictionary have a different batch size than others: {sizes}")
        strategy, length = strategies.padding, strategies.max_length
        if strategy == "longest":
            strategy, length = "max_length", max(len(ids) for ids in required)
        batch: dict[str, list] = {}
        for i in range(len(required)):
            example = self._pad_example({k: v[i] for k, v in inputs.items()}, strategy, length, *pad_args[2:])
            for key, value in example.items():
                batch.setdefault(key, []).append(value)
        return BatchEncoding(batch, tensor_type=return_tensors)

    def _pad_example(self, inputs: dict[str, Any], strategy: str, max_length: int | None, multiple: int | None,
                     side: str | None, attention_mask: bool | None) -> dict[str, Any]:
        """transformers' ``_pad`` on one example of plain lists."""
        if attention_mask is None:
            attention_mask = "attention_mask" in self.model_input_names
        main = self.model_input_names[0]
        required = inputs[main]
        if strategy == "longest":
            max_length = len(required)
        if max_length is not None:
            max_length = round_up(max_length, multiple)
        if attention_mask and "attention_mask" not in inputs:
            inputs["attention_mask"] = [1] * len(required)
        if strategy == "do_not_pad" or len(required) == max_length:
            return inputs
        side = check_side("padding_side", side or self.padding_side)
        if attention_mask:
            inputs["attention_mask"] = pad_list(inputs["attention_mask"], max_length, 0, side)
        if "token_type_ids" in inputs:
            inputs["token_type_ids"] = pad_list(inputs["token_type_ids"], max_length, self.pad_token_type_id, side)
        if "special_tokens_mask" in inputs:
            inputs["special_tokens_mask"] = pad_list(inputs["special_tokens_mask"], max_length, 1, side)
        inputs[main] = pad_list(required, max_length, self.pad_token_id, side)
        return inputs

    # ----------------------------------------------------------------------------------- files
    def save_pretrained(self, save_directory: str | os.PathLike, legacy_format: bool | None = None,
                        filename_prefix: str | None = None, push_to_hub: bool = False, **kwargs: Any
                        ) -> tuple[str, ...]:
        """Write ``tokenizer_config.json`` (transformers 5 layout) and ``special_tokens_map.json`` (read by
        older transformers); returns the paths written."""
        reject_unexpected("PerceiverTokenizer.save_pretrained()", kwargs)
        directory = save_folder(save_directory, push_to_hub)
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        settings = {"model_max_length": self.model_max_length, "padding_side": self.padding_side,
                    "truncation_side": self.truncation_side}
        if self.clean_up_tokenization_spaces:
            settings["clean_up_tokenization_spaces"] = True
        if self.split_special_tokens:
            settings["split_special_tokens"] = True
        if self.model_input_names != type(self).model_input_names:
            settings["model_input_names"] = self.model_input_names
        roles = {role: self._roles[role] for role in SPECIAL_ROLES}
        config = files.tokenizer_config(self._id_tokens, roles, settings, self._extra)
        special_map = self.special_tokens_map
        return (files.write_json(directory / f"{prefix}{TOKENIZER_CONFIG_NAME}", config),
                files.write_json(directory / f"{prefix}{SPECIAL_TOKENS_MAP_NAME}", special_map))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *init_inputs: Any,
                        cache_dir: str | os.PathLike | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None, revision: str = "main",
                        subfolder: str = "", trust_remote_code: bool = False, use_fast: bool | None = None,
                        **kwargs: Any) -> PerceiverTokenizer:
        """Load from a local folder or a hub id (huggingface_hub cache, ``HF_HUB_OFFLINE``); keywords override
        the stored settings (``model_max_length``, ``padding_side``, ``truncation_side``...), unknown ones are
        kept in ``init_kwargs``. ``trust_remote_code`` / ``use_fast`` are accepted: there is one implementation."""
        from .hub import resolve_pretrained

        if init_inputs:
            raise TypeError("PerceiverTokenizer.from_pretrained() takes the path or hub id as its only positional "
                            "argument")
        for name in ("proxies", "gguf_file", "_from_pipeline"):
            if kwargs.get(name):
                raise UnsupportedOptionError(f"from_pretrained({name}=...) is not supported")
            kwargs.pop(name, None)
        folder = resolve_pretrained(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_files_only, token=token, subfolder=subfolder,
                                    force_download=force_download)
        stored = files.read_tokenizer_files(folder)
        files.check_overrides(stored, kwargs, SPECIAL_ROLES)
        merged = {**{k: v for k, v in stored.items() if k not in files.BOOKKEEPING_KEYS}, **kwargs}
        merged["name_or_path"] = os.fspath(pretrained_model_name_or_path)
        return cls(**merged)
