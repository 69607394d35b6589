"""Postprocessors: decoder output (B, O, F) -> task output. Constructors take keyword arguments only."""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingDecoder(nn.Module):
    """MLM logits = hidden (B, O, d_model) @ token_embeddingᵀ + bias; the weight is the (tied) input embedding."""

    def __init__(self, *, vocab_size: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        return torch.matmul(hidden, embedding_weight.to(hidden.dtype).t()) + self.bias.to(hidden.dtype)


class ProjectionPostprocessor(nn.Module):
    """(B, O, F) -> (B, O, out_channels)."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ClassificationPostprocessor(ProjectionPostprocessor):
    """(B, 1, F) -> (B, num_labels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)[:, 0, :]


class AudioPostprocessor(ProjectionPostprocessor):
    """(B, O, F) -> (B, O * samples_per_patch) waveform samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).reshape(x.shape[0], -1)


class MultimodalPostprocessor(nn.Module):
    """Splits (B, O, F) into consecutive per-modality chunks (sorted names) and post-processes each."""

    def __init__(self, *, modalities: dict[str, nn.Module]) -> None:
        super().__init__()
        self.modalities = nn.ModuleDict({name: modalities[name] for name in sorted(modalities)})

    def forward(self, x: torch.Tensor, modality_sizes: dict[str, int]) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name in sorted(modality_sizes):
            size = modality_sizes[name]
            if size:
                out[name] = self.modalities[name](x[:, start:start + size])
            start += size
        return out
