"""The attention kernel planner and call, kept in one place so every head takes a fused path.

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
tests compare against. The oneDNN path is switched by ``onednn_attention`` (``kernels.options``): the keyword
``onednn`` of ``plan_attention`` / ``scaled_dot_product_attention`` / ``attention_backend``, which an enclosing
``kernel_options(onednn_attention=...)`` overrides.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .onednn_linear import HAS_ONEDNN_LINEAR
from .options import resolve

MATH_SCORE_BUDGET_BYTES = 256 * 2 ** 20  # largest score matrix the MATH fallback may hold at once
CUDA_ALIGNMENT = 8  # memory-efficient kernel: head dim % 8 == 0 (pytorch#110630)
CUDA_FLASH_MAX_HEAD_DIM = 256
CPU_PAD_MAX_OVERHEAD = 2.0  # pad unequal CPU widths if the padded kernel does at most 2x the score/value FLOPs
ONEDNN_Q_BLOCK, ONEDNN_KV_BLOCK = 1024, 2048  # score tile of the oneDNN path (8 MiB in fp32)
ONEDNN_MIN_HEAD_DIM = 64
ONEDNN_MIN_SCORES = 2 ** 20  # per batch x head: below this the fused kernel's lower overhead wins

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
                   num_heads: int = 1, onednn: bool = True) -> AttentionPlan:
    """Choose kernel, padding and query chunking for one attention call from its shapes (no data access).
    ``onednn``: allow the ``onednn_chunked`` path (the ``onednn_attention`` switch)."""
    itemsize = dtype.itemsize
    onednn = resolve("onednn_attention", onednn)
    if (device_type == "cpu" and onednn and HAS_ONEDNN_LINEAR and num_heads == 1 and dropout == 0.0
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
    uniform by ``uniform_fully_masked_rows``, so the clamp never decides them.
    """
    if mask is None or mask.dtype == dtype or mask.dtype == torch.bool:
        return mask
    if device_type == "cpu" and mask.dtype == torch.float32:
        return mask
    if torch.finfo(mask.dtype).min < torch.finfo(dtype).min:
        mask = mask.clamp(min=torch.finfo(dtype).min)
    return mask.to(dtype)


def uniform_fully_masked_rows(q: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
                                 dropout: float, scale: float | None = None, *, onednn: bool = True) -> torch.Tensor:
    """softmax(q k^T scale + mask) v on the planned kernel (see the module docstring for the shapes)."""
    if mask is not None and mask.dtype != torch.bool:
        q, mask = uniform_fully_masked_rows(q, mask)
    return dispatch(q, k, v, mask, dropout, scale, "standard", onednn=onednn)


def dispatch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float,
             scale: float | None, order: str, *, onednn: bool = True) -> torch.Tensor:
    """Plan and run one call whose fully masked rows were already made uniform; ``order`` names the projection
    order (``kernels.reassociation``) in what ``record_attention_calls`` collects."""
    qk_dim, v_dim = q.shape[-1], v.shape[-1]
    scale = 1.0 / math.sqrt(qk_dim) if scale is None else scale
    b, h, o, _ = q.shape
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    plan = plan_attention(b * h, o, k.shape[-2], qk_dim, v_dim, device_type=q.device.type, dtype=q.dtype,
                          dropout=dropout, needs_grad=needs_grad, num_heads=h, onednn=onednn)
    if _recorded is not None:
        kernel = attention_backend(tuple(q.shape), tuple(k.shape), tuple(v.shape), device=q.device, dtype=q.dtype,
                                   has_mask=mask is not None, dropout=dropout, needs_grad=needs_grad, onednn=onednn)
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
                      has_mask: bool = False, dropout: float = 0.0, needs_grad: bool = False,
                      onednn: bool = True) -> str:
    """What ``scaled_dot_product_attention`` runs for these (B, H, n, d) shapes: our plan, confirmed by asking
    torch's own dispatcher (``torch._fused_sdp_choice``) which kernel it picks for the padded shapes."""
    device = torch.device(device)
    b, h, o, qk_dim = q_shape
    m, v_dim = k_shape[-2], v_shape[-1]
    plan = plan_attention(b * h, o, m, qk_dim, v_dim, device_type=device.type, dtype=dtype, dropout=dropout,
                          needs_grad=needs_grad, num_heads=h, onednn=onednn)
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
