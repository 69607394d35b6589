"""The attention kernel call, kept in one place so every head takes a fused path.

``scaled_dot_product_attention(q, k, v, mask, dropout, scale)`` with q (B, H, O, Dqk), k (B, H, M, Dqk),
v (B, H, M, Dv) and an optional additive float mask broadcastable to (B, H, O, M). Returns (B, H, O, Dv).

Perceiver's big cross-attentions have one head 261-1024 wide, and ``F.scaled_dot_product_attention`` silently
falls back to the MATH kernel (which materialises the (O, M) score matrix) when no fused kernel takes the
shape. ``plan_attention`` picks, from the shapes alone (so ``torch.compile`` sees no data-dependent branch):

- CPU: torch's fused flash kernel (``_scaled_dot_product_flash_attention_for_cpu``) takes any head dim and an
  additive mask, but needs Dqk == Dv and no dropout. Unequal widths are zero-padded to the larger one when that
  is cheap; otherwise, and under dropout, the MATH kernel runs on query chunks so its score matrix stays under
  ``MATH_SCORE_BUDGET_BYTES``.
- CPU inference of one big, wide head (the Perceiver cross-attentions, >= 64 channels): query chunks of plain
  maths on oneDNN's fp32 GEMMs in score tiles with an online softmax (``onednn_chunked``).
  On the benchmark CPU this runs 1.5-3x faster than the fused flash kernel, whose fp32 GEMMs go through MKL (slow
  on AMD) and whose bf16 path is no faster; bf16 inputs are computed in fp32 (softmax statistics included).
- CUDA: head dims are zero-padded to a multiple of 8 (the memory-efficient kernel's alignment; flash also needs
  Dqk == Dv <= 256), with the scale passed explicitly so it stays 1/sqrt(original Dqk).

Zero-padding is exact: padded q/k channels add 0 to every score, padded v channels give output columns that are
sliced off. ``attention_backend`` reports what runs for a shape; ``reference_attention`` is the plain maths the
tests compare against.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MATH_SCORE_BUDGET_BYTES = 256 * 2 ** 20  # largest score matrix the MATH fallback may hold at once
CUDA_ALIGNMENT = 8  # memory-efficient kernel: head dim % 8 == 0 (pytorch#110630)
CUDA_FLASH_MAX_HEAD_DIM = 256
CPU_PAD_MAX_OVERHEAD = 2.0  # pad unequal CPU widths if the padded kernel does at most 2x the score/value FLOPs
REASSOCIATE = True  # allow the single-head projection re-association below (False: always the standard order)
ONEDNN_LINEAR = True  # fp32 CPU inference linears on oneDNN (see ``Linear``)
ONEDNN_ATTENTION = True  # CPU inference of big single-head attentions on oneDNN GEMMs (see module docstring)
ONEDNN_Q_BLOCK, ONEDNN_KV_BLOCK = 1024, 2048  # score tile of the oneDNN path (8 MiB in fp32)
ONEDNN_MIN_HEAD_DIM = 64
ONEDNN_MIN_SCORES = 2 ** 20  # per batch x head: below this the fused kernel's lower overhead wins

_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_TORCH_BACKENDS = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}
_recorded: list[str] | None = None  # set by ``record_attention_calls``


@dataclass(frozen=True)
class AttentionPlan:
    """How one attention call runs. ``kernel`` is the torch kernel expected to run on the padded shapes."""

    kernel: str  # "cpu_flash", "onednn_chunked", "flash", "efficient", "math"
    qk_dim: int  # q/k head dim after zero-padding
    v_dim: int  # v head dim after zero-padding
    query_chunk: int | None = None  # queries per kernel call (None: all at once)

    def describe(self, qk_dim: int, v_dim: int) -> str:
        text = self.kernel
        if (self.qk_dim, self.v_dim) != (qk_dim, v_dim):
            text += f" (padded qk {qk_dim}->{self.qk_dim}, v {v_dim}->{self.v_dim})"
        if self.kernel == "onednn_chunked":
            text += f" (score tiles {self.query_chunk} x {ONEDNN_KV_BLOCK}, fp32)"
        elif self.query_chunk is not None:
            text += f" (query chunks of {self.query_chunk})"
        return text


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _math_chunk(batch_heads: int, num_queries: int, num_keys: int, itemsize: int) -> int | None:
    """Queries per MATH call so that scores and probabilities (2 x chunk x M per head) fit the budget."""
    per_query = 2 * batch_heads * num_keys * max(itemsize, 4)
    chunk = max(1, MATH_SCORE_BUDGET_BYTES // per_query)
    return None if chunk >= num_queries else int(chunk)


def plan_attention(batch_heads: int, num_queries: int, num_keys: int, qk_dim: int, v_dim: int, *,
                   device_type: str, dtype: torch.dtype, dropout: float = 0.0, needs_grad: bool = False,
                   num_heads: int = 1) -> AttentionPlan:
    """Choose kernel, padding and query chunking for one attention call from its shapes (no data access)."""
    itemsize = dtype.itemsize
    if (device_type == "cpu" and ONEDNN_ATTENTION and _HAS_ONEDNN_LINEAR and num_heads == 1 and dropout == 0.0
            and not needs_grad and dtype in (torch.float32, torch.bfloat16, torch.float16)
            and min(qk_dim, v_dim) >= ONEDNN_MIN_HEAD_DIM and num_queries * num_keys >= ONEDNN_MIN_SCORES
            and not torch.compiler.is_compiling()):
        return AttentionPlan("onednn_chunked", qk_dim, v_dim, min(num_queries, ONEDNN_Q_BLOCK))
    if device_type == "cuda":
        qk, v = _round_up(qk_dim, CUDA_ALIGNMENT), _round_up(v_dim, CUDA_ALIGNMENT)
        half = dtype in (torch.float16, torch.bfloat16)
        kernel = "flash" if half and qk == v <= CUDA_FLASH_MAX_HEAD_DIM else "efficient"
        return AttentionPlan(kernel, qk, v)
    if device_type == "cpu" and dropout == 0.0 and dtype in (torch.float32, torch.float64, torch.bfloat16,
                                                             torch.float16):
        if qk_dim == v_dim:
            return AttentionPlan("cpu_flash", qk_dim, v_dim)
        wide = max(qk_dim, v_dim)
        if 2 * wide <= CPU_PAD_MAX_OVERHEAD * (qk_dim + v_dim):
            return AttentionPlan("cpu_flash", wide, wide)
    return AttentionPlan("math", qk_dim, v_dim, _math_chunk(batch_heads, num_queries, num_keys, itemsize))


def _pad_last(t: torch.Tensor, width: int) -> torch.Tensor:
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


def _safe_mask(mask: torch.Tensor | None, dtype: torch.dtype, device_type: str) -> torch.Tensor | None:
    """An additive mask the kernel accepts, never overflowing to -inf in the kernel's dtype.

    CPU kernels take a float32 mask with bf16/fp16 inputs and add it in float32. CUDA kernels want the input
    dtype: the mask is clamped to its range first (fp16's minimum is -65504). Fully masked rows were already made
    uniform by ``_uniform_fully_masked_rows``, so the clamp never decides them.
    """
    if mask is None or mask.dtype == dtype or mask.dtype == torch.bool:
        return mask
    if device_type == "cpu" and mask.dtype == torch.float32:
        return mask
    if torch.finfo(mask.dtype).min < torch.finfo(dtype).min:
        mask = mask.clamp(min=torch.finfo(dtype).min)
    return mask.to(dtype)


def _uniform_fully_masked_rows(q: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose every key is masked get q = 0 and mask = 0: a uniform softmax over the keys, as transformers'
    finfo.min mask gives, but without relying on finfo.min absorbing the scores. The fused kernels' backward
    passes recompute probabilities from a log-sum-exp that cannot resolve log(M) next to finfo.min, which made
    the gradients of such rows wrong (forward was right)."""
    keep = mask > torch.finfo(mask.dtype).min / 2  # masked: finfo.min or -inf
    row_ok = keep.any(dim=-1, keepdim=True)  # (B, 1|H, 1|O, 1)
    return q * row_ok.to(q.dtype), torch.where(row_ok, mask, torch.zeros((), dtype=mask.dtype, device=mask.device))


@contextlib.contextmanager
def record_attention_calls() -> Iterator[list[str]]:
    """Collect a one-line description (shapes, dtype, kernel) of every attention call made inside (eager)."""
    global _recorded
    previous, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = previous


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                                 dropout: float, scale: float | None = None) -> torch.Tensor:
    if mask is not None and mask.dtype != torch.bool:
        q, mask = _uniform_fully_masked_rows(q, mask)
    return _dispatch(q, k, v, mask, dropout, scale, "standard")


def _dispatch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float,
              scale: float | None, order: str) -> torch.Tensor:
    qk_dim, v_dim = q.shape[-1], v.shape[-1]
    scale = 1.0 / math.sqrt(qk_dim) if scale is None else scale
    b, h, o, _ = q.shape
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    plan = plan_attention(b * h, o, k.shape[-2], qk_dim, v_dim, device_type=q.device.type, dtype=q.dtype,
                          dropout=dropout, needs_grad=needs_grad, num_heads=h)
    if _recorded is not None:  # ``order``: see ``projection_order``
        kernel = attention_backend(tuple(q.shape), tuple(k.shape), tuple(v.shape), device=q.device, dtype=q.dtype,
                                   has_mask=mask is not None, dropout=dropout, needs_grad=needs_grad)
        _recorded.append(f"{order}: q {tuple(q.shape)} k {tuple(k.shape)} v {tuple(v.shape)} "
                         f"{str(q.dtype).removeprefix('torch.')}{' masked' if mask is not None else ''} -> {kernel}")
    return run_plan(q, k, v, mask, dropout, scale, plan)


def run_plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float,
             scale: float, plan: AttentionPlan) -> torch.Tensor:
    """Run one attention call as ``plan`` says (padding, query chunks); exact for any plan, whatever the device."""
    o, v_dim = q.shape[-2], v.shape[-1]
    if plan.kernel == "onednn_chunked":
        return _onednn_chunked_attention(q, k, v, mask, scale, plan.query_chunk or o)
    mask = _safe_mask(mask, q.dtype, q.device.type)
    if plan.qk_dim != q.shape[-1]:
        q, k = _pad_last(q, plan.qk_dim), _pad_last(k, plan.qk_dim)
    if plan.v_dim != v_dim:
        v = _pad_last(v, plan.v_dim)
    if plan.query_chunk is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    else:
        parts = []
        for start in range(0, o, plan.query_chunk):
            stop = min(start + plan.query_chunk, o)
            m = mask
            if m is not None and m.dim() >= 2 and m.shape[-2] == o and o > 1:
                m = m[..., start:stop, :]
            parts.append(F.scaled_dot_product_attention(q[..., start:stop, :], k, v, attn_mask=m,
                                                        dropout_p=dropout, scale=scale))
        out = torch.cat(parts, dim=-2)
    return out if plan.v_dim == v_dim else out[..., :v_dim]


def _onednn_chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                              scale: float, q_block: int) -> torch.Tensor:
    """softmax(q k^T scale + mask) v in fp32 on oneDNN GEMMs (inference only), in (q_block x ONEDNN_KV_BLOCK)
    score tiles with flash attention's online softmax over key blocks: extra memory is one tile, one transposed
    value block and the (O, Dv) fp32 accumulator."""
    linear = torch.ops.mkldnn._linear_pointwise
    b, h, o, _ = q.shape
    m, kv_block = k.shape[-2], ONEDNN_KV_BLOCK
    out = torch.empty(b, h, o, v.shape[-1], dtype=q.dtype, device=q.device)
    for i in range(b):
        for j in range(h):
            qq, kk = q[i, j].float(), k[i, j].float().contiguous()  # (O, d), (M, d)
            if o <= m:  # fold the scale into the smaller operand
                qq = qq * scale
            else:
                kk = kk * scale
            vv = v[i, j].float()
            rows = None
            if mask is not None:
                rows = mask[i if mask.shape[0] > 1 else 0, j if mask.shape[1] > 1 else 0].float()  # (1 | O, M)
            acc = torch.zeros(o, v.shape[-1], dtype=torch.float32, device=q.device)
            run_max = torch.full((o, 1), -math.inf, dtype=torch.float32, device=q.device)
            run_sum = torch.zeros(o, 1, dtype=torch.float32, device=q.device)
            for ks in range(0, m, kv_block):
                ke = min(ks + kv_block, m)
                vt = vv[ks:ke].t().contiguous()  # (Dv, kv): a linear's weight layout
                for qs in range(0, o, q_block):
                    qe = min(qs + q_block, o)
                    scores = linear(qq[qs:qe], kk[ks:ke], None, "none", [], "")  # (c, kv)
                    if rows is not None:
                        scores += (rows if rows.shape[0] == 1 else rows[qs:qe])[:, ks:ke]
                    old_max = run_max[qs:qe]
                    new_max = torch.maximum(old_max, scores.amax(dim=-1, keepdim=True))
                    alpha = torch.exp(old_max - new_max)  # 0 on the first key block
                    scores.sub_(new_max).exp_()
                    run_sum[qs:qe].mul_(alpha).add_(scores.sum(dim=-1, keepdim=True))
                    acc[qs:qe].mul_(alpha).add_(linear(scores, vt, None, "none", [], ""))
                    run_max[qs:qe] = new_max
            out[i, j] = acc.div_(run_sum)
    return out


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                        scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T scale + mask) v, materialised, in float32 (the maths every fused path must equal)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores + mask.float()
    return torch.matmul(scores.softmax(dim=-1), v.float()).to(q.dtype)


def attention_backend(q_shape: tuple[int, ...], k_shape: tuple[int, ...], v_shape: tuple[int, ...], *,
                      device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                      has_mask: bool = False, dropout: float = 0.0, needs_grad: bool = False) -> str:
    """What ``scaled_dot_product_attention`` runs for these (B, H, n, d) shapes: our plan, confirmed by asking
    torch's own dispatcher (``torch._fused_sdp_choice``) which kernel it picks for the padded shapes."""
    device = torch.device(device)
    b, h, o, qk_dim = q_shape
    m, v_dim = k_shape[-2], v_shape[-1]
    plan = plan_attention(b * h, o, m, qk_dim, v_dim, device_type=device.type, dtype=dtype, dropout=dropout,
                          needs_grad=needs_grad, num_heads=h)
    if plan.kernel == "onednn_chunked":
        return plan.describe(qk_dim, v_dim)
    try:  # tiny stand-ins with the padded head dims: torch's choice depends on dims, dtype, mask and dropout
        q = torch.zeros(1, 1, 2, plan.qk_dim, device=device, dtype=dtype)
        k = torch.zeros(1, 1, 2, plan.qk_dim, device=device, dtype=dtype)
        v = torch.zeros(1, 1, 2, plan.v_dim, device=device, dtype=dtype)
        mask = torch.zeros(1, 1, 2, 2, device=device, dtype=dtype) if has_mask else None
        chosen = _TORCH_BACKENDS.get(int(torch._fused_sdp_choice(q, k, v, mask, dropout, False)), "?")
    except Exception as error:  # noqa: BLE001 - the report must never fail a run
        chosen = f"? ({type(error).__name__})"
    if device.type == "cpu" and chosen == "flash":
        chosen = "cpu_flash"
    text = plan.describe(qk_dim, v_dim)
    if chosen != plan.kernel and plan.kernel != "math":
        text += f" [torch picks {chosen}]"
    return text


# ---------------------------------------------------------------------------------------------------------------
# Single-head cross-attention with the projections re-associated around the kernel.
#
# With one head, q k^T = (x_q Wq^T + bq)(x_kv Wk^T + bk)^T can be evaluated with either side's projection moved to
# the other side. When M (keys) is much larger than O (queries) -- every Perceiver encoder -- the keys and values
# can be the normalised inputs themselves: q' = q Wk, scores = q' x_kv^T (q . bk is the same for every key of a
# row, so softmax drops it), context = P x_kv, and Wv, bv, Wo follow on the O small rows (P's rows sum to 1).
# When O is much larger than N -- the optical-flow decoder's 182,528 pixel queries -- the queries stay
# unprojected instead: keys' = k Wq with an additive per-key bias s (k . bq), values' = v Wo^T, out = P values' + bo.
# Both are exact re-associations of the same maths; they skip the (M, d) key/value or the (O, d) query/output
# projections and let the kernel work on the narrower width. Used only without attention dropout (dropout on P
# would break the rows-sum-to-one step) and when the FLOP estimate says it is cheaper.
# ---------------------------------------------------------------------------------------------------------------

def projection_order(num_heads: int, num_queries: int, num_keys: int, q_channels: int, kv_channels: int,
                     qk_dim: int, v_dim: int, out_channels: int) -> str:
    """'standard', 'keys_are_inputs' or 'queries_are_inputs': the cheapest exact order (multiply-adds)."""
    if num_heads != 1 or not REASSOCIATE:
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
    """CPU attention of the big single heads runs in fp32 (the oneDNN path, see the module docstring): keep the
    big operand in its own (fp32 under autocast) dtype and cast the small one. Elsewhere: the autocast dtype."""
    return kv.dtype if q.device.type == "cpu" else q.dtype


def attend_keys_are_inputs(q_in: torch.Tensor, kv_in: torch.Tensor, to_q, to_k, to_v, to_out,
                           mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """One head; q_in (B, O, Cq), kv_in (B, M, Ckv) normalised -> (B, O, out). Keys = values = kv_in."""
    q = to_q(q_in) @ to_k.weight  # (B, O, Ckv)
    dtype = _attention_dtype(q, kv_in)
    q = q.to(dtype).unsqueeze(1)  # (B, 1, O, Ckv)
    if mask is not None:
        q, mask = _uniform_fully_masked_rows(q, mask)
    kv = kv_in.to(dtype).unsqueeze(1)  # (B, 1, M, Ckv)
    context = _dispatch(q, kv, kv, mask, 0.0, scale, "keys_are_inputs").squeeze(1)  # (B, O, Ckv)
    return to_out(to_v(context))


def attend_queries_are_inputs(q_in: torch.Tensor, kv_in: torch.Tensor, to_q, to_k, to_v, to_out,
                              mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """One head; q_in (B, O, Cq) normalised queries used unprojected, kv_in (B, N, Ckv) -> (B, O, Cq)."""
    k = to_k(kv_in)  # (B, N, dqk)
    keys = k @ to_q.weight  # (B, N, Cq)
    values = to_v(kv_in) @ to_out.weight.t()  # (B, N, out)
    bias = (k.float() @ to_q.bias.float()) * scale  # (B, N): the query bias' share of every score
    bias = bias[:, None, None, :]
    dtype = _attention_dtype(keys, q_in)
    q = q_in.to(dtype).unsqueeze(1)  # (B, 1, O, Cq)
    if mask is not None:
        q, bias = _uniform_fully_masked_rows(q, bias + mask.float())
    out = _dispatch(q, keys.to(dtype).unsqueeze(1), values.to(dtype).unsqueeze(1), bias, 0.0, scale,
                    "queries_are_inputs").squeeze(1)
    bias_out = to_out.bias.to(out.dtype)
    return out + bias_out if torch.is_grad_enabled() else out.add_(bias_out)  # in place only without autograd


# ---------------------------------------------------------------------------------------------------------------
# fp32 CPU inference linears on oneDNN. ``F.linear`` in fp32 on CPU calls MKL's sgemm, which on AMD CPUs runs a
# code path at about half the rate oneDNN's fp32 kernels reach on the same cores (measured on the benchmark
# machine: ~90 vs ~210 GFLOP/s per core); both are IEEE fp32 (no reduced-precision internals). bf16/fp16 linears
# already go to oneDNN. Training (autograd), autocast and torch.compile keep ``F.linear``.
# ---------------------------------------------------------------------------------------------------------------

def _onednn_linear_ok(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (ONEDNN_LINEAR and _HAS_ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and torch.backends.mkldnn.enabled
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())



class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) whose fp32 CPU inference runs on oneDNN.

    ``forward(x, gelu=...)`` also applies a GELU ("none": exact erf, "tanh": the tanh approximation), fused
    into the GEMM's epilogue on the oneDNN path.
    """

    def forward(self, x: torch.Tensor, gelu: str | None = None) -> torch.Tensor:
        if _onednn_linear_ok(x, self.weight):
            if gelu is None:
                return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [], gelu)
        out = F.linear(x, self.weight, self.bias)
        return out if gelu is None else F.gelu(out, approximate=gelu)
