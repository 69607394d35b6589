"""Output records with transformers' field names, behaving as transformers' ``ModelOutput``.

A record is a ``dict`` of its fields that are set (not None), in field order, and also a dataclass with
attribute access: ``"logits" in out``, ``for key in out``, ``out.keys()/.values()/.items()``, ``out["logits"]``
(``KeyError`` when unset), ``out[0]`` / unpacking through ``to_tuple()``, ``len(out)``. Code written for
transformers (``Trainer``'s ``outputs["loss"] if isinstance(outputs, dict) else outputs[0]``) sees the same.

Our additions (the latents as ``last_hidden_state`` on the heads, per-modality ``losses``) are *extra* fields:
attributes only, never keys, so ``to_tuple()`` and therefore ``return_dict=False`` give exactly transformers'
tuple.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

_EXTRA = {"extra": True}  # field metadata: an attribute of ours, not one of transformers' keys


def extra_field() -> Any:
    """A field that is an attribute only (not a key, not in ``to_tuple()``)."""
    return dataclasses.field(default=None, metadata=_EXTRA)


class OutputRecord(dict):
    """Base of the output dataclasses: the set transformers fields are the dict's items (see module doc)."""

    @classmethod
    def _key_fields(cls) -> tuple[str, ...]:
        keys = cls.__dict__.get("_keys")
        if keys is None:
            keys = tuple(f.name for f in dataclasses.fields(cls) if not f.metadata.get("extra"))
            cls._keys = keys
        return keys

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in self._key_fields():
            if value is None:
                dict.pop(self, name, None)
            else:
                dict.__setitem__(self, name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._key_fields():
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return self.to_tuple()[key]

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"cannot delete from a {type(self).__name__}; set the field to None instead")

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"a {type(self).__name__} is changed through its fields only")

    pop = popitem = setdefault = update = clear = _refuse  # type: ignore[assignment]

    def __reduce__(self):
        # pickling / copy: rebuild through the dataclass constructor (dict's own reduce would skip it)
        return type(self), tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def to_tuple(self) -> tuple[Any, ...]:
        """The set transformers fields in order: what ``return_dict=False`` returns."""
        return tuple(self.values())


@dataclass(eq=False)
class PerceiverModelOutput(OutputRecord):
    logits: torch.Tensor | dict[str, torch.Tensor] | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass(eq=False)
class PerceiverMaskedLMOutput(OutputRecord):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    last_hidden_state: torch.Tensor | None = extra_field()  # the latents (B, N, D); not in transformers' output


@dataclass(eq=False)
class PerceiverClassifierOutput(OutputRecord):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    last_hidden_state: torch.Tensor | None = extra_field()  # the latents (B, N, D); not in transformers' output
    losses: dict[str, torch.Tensor] | None = extra_field()  # per-modality losses (multimodal autoencoding)
