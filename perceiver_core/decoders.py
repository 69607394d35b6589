"""Decoders: build output queries (B, O, Fq), cross-attend them to the latents (B, N, D), give (B, O, F).

Every decoder has ``build_queries(pre, subsampled_points)`` and ``forward(queries, latents, need_weights)``
returning ``(outputs, attention probabilities or None)``, so queries can be built and decoded in chunks against
latents computed once (``PerceiverModel.decode``). ``subsampled_points`` are flat indices into the decoder's
output grid, shape (n,) shared by the batch or (B, n) per example.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttentionBlock, cross_qk_channels
from .position_encoding import FourierPositionEncoding, subsampled_positions
from .preprocessors import Preprocessed


class TrainableQueries(nn.Module):
    """A learned query table (num_queries, channels); subsampled points select rows."""

    def __init__(self, num_queries: int, channels: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(num_queries, channels) * 0.02)
        self.num_channels = channels
        self.num_outputs = num_queries

    def forward(self, batch_size: int, subsampled_points: torch.Tensor | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        table = self.table if dtype is None else self.table.to(dtype)
        if subsampled_points is None:
            return table.unsqueeze(0).expand(batch_size, -1, -1)
        if subsampled_points.ndim == 1:
            return table[subsampled_points].unsqueeze(0).expand(batch_size, -1, -1)
        return table[subsampled_points]  # (B, n, C)


class FourierQueries(nn.Module):
    """Fourier features of output positions over ``index_dims`` (all of them, or subsampled ones).

    All positions use ``-1 + 2 i / n`` so decoding everything at once equals decoding any chunking of it.
    """

    def __init__(self, index_dims: tuple[int, ...], encoding: FourierPositionEncoding) -> None:
        super().__init__()
        self.index_dims = tuple(index_dims)
        self.encoding = encoding
        self.num_channels = encoding.num_channels
        self.num_outputs = 1
        for n in self.index_dims:
            self.num_outputs *= n

    def forward(self, batch_size: int, subsampled_points: torch.Tensor | None = None,
                dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
        if subsampled_points is None:
            subsampled_points = torch.arange(self.num_outputs, device=device)
        features = self.encoding.encode(subsampled_positions(subsampled_points.to(device), self.index_dims))
        features = features.to(dtype)
        if features.ndim == 2:
            features = features.unsqueeze(0).expand(batch_size, -1, -1)
        return features


class CrossAttentionDecoder(nn.Module):
    """Queries (B, O, Fq) attend to latents (B, N, D) -> (B, O, output_channels or Fq)."""

    def __init__(self, *, query_channels: int, latent_channels: int, output_channels: int | None,
                 qk_channels: int | None = None, v_channels: int | None = None, num_heads: int = 1,
                 widening_factor: int = 1, query_residual: bool = False, shape_for_attention: str = "kv",
                 activation: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        qk = cross_qk_channels(qk_channels, query_channels, latent_channels, shape_for_attention)
        self.cross_attn = AttentionBlock(q_channels=query_channels, kv_channels=latent_channels, qk_channels=qk,
                                         v_channels=v_channels, num_heads=num_heads,
                                         widening_factor=widening_factor, query_residual=query_residual,
                                         activation=activation, dropout=dropout)
        self.output_proj = nn.Linear(query_channels, output_channels) if output_channels else None
        self.query_channels = query_channels
        self.gradient_checkpointing = False

    def forward(self, queries: torch.Tensor, latents: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.gradient_checkpointing and self.training and not need_weights:
            out, probs = checkpoint(self.cross_attn, queries, latents, None, False, use_reentrant=False)
        else:
            out, probs = self.cross_attn(queries, latents, None, need_weights)
        if self.output_proj is not None:
            out = self.output_proj(out)
        return out, probs


class QueryDecoder(nn.Module):
    """Learned or Fourier queries -> cross-attention (MLM, classification, audio/video autoencoding)."""

    def __init__(self, queries: TrainableQueries | FourierQueries, decoder: CrossAttentionDecoder) -> None:
        super().__init__()
        self.queries = queries
        self.decoder = decoder

    @property
    def num_outputs(self) -> int:
        return self.queries.num_outputs

    def build_queries(self, pre: Preprocessed, subsampled_points: torch.Tensor | None = None) -> torch.Tensor:
        b = pre.inputs.shape[0]
        if isinstance(self.queries, FourierQueries):
            return self.queries(b, subsampled_points, pre.inputs.dtype, pre.inputs.device)
        return self.queries(b, subsampled_points, pre.inputs.dtype)

    def forward(self, queries: torch.Tensor, latents: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decoder(queries, latents, need_weights)


class ClassificationDecoder(QueryDecoder):
    """One learned query -> logits (B, num_labels)."""

    def forward(self, queries: torch.Tensor, latents: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, probs = self.decoder(queries, latents, need_weights)
        return out[:, 0, :], probs


class OpticalFlowDecoder(nn.Module):
    """Queries are the encoder inputs (one per pixel); output flow (B, H, W, 2) in pixels (divided by 100)."""

    def __init__(self, decoder: CrossAttentionDecoder, rescale_factor: float = 100.0) -> None:
        super().__init__()
        self.decoder = decoder
        self.rescale_factor = rescale_factor

    def build_queries(self, pre: Preprocessed, subsampled_points: torch.Tensor | None = None) -> torch.Tensor:
        if subsampled_points is None:
            return pre.inputs
        if subsampled_points.ndim == 1:
            return pre.inputs[:, subsampled_points]
        return torch.gather(pre.inputs, 1, subsampled_points[..., None].expand(-1, -1, pre.inputs.shape[-1]))

    def forward(self, queries: torch.Tensor, latents: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, probs = self.decoder(queries, latents, need_weights)
        return out / self.rescale_factor, probs


class MultimodalDecoder(nn.Module):
    """Per-modality queries, each padded with a learned vector to a common width, concatenated in sorted
    modality order, decoded by one shared cross-attention. ``subsampled_points`` is a dict per modality."""

    def __init__(self, queries: dict[str, TrainableQueries | FourierQueries], decoder: CrossAttentionDecoder,
                 min_padding_size: int = 2) -> None:
        super().__init__()
        self.queries = nn.ModuleDict({name: queries[name] for name in sorted(queries)})
        common = max(q.num_channels for q in self.queries.values()) + min_padding_size
        if decoder.query_channels != common:
            raise ValueError(f"decoder query width {decoder.query_channels} != padded query width {common}")
        self.padding = nn.ModuleDict({name: _Padding(common - q.num_channels) for name, q in self.queries.items()})
        self.decoder = decoder

    @property
    def num_outputs(self) -> dict[str, int]:
        return {name: q.num_outputs for name, q in self.queries.items()}

    def output_sizes(self, subsampled_points: dict[str, torch.Tensor | None] | None) -> dict[str, int]:
        sizes = {}
        for name, q in self.queries.items():
            points = (subsampled_points or {}).get(name)
            if points is None:
                sizes[name] = q.num_outputs
            else:
                sizes[name] = points.shape[-1]
        return sizes

    def build_queries(self, pre: Preprocessed,
                      subsampled_points: dict[str, torch.Tensor | None] | None = None) -> torch.Tensor:
        b, dtype, device = pre.inputs.shape[0], pre.inputs.dtype, pre.inputs.device
        parts = []
        for name, q in self.queries.items():
            points = (subsampled_points or {}).get(name)
            if isinstance(q, FourierQueries):
                query = q(b, points, dtype, device)
            else:
                query = q(b, points, dtype)
            parts.append(self.padding[name](query))
        return torch.cat(parts, dim=1)

    def forward(self, queries: torch.Tensor, latents: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decoder(queries, latents, need_weights)


class _Padding(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.padding = nn.Parameter(torch.randn(1, channels) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return torch.cat([x, self.padding.to(x.dtype).expand(b, n, -1)], dim=-1)
