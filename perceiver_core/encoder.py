"""The latent encoder: learned latents (N, D) cross-attend once to the inputs (B, M, C), then a stack of
self-attention blocks is applied ``num_blocks`` times with shared weights."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import AttentionBlock, cross_qk_channels


@dataclass
class EncoderOutput:
    latents: torch.Tensor  # (B, N, D)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


class LatentEncoder(nn.Module):
    def __init__(self, *, num_latents: int, latent_channels: int, input_channels: int, num_blocks: int,
                 num_self_attends_per_block: int, num_cross_attention_heads: int, num_self_attention_heads: int,
                 qk_channels: int | None, v_channels: int | None, cross_attention_widening_factor: int,
                 self_attention_widening_factor: int, use_query_residual: bool, shape_for_attention: str,
                 activation: str, dropout: float) -> None:
        super().__init__()
        if latent_channels % num_cross_attention_heads:
            raise ValueError(f"d_latents={latent_channels} must be divisible by "
                             f"num_cross_attention_heads={num_cross_attention_heads}")
        self.latents = nn.Parameter(torch.randn(num_latents, latent_channels) * 0.02)
        self.cross_attn = AttentionBlock(
            q_channels=latent_channels, kv_channels=input_channels,
            qk_channels=cross_qk_channels(qk_channels, latent_channels, input_channels, shape_for_attention),
            v_channels=v_channels, num_heads=num_cross_attention_heads,
            widening_factor=cross_attention_widening_factor, query_residual=use_query_residual,
            activation=activation, dropout=dropout)
        self.self_attn = nn.ModuleList([
            AttentionBlock(q_channels=latent_channels, kv_channels=None, qk_channels=qk_channels,
                           v_channels=v_channels, num_heads=num_self_attention_heads,
                           widening_factor=self_attention_widening_factor, activation=activation,
                           dropout=dropout)
            for _ in range(num_self_attends_per_block)])
        self.num_blocks = num_blocks
        self.gradient_checkpointing = False

    def _self_attend(self, layer: AttentionBlock, z: torch.Tensor, need_weights: bool):
        if self.gradient_checkpointing and self.training and not need_weights:
            return checkpoint(layer, z, None, None, False, use_reentrant=False)
        return layer(z, None, None, need_weights)

    def _cross_attend(self, z: torch.Tensor, inputs: torch.Tensor, kv_mask: torch.Tensor | None, need_weights: bool):
        if self.gradient_checkpointing and self.training and not need_weights:
            return checkpoint(self.cross_attn, z, inputs, kv_mask, False, use_reentrant=False)
        return self.cross_attn(z, inputs, kv_mask, need_weights)

    def forward(self, inputs: torch.Tensor, kv_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False) -> EncoderOutput:
        b = inputs.shape[0]
        z = self.latents.to(inputs.dtype).unsqueeze(0).expand(b, -1, -1)  # (B, N, D)
        z, cross_probs = self._cross_attend(z, inputs, kv_mask, output_attentions)
        hidden, attentions = [], []
        for _ in range(self.num_blocks):
            for layer in self.self_attn:
                if output_hidden_states:
                    hidden.append(z)
                z, probs = self._self_attend(layer, z, output_attentions)
                if output_attentions:
                    attentions.append(probs)
            if output_hidden_states:
                hidden.append(z)
        return EncoderOutput(
            latents=z,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            cross_attentions=(cross_probs,) if output_attentions else None)
