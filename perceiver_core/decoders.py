"""Decoders: build output queries (B, O, Fq), cross-attend them to the latents (B, N, D), give (B, O, F).

The contract ``PerceiverModel`` relies on (it never names a decoder class or a modality): every decoder has

    decode(latents, pre, points=None, chunk_size=None, *, need_weights=False, postprocessor=None)
        -> (output, attention probabilities or None)

which builds the queries for ``points`` from the preprocessed inputs ``pre``, decodes them ``chunk_size`` at a
time against latents computed once (chunked output equals unchunked output; ``need_weights`` decodes in one
piece) and applies ``postprocessor`` (the model's output postprocessor) the way this decoder's output needs.
``points`` are flat indices into the decoder's output grid, shape (n,) shared by the batch or (B, n) per example;
a dict of them per modality for ``MultimodalDecoder``.

Query providers share one call too: ``queries(pre, points) -> (B, O, Fq)`` in ``pre.inputs``' dtype and device
(``TrainableQueries``, ``FourierQueries``, ``InputQueries``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttentionBlock, cross_qk_channels
from .position_encoding import FourierPositionEncoding, subsampled_positions
from .preprocessors import ModalityPadding, Preprocessed


class TrainableQueries(nn.Module):
    """A learned query table (num_queries, channels); points select rows."""

    def __init__(self, *, num_queries: int, channels: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(num_queries, channels) * 0.02)
        self.num_channels = channels
        self.num_outputs = num_queries

    def forward(self, pre: Preprocessed, points: torch.Tensor | None = None) -> torch.Tensor:
        batch_size = pre.inputs.shape[0]
        table = self.table.to(pre.inputs.dtype)
        if points is None:
            return table.unsqueeze(0).expand(batch_size, -1, -1)
        if points.ndim == 1:
            return table[points].unsqueeze(0).expand(batch_size, -1, -1)
        return table[points]  # (B, n, C)


class FourierQueries(nn.Module):
    """Fourier features of output positions over ``index_dims`` (all of them, or the given points).

    All positions use ``-1 + 2 i / n`` so decoding everything at once equals decoding any chunking of it.
    """

    def __init__(self, *, index_dims: tuple[int, ...], encoding: FourierPositionEncoding) -> None:
        super().__init__()
        self.index_dims = tuple(index_dims)
        self.encoding = encoding
        self.num_channels = encoding.num_channels
        self.num_outputs = 1
        for n in self.index_dims:
            self.num_outputs *= n

    def forward(self, pre: Preprocessed, points: torch.Tensor | None = None) -> torch.Tensor:
        batch_size, device = pre.inputs.shape[0], pre.inputs.device
        if points is None:
            points = torch.arange(self.num_outputs, device=device)
        features = self.encoding.encode(subsampled_positions(points.to(device), self.index_dims))
        features = features.to(pre.inputs.dtype)
        if features.ndim == 2:
            features = features.unsqueeze(0).expand(batch_size, -1, -1)
        return features


class InputQueries(nn.Module):
    """The encoder inputs themselves are the queries (optical flow: one per pixel); points select positions."""

    num_outputs = None  # as many as the inputs

    def forward(self, pre: Preprocessed, points: torch.Tensor | None = None) -> torch.Tensor:
        if points is None:
            return pre.inputs
        if points.ndim == 1:
            return pre.inputs[:, points]
        return torch.gather(pre.inputs, 1, points[..., None].expand(-1, -1, pre.inputs.shape[-1]))


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


def _decode_chunks(decoder: nn.Module, queries: torch.Tensor, latents: torch.Tensor, chunk_size: int | None,
                   need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``decoder(queries, latents)`` in one piece, or ``chunk_size`` queries at a time (no weights then)."""
    if chunk_size is None or queries.shape[1] <= chunk_size or need_weights:
        return decoder(queries, latents, need_weights)
    return torch.cat([decoder(q, latents)[0] for q in queries.split(chunk_size, dim=1)], dim=1), None


class QueryDecoder(nn.Module):
    """One query provider -> cross-attention -> ``finish`` (MLM, audio/video autoencoding; the base of the
    classification and optical-flow decoders)."""

    def __init__(self, *, queries: nn.Module, decoder: CrossAttentionDecoder) -> None:
        super().__init__()
        self.queries = queries
        self.decoder = decoder

    @property
    def num_outputs(self) -> int | None:
        return self.queries.num_outputs

    def build_queries(self, pre: Preprocessed, points: torch.Tensor | None = None) -> torch.Tensor:
        return self.queries(pre, points)

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder's own last step on the cross-attention output (B, O, F)."""
        return out

    def forward(self, queries: torch.Tensor, latents: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, probs = self.decoder(queries, latents, need_weights)
        return self.finish(out), probs

    def decode(self, latents: torch.Tensor, pre: Preprocessed, points: torch.Tensor | None = None,
               chunk_size: int | None = None, *, need_weights: bool = False,
               postprocessor: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, probs = _decode_chunks(self, self.build_queries(pre, points), latents, chunk_size, need_weights)
        return (out if postprocessor is None else postprocessor(out)), probs


class ClassificationDecoder(QueryDecoder):
    """One learned query -> logits (B, num_labels)."""

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        return out[:, 0, :]


class OpticalFlowDecoder(QueryDecoder):
    """Queries are the encoder inputs (one per pixel); output flow (B, H W, 2) in pixels (divided by 100)."""

    def __init__(self, *, decoder: CrossAttentionDecoder, rescale_factor: float = 100.0) -> None:
        super().__init__(queries=InputQueries(), decoder=decoder)
        self.rescale_factor = rescale_factor

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        return out / self.rescale_factor


class MultimodalDecoder(nn.Module):
    """Per-modality queries, each padded with a learned vector to a common width, concatenated in sorted
    modality order, decoded by one shared cross-attention. ``points`` is a dict per modality; the
    postprocessor is called as ``postprocessor(out, sizes)`` and returns a dict per modality."""

    def __init__(self, *, queries: dict[str, TrainableQueries | FourierQueries], decoder: CrossAttentionDecoder,
                 min_padding_size: int = 2) -> None:
        super().__init__()
        self.queries = nn.ModuleDict({name: queries[name] for name in sorted(queries)})
        common = max(q.num_channels for q in self.queries.values()) + min_padding_size
        if decoder.query_channels != common:
            raise ValueError(f"decoder query width {decoder.query_channels} != padded query width {common}")
        self.padding = nn.ModuleDict({name: ModalityPadding(pad_channels=common - q.num_channels,
                                                            total_channels=common)
                                      for name, q in self.queries.items()})
        self.decoder = decoder

    @property
    def num_outputs(self) -> dict[str, int]:
        return {name: q.num_outputs for name, q in self.queries.items()}

    def output_sizes(self, points: dict[str, torch.Tensor | None] | None) -> dict[str, int]:
        sizes = {}
        for name, q in self.queries.items():
            chosen = (points or {}).get(name)
            sizes[name] = q.num_outputs if chosen is None else chosen.shape[-1]
        return sizes

    def build_queries(self, pre: Preprocessed, points: dict[str, torch.Tensor | None] | None = None) -> torch.Tensor:
        parts = [self.padding[name](q(pre, (points or {}).get(name))) for name, q in self.queries.items()]
        return torch.cat(parts, dim=1)

    def forward(self, queries: torch.Tensor, latents: torch.Tensor,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decoder(queries, latents, need_weights)

    def decode(self, latents: torch.Tensor, pre: Preprocessed, points: dict[str, torch.Tensor | None] | None = None,
               chunk_size: int | None = None, *, need_weights: bool = False,
               postprocessor: nn.Module | None = None) -> tuple[torch.Tensor | dict[str, torch.Tensor],
                                                                torch.Tensor | None]:
        sizes = self.output_sizes(points)
        if chunk_size is None or sum(sizes.values()) <= chunk_size or need_weights:
            out, probs = self(self.build_queries(pre, points), latents, need_weights)
            return (out if postprocessor is None else postprocessor(out, sizes)), probs
        # Encode once, decode many: each modality's points in chunks, all against the same latents.
        pieces: dict[str, list[torch.Tensor]] = {}
        for name, size in sizes.items():
            chosen = (points or {}).get(name)
            if chosen is None:
                chosen = torch.arange(self.queries[name].num_outputs, device=latents.device)
            for start in range(0, size, chunk_size):
                chunk = {n: (chosen[..., start:start + chunk_size] if n == name
                             else chosen.new_zeros(chosen.shape[:-1] + (0,)))
                         for n in sizes}
                queries = self.build_queries(pre, chunk)
                out, _ = self(queries, latents)
                if postprocessor is not None:
                    out = postprocessor(out, {n: (queries.shape[1] if n == name else 0) for n in sizes})[name]
                pieces.setdefault(name, []).append(out)
        return {name: torch.cat(parts, dim=1) for name, parts in pieces.items()}, None
