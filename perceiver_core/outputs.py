"""Output records with transformers' field names.

They behave like transformers' ``ModelOutput``: attribute access, ``out["logits"]``, and integer indexing /
unpacking over the fields that are set (so ``logits = model(...)[0]`` works as with ``return_dict=False``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch


class _Output:
    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def __getitem__(self, key: int | slice | str) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


@dataclass
class PerceiverModelOutput(_Output):
    logits: torch.Tensor | dict[str, torch.Tensor] | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class PerceiverMaskedLMOutput(_Output):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    last_hidden_state: torch.Tensor | None = None  # the latents (B, N, D); not in transformers' output


@dataclass
class PerceiverClassifierOutput(_Output):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | dict[str, torch.Tensor] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None
    last_hidden_state: torch.Tensor | None = None  # the latents (B, N, D); not in transformers' output
    losses: dict[str, torch.Tensor] | None = None  # per-modality losses (multimodal autoencoding)
