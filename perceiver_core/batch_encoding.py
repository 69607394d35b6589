"""The records our tokenizer and image processor return: ``BatchEncoding`` and ``BatchFeature``.

They behave like transformers' classes of the same names (both are ``collections.UserDict``s, not ``dict``
subclasses): key access, attribute access (``enc.input_ids``), ``.keys()/.items()``, ``.to(device)``,
``convert_to_tensors(...)``, pickling, and slicing a ``BatchEncoding`` (``enc[:2]``). The fast-tokenizer
alignment methods (``word_ids()``, ``tokens()``, ...) raise the ``ValueError`` transformers raises for its
Python tokenizers, since there is no Rust ``Encoding`` behind them.

One deliberate difference: converting a ragged list to ``"np"`` raises ``ValueError`` (transformers builds an
object array of arrays that no model accepts), the same as it does for ``"pt"``.
"""

from __future__ import annotations

import os
import warnings
from collections import UserDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

TENSOR_TYPES = ("pt", "np")


class UnsupportedOptionError(NotImplementedError):
    """A transformers keyword that only has a meaning inside transformers' own machinery."""


def save_folder(save_directory: str | os.PathLike, push_to_hub: bool = False) -> Path:
    """The folder a tokenizer's or image processor's ``save_pretrained`` writes to, created; transformers'
    refusals (a file in the way) and ours (no hub upload) first."""
    if push_to_hub:
        raise UnsupportedOptionError("save_pretrained(push_to_hub=True): upload with huggingface_hub instead")
    directory = Path(save_directory)
    if directory.is_file():
        raise ValueError(f"Provided path ({directory}) should be a directory, not a file")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def reject_unexpected(where: str, kwargs: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming every keyword in ``kwargs`` (transformers often swallows unknown ones)."""
    if kwargs:
        names = ", ".join(repr(k) for k in kwargs)
        raise TypeError(f"{where} got unexpected keyword argument(s) {names}")


def tensor_type(value: Any) -> str | None:
    """``None``, ``"pt"`` or ``"np"`` (transformers' ``TensorType`` members are ``str`` and pass too)."""
    if value is None:
        return None
    text = str(getattr(value, "value", value))
    if text not in TENSOR_TYPES:
        raise ValueError(f"{text} is not a valid TensorType, please select one of {list(TENSOR_TYPES)}")
    return text


_PLAIN = (int, float, bool, str, type(None))


def to_python(value: Any) -> Any:
    """Tensors, arrays and numpy scalars inside lists/tuples/dicts as plain Python values."""
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # torch.Tensor, without importing torch
        return value.detach().cpu().tolist()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if isinstance(value, list) and all(type(v) in _PLAIN for v in value):
            return value  # already plain (the common case, and the cost of decoding a megabyte of ids)
        return [to_python(v) for v in value]
    return value


def _is_empty(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and (not value or all(_is_empty(v) for v in value))


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def as_tensor(value: Any, kind: str) -> Any:
    """One value as a torch tensor (``"pt"``) or numpy array (``"np"``); ragged input raises ``ValueError``."""
    import torch

    if kind == "pt":
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return torch.stack(list(value))
        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], np.ndarray):
            return torch.from_numpy(np.array(value))
        return torch.tensor(value, dtype=torch.int64 if _is_empty(value) else None)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return torch.stack(list(value)).detach().cpu().numpy()
    return np.asarray(value, dtype=np.int64 if _is_empty(value) else None)


class _Record(UserDict):
    """Shared behaviour: attribute access to keys, pickling of the data only."""

    def __getattr__(self, item: str) -> Any:
        if item == "data" or item.startswith("__"):
            raise AttributeError(item)
        try:
            return self.data[item]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no key or attribute {item!r}") from None

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state.get("data", {})

    def _convert(self, kind: str | None, prepend_batch_axis: bool = False, skip: Any = ()) -> None:
        kind = tensor_type(kind)
        if kind is None:
            return
        for key, value in list(self.data.items()):
            if key in skip or not self._convertible(value):
                continue
            try:
                self.data[key] = as_tensor([value] if prepend_batch_axis else value, kind)
            except (ValueError, TypeError, RuntimeError) as err:
                what = "overflowing tokens of different lengths" if key == "overflowing_tokens" else (
                    f"`{key}`: sequences of different lengths or excessive nesting; activate padding and/or "
                    "truncation with padding=True truncation=True")
                raise ValueError(f"Unable to create tensor from {what} ({err})") from err

    @staticmethod
    def _convertible(value: Any) -> bool:
        return True


class BatchEncoding(_Record):
    """What the tokenizer returns: ``input_ids``, ``attention_mask``, ... as lists, arrays or tensors."""

    def __init__(self, data: Mapping[str, Any] | None = None, encoding: Any = None, tensor_type: Any = None,
                 prepend_batch_axis: bool = False, n_sequences: int | None = None) -> None:
        if encoding is not None:
            raise UnsupportedOptionError("BatchEncoding(encoding=...): there are no tokenizers.Encoding "
                                         "objects behind a Python byte tokenizer")
        super().__init__(data)
        self._n_sequences = n_sequences
        self._convert(tensor_type, prepend_batch_axis)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            return self.data[item]
        if isinstance(item, slice):
            return {key: value[item] for key, value in self.data.items()}
        raise KeyError("Invalid key. Only two types of key are available for a Python tokenizer's output: "
                       "(1) string, (2) slices for data subsetting (integers index tokenizers.Encoding objects "
                       "of fast tokenizers only).")

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data, "encodings": None, "n_sequences": self._n_sequences}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state.get("data", {})
        self._n_sequences = state.get("n_sequences")

    @property
    def n_sequences(self) -> int | None:
        return self.__dict__.get("_n_sequences")

    @property
    def is_fast(self) -> bool:
        return False

    @property
    def encodings(self) -> None:
        return None

    def convert_to_tensors(self, tensor_type: Any = None, prepend_batch_axis: bool = False) -> BatchEncoding:
        """Turn the lists into ``"pt"`` tensors or ``"np"`` arrays in place (as transformers does)."""
        self._convert(tensor_type, prepend_batch_axis)
        return self

    def to(self, device: Any, *, non_blocking: bool = False) -> BatchEncoding:
        """Move every tensor to ``device`` (in place, returns self). A dtype is refused with a warning, as in
        transformers: casting token ids to half precision would corrupt them."""
        import torch

        if isinstance(device, (str, int, torch.device)):
            self.data = {k: v.to(device=device, non_blocking=non_blocking) if hasattr(v, "to") else v
                         for k, v in self.data.items()}
        else:
            warnings.warn(f"Attempting to cast a BatchEncoding to type {device}. This is not supported.",
                          stacklevel=2)
        return self


def _fast_only(name: str):
    def method(self: BatchEncoding, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"{name}() is not available when using Python based tokenizers")

    method.__name__ = name
    method.__doc__ = f"transformers' fast-tokenizer alignment method ``{name}``: not available here."
    return method


for _name in ("tokens", "sequence_ids", "word_ids", "token_to_sequence", "token_to_word", "word_to_tokens",
              "token_to_chars", "char_to_token", "word_to_chars", "char_to_word"):
    setattr(BatchEncoding, _name, _fast_only(_name))


class BatchFeature(_Record):
    """What the image processor returns: ``pixel_values`` as a list of (3, H, W) tensors, a tensor or an array."""

    def __init__(self, data: Mapping[str, Any] | None = None, tensor_type: Any = None,
                 skip_tensor_conversion: Any = None) -> None:
        super().__init__(data)
        self.skip_tensor_conversion = skip_tensor_conversion
        self._convert(tensor_type, skip=skip_tensor_conversion or ())

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state.get("data", {})
        self.skip_tensor_conversion = None

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, str):
            return self.data[item]
        raise KeyError("Indexing with integers is not available when using Python based feature extractors")

    @staticmethod
    def _convertible(value: Any) -> bool:
        if isinstance(value, (np.ndarray, np.generic)) or _is_tensor(value):
            return True
        if isinstance(value, (list, tuple)) and value:
            return not isinstance(value[0], (str, dict)) and BatchFeature._convertible(value[0])
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def convert_to_tensors(self, tensor_type: Any = None, skip_tensor_conversion: Any = None) -> BatchFeature:
        skip = skip_tensor_conversion if skip_tensor_conversion is not None else self.skip_tensor_conversion
        self._convert(tensor_type, skip=skip or ())
        return self

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """``.to(device)``, ``.to(dtype)``, ``.to(device, dtype)``: dtypes apply to floating tensors only."""
        import torch

        device = kwargs.get("device")
        non_blocking = kwargs.get("non_blocking", False)
        if device is None and args:
            if isinstance(args[0], (str, int, torch.device)):
                device = args[0]
            elif not isinstance(args[0], torch.dtype):
                raise ValueError(f"Attempting to cast a BatchFeature to type {args[0]}. This is not supported.")

        def move(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and torch.is_floating_point(value):
                return value.to(*args, **kwargs)
            if isinstance(value, torch.Tensor) and device is not None:
                return value.to(device=device, non_blocking=non_blocking)
            if isinstance(value, (list, tuple)):
                return type(value)(move(v) for v in value)
            return value

        self.data = {k: move(v) for k, v in self.data.items()}
        return self
