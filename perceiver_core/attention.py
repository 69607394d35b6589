"""One attention module for Perceiver cross- and self-attention, and the pre-norm block built on it.

Shapes: queries ``x`` (B, O, Cq); key/value input ``kv`` (B, M, Ckv) for cross-attention, ``None`` for
self-attention (keys and values then come from the normalised queries).

Mask convention (used everywhere in perceiver_core): a boolean ``kv_mask`` of shape (B, M), True = attend,
False = padding. It is turned into an additive mask holding the dtype's most negative value, exactly as
transformers does, so a fully padded row gives a uniform softmax instead of NaNs.

Kernel switches (``perceiver_core.kernels``): ``Attention.reassociate`` (single-head projection re-association)
and ``Attention.onednn_attention`` (the CPU oneDNN attention path), defaulting to ``kernels.DEFAULT_OPTIONS``;
its ``Linear`` layers carry ``onednn_linear``. ``kernels.kernel_options(...)`` overrides them in a block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .kernels.attention import scaled_dot_product_attention
from .kernels.onednn_linear import Linear
from .kernels.options import DEFAULT_OPTIONS
from .kernels.reassociation import attend_keys_are_inputs, attend_queries_are_inputs, projection_order

ACTIVATIONS = {
    "gelu": nn.GELU,  # exact erf GELU, as transformers' "gelu"
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}


def additive_mask(kv_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, M) bool keep-mask -> (B, 1, 1, M) additive float mask, or None when nothing is masked."""
    if kv_mask is None:
        return None
    if kv_mask.dtype != torch.bool:
        kv_mask = kv_mask > 0.5
    if not torch.compiler.is_compiling() and bool(kv_mask.all()):  # data-dependent: skipped when compiled
        return None
    mask = torch.zeros(kv_mask.shape, dtype=dtype, device=kv_mask.device)
    mask = mask.masked_fill(~kv_mask, torch.finfo(dtype).min)
    return mask[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention with a query LayerNorm and, for cross-attention, a key/value LayerNorm.

    ``qk_channels`` and ``v_channels`` are the total projection widths (split over ``num_heads``); scores are
    scaled by 1/sqrt(qk_channels / num_heads). The output projection maps ``v_channels -> out_channels``.
    ``reassociate`` / ``onednn_attention``: this module's kernel switches (see the module docstring).
    """

    def __init__(self, *, q_channels: int, kv_channels: int | None, qk_channels: int, v_channels: int,
                 out_channels: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if qk_channels % num_heads or v_channels % num_heads:
            raise ValueError(f"qk_channels={qk_channels} and v_channels={v_channels} must be divisible by "
                             f"num_heads={num_heads}")
        self.num_heads = num_heads
        self.qk_head_dim = qk_channels // num_heads
        self.v_head_dim = v_channels // num_heads
        self.dropout = dropout
        is_cross = kv_channels is not None
        kv_in = kv_channels if is_cross else q_channels
        self.query_norm = nn.LayerNorm(q_channels)
        self.kv_norm = nn.LayerNorm(kv_in) if is_cross else None
        self.to_q = Linear(q_channels, qk_channels)
        self.to_k = Linear(kv_in, qk_channels)
        self.to_v = Linear(kv_in, v_channels)
        self.to_out = Linear(v_channels, out_channels)
        self.reassociate: bool = bool(DEFAULT_OPTIONS.reassociate)
        self.onednn_attention: bool = bool(DEFAULT_OPTIONS.onednn_attention)

    @property
    def is_cross_attention(self) -> bool:
        return self.kv_norm is not None

    def _split(self, t: torch.Tensor, head_dim: int) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, head_dim).transpose(1, 2)  # (B, heads, n, d)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, kv_mask: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (output (B, O, out_channels), attention probabilities (B, heads, O, M) or None)."""
        q_in = self.query_norm(x)
        kv_in = self.kv_norm(kv) if self.kv_norm is not None else q_in
        dropout = self.dropout if self.training else 0.0
        scale = 1.0 / math.sqrt(self.qk_head_dim)
        if self.kv_norm is not None and not need_weights:
            # one wide head: move a side's projections across the kernel when that is cheaper (exact maths,
            # attention dropout included)
            order = projection_order(self.num_heads, x.shape[1], kv.shape[1], x.shape[2], kv.shape[2],
                                     self.qk_head_dim, self.v_head_dim, self.to_out.out_features,
                                     reassociate=self.reassociate)
            if order != "standard":
                attend = attend_keys_are_inputs if order == "keys_are_inputs" else attend_queries_are_inputs
                return attend(q_in, kv_in, self.to_q, self.to_k, self.to_v, self.to_out,
                              additive_mask(kv_mask, torch.float32), scale, dropout=dropout,
                              onednn=self.onednn_attention), None
        q = self._split(self.to_q(q_in), self.qk_head_dim)
        k = self._split(self.to_k(kv_in), self.qk_head_dim)
        v = self._split(self.to_v(kv_in), self.v_head_dim)
        mask = additive_mask(kv_mask, q.dtype)
        probs = None
        if need_weights:
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale
            if mask is not None:
                scores = scores + mask
            probs = scores.softmax(dim=-1)
            context = torch.matmul(F.dropout(probs, dropout, self.training), v)
        else:
            context = scaled_dot_product_attention(q, k, v, mask, dropout, scale, onednn=self.onednn_attention)
        b, _, o, _ = context.shape
        context = context.transpose(1, 2).reshape(b, o, self.num_heads * self.v_head_dim)  # (B, O, v)
        return self.to_out(context), probs


class MLP(nn.Module):
    """channels -> widening_factor x channels -> activation -> channels (GELU fused into fc1 on oneDNN)."""

    def __init__(self, *, channels: int, widening_factor: int, activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        self.fc1 = Linear(channels, widening_factor * channels)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = Linear(widening_factor * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.act, nn.GELU):  # fused into fc1 on the oneDNN path
            return self.fc2(self.fc1(x, gelu=self.act.approximate))
        return self.fc2(self.act(self.fc1(x)))


class AttentionBlock(nn.Module):
    """Pre-norm block: h = attn(x, kv) [+ x]; out = h + MLP(LayerNorm(h)).

    Self-attention blocks always keep the query residual; cross-attention blocks choose (``query_residual``).
    """

    def __init__(self, *, q_channels: int, kv_channels: int | None, qk_channels: int | None,
                 v_channels: int | None, num_heads: int, widening_factor: int = 1, query_residual: bool = True,
                 activation: str = "gelu", dropout: float = 0.0) -> None:
        super().__init__()
        is_cross = kv_channels is not None
        qk = qk_channels if qk_channels is not None else q_channels
        v = v_channels if v_channels is not None else qk
        out = q_channels if is_cross else v
        if not is_cross and v != q_channels:
            raise ValueError(f"self-attention needs v_channels == channels ({v} != {q_channels}) for the residual")
        self.attn = Attention(q_channels=q_channels, kv_channels=kv_channels, qk_channels=qk, v_channels=v,
                              out_channels=out, num_heads=num_heads, dropout=dropout)
        self.query_residual = query_residual or not is_cross
        self.mlp_norm = nn.LayerNorm(out)
        self.mlp = MLP(channels=out, widening_factor=widening_factor, activation=activation)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, kv_mask: torch.Tensor | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        h, probs = self.attn(x, kv, kv_mask, need_weights)
        if self.query_residual:
            h = h + x
        return h + self.mlp(self.mlp_norm(h)), probs


def cross_qk_channels(qk_channels: int | None, q_channels: int, kv_channels: int, shape_for_attention: str) -> int:
    """transformers' rule for a cross-attention's q/k width when none is given: the kv or the query width."""
    if qk_channels is not None:
        return qk_channels
    return kv_channels if shape_for_attention == "kv" else q_channels
