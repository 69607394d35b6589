"""The attention kernel call, kept in one place so every head takes the same fused path.

``scaled_dot_product_attention(q, k, v, mask, dropout, scale)`` with q, k (B, H, O|M, Dqk), v (B, H, M, Dv)
and an optional additive mask broadcastable to (B, H, O, M). Returns (B, H, O, Dv).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                                 dropout: float, scale: float) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
