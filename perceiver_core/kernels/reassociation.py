"""Single-head cross-attention with the projections re-associated around the kernel.

With one head, q k^T = (x_q Wq^T + bq)(x_kv Wk^T + bk)^T can be evaluated with either side's projection moved to
the other side. When M (keys) is much larger than O (queries) -- every Perceiver encoder -- the keys and values
can be the normalised inputs themselves: q' = q Wk, scores = q' x_kv^T (q . bk is the same for every key of a
row, so softmax drops it), context = P x_kv, and Wv, bv, Wo follow on the O small rows (P's rows sum to 1).
When O is much larger than N -- the optical-flow decoder's 182,528 pixel queries -- the queries stay
unprojected instead: keys' = k Wq with an additive per-key bias s (k . bq), values' = v Wo^T, out = P values' + bo.
Both are exact re-associations of the same maths; they skip the (M, d) key/value or the (O, d) query/output
projections and let the kernel work on the narrower width. Used when the FLOP estimate says it is cheaper.

Attention dropout (training) acts elementwise on P, and everything after P is linear in it, so both orders
stay exact under dropout but for one term: the rows of the dropped-out P no longer sum to one, and ``bv``
enters ``keys_are_inputs`` once per unit of row sum. The values then carry a ones column, whose output is that
row sum (the same kernel call and dropout mask; one more value channel, zero-padded to an aligned width). The
queries-are-inputs order needs nothing: ``bv`` and ``Wo`` are inside its values. The score matrix has the
standard order's shape, so the kernel draws the same dropout mask from the same seed (the tests compare the two
orders' gradients under dropout).

Switch: ``Attention.reassociate`` (per module, default on) is passed as ``projection_order(..., reassociate=)``;
an enclosing ``kernel_options(reassociate=...)`` overrides it (``kernels.options``). The attention kernel itself
runs through ``kernels.attention.dispatch`` with the caller's ``onednn`` switch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import dispatch, uniform_fully_masked_rows
from .options import resolve

VALUE_ALIGNMENT = 8  # the dropout path's values (Ckv + a ones column) are zero-padded to a multiple of this:
# an odd width runs the CPU GEMMs 10-40 % slower (measured at 705 vs 712 on 52,097 keys)


def projection_order(num_heads: int, num_queries: int, num_keys: int, q_channels: int, kv_channels: int,
                     qk_dim: int, v_dim: int, out_channels: int, *, reassociate: bool = True) -> str:
    """'standard', 'keys_are_inputs' or 'queries_are_inputs': the cheapest exact order (multiply-adds);
    always 'standard' when the ``reassociate`` switch is off."""
    if num_heads != 1 or not resolve("reassociate", reassociate):
        return "standard"
    o, m = num_queries, num_keys
    standard = m * kv_channels * (qk_dim + v_dim) + o * q_channels * qk_dim + o * m * (qk_dim + v_dim) \
        + o * v_dim * out_channels
    keys_are_inputs = o * q_channels * qk_dim + o * qk_dim * kv_channels + 2 * o * m * kv_channels \
        + o * kv_channels * v_dim + o * v_dim * out_channels
    queries_are_inputs = m * kv_channels * (qk_dim + v_dim) + m * qk_dim * q_channels + m * v_dim * out_channels \
        + o * m * (q_channels + out_channels)
    if q_channels != out_channels:  # the CPU kernel needs equal widths; keep it simple
        queries_are_inputs = standard
    best = min((standard, "standard"), (keys_are_inputs, "keys_are_inputs"),
               (queries_are_inputs, "queries_are_inputs"))
    return best[1] if best[0] < 0.9 * standard else "standard"


def _attention_dtype(q: torch.Tensor, kv: torch.Tensor) -> torch.dtype:
    """CPU attention of the big single heads runs in fp32 (the oneDNN path, see ``kernels.attention``): keep the
    big operand in its own (fp32 under autocast) dtype and cast the small one. Elsewhere: the autocast dtype."""
    return kv.dtype if q.device.type == "cpu" else q.dtype


def attend_keys_are_inputs(q_in: torch.Tensor, kv_in: torch.Tensor, to_q, to_k, to_v, to_out,
                           mask: torch.Tensor | None, scale: float, *, dropout: float = 0.0,
                           onednn: bool = True) -> torch.Tensor:
    """One head; q_in (B, O, Cq), kv_in (B, M, Ckv) normalised -> (B, O, out). Keys = values = kv_in.
    ``dropout``: attention dropout on P (training)."""
    q = to_q(q_in) @ to_k.weight  # (B, O, Ckv)
    dtype = _attention_dtype(q, kv_in)
    q = q.to(dtype).unsqueeze(1)  # (B, 1, O, Ckv)
    if mask is not None:
        q, mask = uniform_fully_masked_rows(q, mask)
    kv = kv_in.to(dtype).unsqueeze(1)  # (B, 1, M, Ckv)
    if dropout == 0.0:
        context = dispatch(q, kv, kv, mask, 0.0, scale, "keys_are_inputs", onednn=onednn).squeeze(1)  # (B, O, Ckv)
        return to_out(to_v(context))
    channels = kv.shape[-1]
    ones = F.pad(kv.new_ones(*kv.shape[:-1], 1), (0, -(channels + 1) % VALUE_ALIGNMENT))  # 1, then zeros
    values = torch.cat([kv, ones], dim=-1)  # (B, 1, M, Ckv + 1 rounded up to VALUE_ALIGNMENT)
    context = dispatch(q, kv, values, mask, dropout, scale, "keys_are_inputs", onednn=onednn).squeeze(1)
    context, row_sums = context[..., :channels], context[..., channels:channels + 1]  # bv's weight per row
    projected = F.linear(context, to_v.weight)
    return to_out(projected if to_v.bias is None else projected + row_sums * to_v.bias)


def attend_queries_are_inputs(q_in: torch.Tensor, kv_in: torch.Tensor, to_q, to_k, to_v, to_out,
                              mask: torch.Tensor | None, scale: float, *, dropout: float = 0.0,
                              onednn: bool = True) -> torch.Tensor:
    """One head; q_in (B, O, Cq) normalised queries used unprojected, kv_in (B, N, Ckv) -> (B, O, Cq).
    ``dropout``: attention dropout on P (training)."""
    k = to_k(kv_in)  # (B, N, dqk)
    keys = k @ to_q.weight  # (B, N, Cq)
    values = to_v(kv_in) @ to_out.weight.t()  # (B, N, out)
    bias = (k.float() @ to_q.bias.float()) * scale  # (B, N): the query bias' share of every score
    bias = bias[:, None, None, :]
    dtype = _attention_dtype(keys, q_in)
    q = q_in.to(dtype).unsqueeze(1)  # (B, 1, O, Cq)
    if mask is not None:
        q, bias = uniform_fully_masked_rows(q, bias + mask.float())
    out = dispatch(q, keys.to(dtype).unsqueeze(1), values.to(dtype).unsqueeze(1), bias, dropout, scale,
                   "queries_are_inputs", onednn=onednn).squeeze(1)
    bias_out = to_out.bias.to(out.dtype)
    return out + bias_out if torch.is_grad_enabled() else out.add_(bias_out)  # in place only without autograd
