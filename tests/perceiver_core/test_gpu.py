"""The CUDA paths, executed: every fused-attention plan, the dispatcher, gradients, chunking and every head on a
GPU against the reference maths and the CPU.

Opt-in: ``pyproject.toml``'s default ``addopts`` deselect the ``gpu`` mark; run ``pytest -m gpu`` (on a machine
without CUDA every test skips). ``benchmarks/gpu_check.sh`` runs them first.

Tolerances per dtype: fp32 kernels are IEEE fp32 (TF32 is switched off here for matmuls and cuDNN convs, which
torch enables for convs by default); bf16 keeps 8 mantissa bits, fp16 11, with fp32 softmax statistics in
every fused kernel, so their errors are norm-wise ~2^-8 and ~2^-11 of the output.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from perceiver_core import presets
from perceiver_core.attention import additive_mask
from perceiver_core.heads import PerceiverForSequenceClassification
from perceiver_core.kernels import attention as fa

# The device under test. PERCEIVER_GPU_TEST_DEVICE=cpu runs the same assertions on the CPU (tests that need
# CUDA's allocator statistics or kernel choice skip): a check of the test code itself where no GPU exists.
DEVICE = os.environ.get("PERCEIVER_GPU_TEST_DEVICE", "cuda")
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="CUDA allocator / kernel-choice check")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                                  reason="needs a CUDA device (pytest -m gpu)")]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# norm-wise relative error and max abs error allowed against the fp32 reference
ATTN_TOL = {"fp32": (2e-6, 5e-5), "bf16": (1.2e-2, 6e-2), "fp16": (2e-3, 1e-2)}
# (heads, queries, keys, qk dim, v dim): Perceiver's single-head widths (261 -> 264 and 322 -> 328 padded),
# the language model's unequal 32 / 160 and odd unequal widths, a flash-eligible multi-head shape
SHAPES = [
    (1, 64, 300, 261, 261),
    (1, 48, 256, 322, 322),
    (1, 40, 200, 512, 512),
    (1, 33, 129, 704, 704),
    (1, 17, 100, 1024, 1024),
    (8, 32, 96, 32, 160),
    (1, 20, 64, 261, 322),
    (1, 25, 77, 1026, 1026),  # the multimodal decoder's width
    (2, 24, 50, 64, 64),
]


@pytest.fixture(autouse=True)
def _ieee_fp32():
    """fp32 on CUDA means IEEE fp32 here: torch lets cuDNN convolutions use TF32 by default."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _qkv(h, o, m, dqk, dv, batch=2, dtype=torch.float32, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, h, n, d, generator=g) for n, d in ((o, dqk), (m, dqk), (m, dv)))
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def _padding_mask(batch, m, fully_masked_row=False, device=DEVICE):
    keep = torch.ones(batch, m, dtype=torch.bool)
    keep[0, m // 2:] = False
    if fully_masked_row:
        keep[-1] = False  # an all-padding example: transformers gives a uniform softmax
    return additive_mask(keep.to(device), torch.float32)


def _check(got: torch.Tensor, expected: torch.Tensor, dtype: str, what: str = "") -> None:
    assert got.dtype == DTYPES[dtype] and torch.isfinite(got).all(), what
    rel_tol, abs_tol = ATTN_TOL[dtype]
    err = (got.float() - expected.float()).norm() / expected.float().norm()
    worst = (got.float() - expected.float()).abs().max()
    assert err <= rel_tol and worst <= abs_tol, f"{what}: rel err {err:.2e} (<= {rel_tol}), max abs {worst:.2e}"


def _plans(h, o, m, dqk, dv, dtype):
    """Every plan that can run on CUDA for this shape: the planner's own, the memory-efficient kernel on
    8-aligned padded widths, flash where it applies, each also on query chunks, and MATH on query chunks."""
    planned = fa.plan_attention(2 * h, o, m, dqk, dv, device_type="cuda", dtype=dtype)
    qk, v = -(-dqk // 8) * 8, -(-dv // 8) * 8
    plans = [planned, fa.AttentionPlan(planned.kernel, planned.qk_dim, planned.v_dim, query_chunk=7),
             fa.AttentionPlan("efficient", qk, v), fa.AttentionPlan("efficient", qk + 8, v + 16, query_chunk=5),
             fa.AttentionPlan("math", dqk, dv, query_chunk=9)]
    if dtype != torch.float32 and qk == v <= fa.CUDA_FLASH_MAX_HEAD_DIM:
        plans.append(fa.AttentionPlan("flash", qk, v))
    return planned, plans


# ------------------------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("masked", [False, True])
def test_every_cuda_plan_matches_reference(shape, dtype, masked):
    h, o, m, dqk, dv = shape
    q, k, v = _qkv(*shape, dtype=DTYPES[dtype])
    mask = _padding_mask(2, m) if masked else None
    scale = 1 / math.sqrt(dqk)
    expected = fa.reference_attention(q.float(), k.float(), v.float(), mask, scale)
    planned, plans = _plans(h, o, m, dqk, dv, DTYPES[dtype])
    assert planned.kernel in ("flash", "efficient") and planned.qk_dim % 8 == 0 and planned.v_dim % 8 == 0
    for plan in plans:
        with torch.no_grad():
            got = fa.run_plan(q, k, v, mask, 0.0, scale, plan)
        assert got.shape == (2, h, o, dv), plan
        _check(got, expected, dtype, f"{plan}")


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[1], SHAPES[5], SHAPES[6]], ids=lambda s: "x".join(map(str, s)))
def test_dispatcher_masks_and_fully_masked_rows(shape, dtype):
    """The public entry point: padding masks, an all-padding example (uniform softmax = the mean of v, as
    transformers' finfo.min mask gives) and a per-query mask; a float32 finfo.min mask must not overflow in
    bf16 / fp16."""
    h, o, m, dqk, dv = shape
    q, k, v = _qkv(*shape, dtype=DTYPES[dtype])
    scale = 1 / math.sqrt(dqk)
    for mask in (_padding_mask(2, m, fully_masked_row=True),
                 torch.randn(2, 1, o, m, generator=torch.Generator().manual_seed(3)).to(DEVICE)):
        with torch.no_grad():
            got = fa.scaled_dot_product_attention(q, k, v, mask, 0.0, scale)
        expected = fa.reference_attention(q.float(), k.float(), v.float(), mask, scale)
        _check(got, expected, dtype, f"mask {tuple(mask.shape)}")
    uniform = v[-1].float().mean(dim=-2, keepdim=True).expand(h, o, dv)
    got = fa.scaled_dot_product_attention(q, k, v, _padding_mask(2, m, True), 0.0, scale)
    _check(got[-1], uniform, dtype, "fully masked example")


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[5], SHAPES[6]], ids=lambda s: "x".join(map(str, s)))
def test_cuda_gradients_match_reference(shape):
    """fp32 backward through the fused CUDA kernels (padding included) equals autograd through the plain
    maths, on a partly and a fully masked example (whose q and k get no gradient: the output ignores them)."""
    q, k, v = (t.requires_grad_() for t in _qkv(*shape))
    mask = _padding_mask(2, shape[2], fully_masked_row=True)
    scale = 1 / math.sqrt(shape[3])
    grads = []
    for fn in (fa.scaled_dot_product_attention, lambda *a: fa.reference_attention(*a[:4], a[5])):
        out = fn(q, k, v, mask, 0.0, scale)
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    (dq, dk, dv), (rq, rk, rv) = grads
    for a, b in ((dq[0], rq[0]), (dk[0], rk[0]), (dv, rv)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert dq[1].abs().max() == 0 and dk[1].abs().max() == 0


@needs_cuda
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("masked", [False, True])
def test_cuda_never_falls_back_to_math(dtype, masked):
    """For every Perceiver width, torch's own dispatcher picks a fused kernel (not MATH) on the padded shapes:
    the reason for the padding."""
    for width in (261, 322, 512, 704, 1024, 1026):
        plan = fa.plan_attention(1, 16, 64, width, width, device_type="cuda", dtype=DTYPES[dtype])
        q = torch.zeros(1, 1, 16, plan.qk_dim, device=DEVICE, dtype=DTYPES[dtype])
        k = torch.zeros(1, 1, 64, plan.qk_dim, device=DEVICE, dtype=DTYPES[dtype])
        v = torch.zeros(1, 1, 64, plan.v_dim, device=DEVICE, dtype=DTYPES[dtype])
        mask = torch.zeros(1, 1, 16, 64, device=DEVICE, dtype=DTYPES[dtype]) if masked else None
        choice = int(torch._fused_sdp_choice(q, k, v, mask, 0.0, False))
        assert choice != 0, f"width {width} ({plan}) falls back to MATH"
        text = fa.attention_backend((1, 1, 16, width), (1, 1, 64, width), (1, 1, 64, width), device=DEVICE,
                                    dtype=DTYPES[dtype], has_mask=masked)
        assert "math" not in text, text


@needs_cuda
@pytest.mark.parametrize("width", [322, 512])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_big_cross_attention_does_not_materialise_scores(width, dtype):
    """A flow-encoder-like single head (2048 latents x 65,536 inputs): the call allocates far less than the
    score matrix (what transformers' eager attention holds, twice)."""
    q, k, v = _qkv(1, 2048, 65536, width, width, batch=1, dtype=DTYPES[dtype])
    scores = 2048 * 65536 * q.element_size()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.no_grad():
        out = fa.scaled_dot_product_attention(q, k, v, None, 0.0, width ** -0.5)
    torch.cuda.synchronize()
    grown = torch.cuda.max_memory_allocated() - base
    assert grown < scores / 2, f"{grown / 2**20:.0f} MiB allocated; the scores would be {scores / 2**20:.0f} MiB"
    sample = slice(0, 64)  # check a slice of the queries against the plain maths
    expected = fa.reference_attention(q[..., sample, :].float(), k.float(), v.float(), None, width ** -0.5)
    _check(out[..., sample, :], expected, dtype, "big cross-attention")


# ------------------------------------------------------------------------------------------- heads
HEAD_NAMES = ["language", "text-classification", "vision-learned", "vision-fourier", "vision-conv", "optical-flow",
              "multimodal"]


def _build(name: str, **overrides):
    torch.manual_seed(0)
    if name == "text-classification":
        cfg = presets.config("language", tiny=True, num_labels=3, **overrides)
        cfg.architectures = ["PerceiverForSequenceClassification"]
        return PerceiverForSequenceClassification(cfg)
    return presets.build(name, tiny=True, **overrides)


def _inputs(name: str, cfg, batch: int = 2, seed: int = 1) -> tuple[dict, dict]:
    """(forward keywords, training labels) on the CPU."""
    g = torch.Generator().manual_seed(seed)
    if name in ("language", "text-classification"):
        length = cfg.max_position_embeddings
        ids = torch.randint(6, 262, (batch, length), generator=g)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, length // 2:] = 0
        if name == "language":
            labels = torch.where(torch.rand(batch, length, generator=g) < 0.3, ids, torch.full_like(ids, -100))
        else:
            labels = torch.randint(0, cfg.num_labels, (batch,), generator=g)
        return {"inputs": ids, "attention_mask": mask}, {"labels": labels}
    if name.startswith("vision"):
        size = (cfg.image_size, cfg.image_size) if name == "vision-learned" else (32, 40)
        return ({"inputs": torch.randn(batch, 3, *size, generator=g)},
                {"labels": torch.randint(0, cfg.num_labels, (batch,), generator=g)})
    if name == "optical-flow":
        h, w = cfg.train_size
        return ({"inputs": torch.randn(batch, 2, 27, h, w, generator=g)},
                {"labels": torch.randn(batch, h, w, 2, generator=g)})
    t, s = cfg.num_frames, cfg.image_size
    n_audio = t * cfg.audio_samples_per_frame
    video, audio = torch.rand(batch, t, 3, s, s, generator=g), torch.rand(batch, n_audio, 1, generator=g)
    points = {"image": torch.arange(0, t * s * s, 5), "audio": torch.arange(0, n_audio // cfg.samples_per_patch, 2),
              "label": None}
    return ({"inputs": {"image": video, "audio": audio, "label": torch.zeros(batch, cfg.num_labels)},
             "subsampled_output_points": points},
            {"labels": {"image": video, "audio": audio, "label": torch.randint(0, cfg.num_labels, (batch,))}})


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def _flat(x):
    if isinstance(x, dict):
        return [t for key in sorted(x) for t in _flat(x[key])]
    return [x]


def _rel(got, expected) -> float:
    return max(((a.float().cpu() - b.float().cpu()).norm() / b.float().cpu().norm()).item()
               for a, b in zip(_flat(got), _flat(expected)))


HEAD_TOL = {"fp32": 1e-5, "bf16": 3e-2, "fp16": 5e-3}  # norm-wise, worst output tensor (modality)


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_head_on_cuda_equals_cpu(name):
    """Every head (tiny configuration, eval) gives the CPU's fp32 outputs on CUDA in fp32, and close to them
    under bf16 and fp16 autocast."""
    model = _build(name).eval()
    kwargs, _ = _inputs(name, model.config)
    with torch.no_grad():
        expected = model(**kwargs).logits
    gpu = copy.deepcopy(model).to(DEVICE)
    on_gpu = _to(kwargs, DEVICE)
    for dtype in DTYPES:
        with torch.no_grad(), torch.autocast(DEVICE, dtype=DTYPES[dtype], enabled=dtype != "fp32"):
            got = gpu(**on_gpu).logits
        assert all(torch.isfinite(t).all() for t in _flat(got)), dtype
        err = _rel(got, expected)
        assert err <= HEAD_TOL[dtype], f"{name} {dtype}: rel err {err:.2e} vs CPU fp32 (<= {HEAD_TOL[dtype]})"


@pytest.mark.parametrize("name", HEAD_NAMES)
def test_training_step_on_cuda_equals_cpu(name):
    """A training step's loss and fp32 gradients (train mode, dropout 0) on CUDA equal the CPU's; under bf16
    autocast with the configured dropout the loss and every gradient are finite."""
    model = _build(name, attention_probs_dropout_prob=0.0).train()
    kwargs, labels = _inputs(name, model.config)
    loss = model(**kwargs, **labels).loss
    loss.backward()
    cpu_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    gpu = copy.deepcopy(model).to(DEVICE)
    gpu.zero_grad(set_to_none=True)
    gpu_loss = gpu(**_to(kwargs, DEVICE), **_to(labels, DEVICE)).loss
    gpu_loss.backward()
    assert abs(gpu_loss.item() - loss.item()) <= 1e-5 * max(1.0, abs(loss.item()))
    scale = max(g.norm().item() for g in cpu_grads.values())
    for n, p in gpu.named_parameters():
        if n in cpu_grads:
            got = torch.zeros_like(p) if p.grad is None else p.grad
            torch.testing.assert_close(got.cpu(), cpu_grads[n], atol=1e-5 * scale, rtol=1e-4, msg=n)

    noisy = _build(name).to(DEVICE).train()  # the configured attention dropout (0.1)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        out = noisy(**_to(kwargs, DEVICE), **_to(labels, DEVICE))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in noisy.parameters() if p.grad is not None)


def test_chunked_decoding_equals_unchunked_on_cuda():
    flow = _build("optical-flow").eval().to(DEVICE)
    x = _to(_inputs("optical-flow", flow.config)[0], DEVICE)["inputs"]
    mm = _build("multimodal").eval().to(DEVICE)
    mm_inputs = _to(_inputs("multimodal", mm.config)[0], DEVICE)["inputs"]
    lm = _build("language").eval().to(DEVICE)
    lm_kwargs = _to(_inputs("language", lm.config)[0], DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(flow(x, decode_chunk_size=100).logits, flow(x).logits, atol=1e-5, rtol=1e-5)
        whole = mm(mm_inputs).logits
        chunked = mm(mm_inputs, decode_chunk_size=300).logits
        for key in whole:
            torch.testing.assert_close(chunked[key], whole[key], atol=1e-5, rtol=1e-5, msg=key)
        run = lm.perceiver.run
        torch.testing.assert_close(run(lm_kwargs["inputs"], lm_kwargs["attention_mask"], decode_chunk_size=7)[0].logits,
                                   run(lm_kwargs["inputs"], lm_kwargs["attention_mask"])[0].logits,
                                   atol=1e-5, rtol=1e-5)


def test_compiled_head_on_cuda_matches_eager():
    """``torch.compile`` (inductor) on CUDA computes what eager does (the compiled graph takes torch's SDPA)."""
    model = _build("vision-fourier").eval().to(DEVICE)
    x = _to(_inputs("vision-fourier", model.config)[0], DEVICE)["inputs"]
    compiled = torch.compile(model)
    with torch.no_grad():
        expected = model(x).logits
        got = compiled(x).logits
    assert _rel(got, expected) <= 1e-5
