"""Every kernel path (attention padding, query chunks, projection re-association, oneDNN, bf16) equals the plain
maths, and the kernel switches (per-module attributes, ``kernel_options``) choose the path that runs."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from perceiver_core import presets
from perceiver_core.attention import Attention, additive_mask
from perceiver_core.kernels import attention as fa
from perceiver_core.kernels import kernel_options, set_kernel_options
from perceiver_core.kernels import reassociation as ra
from perceiver_core.kernels.onednn_linear import HAS_ONEDNN_LINEAR, Linear
from perceiver_core.kernels.options import resolve

# Perceiver's single-head widths are 261, 322, 512, 704, 1024; tests use odd stand-ins of the same kind.
SHAPES = [  # (heads, queries, keys, qk dim, v dim)
    (1, 8, 50, 13, 13),
    (1, 9, 40, 37, 37),
    (1, 5, 33, 261, 261),
    (2, 7, 19, 8, 40),  # the language model's narrow q/k, wide v (32 / 160)
    (3, 6, 21, 12, 5),
]


def _qkv(h, o, m, dqk, dv, batch=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, h, o, dqk, generator=g)
    k = torch.randn(batch, h, m, dqk, generator=g)
    v = torch.randn(batch, h, m, dv, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _mask(batch, m, fully_masked_row=True):
    keep = torch.ones(batch, m, dtype=torch.bool)
    keep[0, m // 2:] = False
    if fully_masked_row:
        keep[-1] = False  # a fully padded example: transformers gives a uniform softmax, so must we
    return additive_mask(keep, torch.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_dispatcher_matches_reference(shape, masked):
    q, k, v = _qkv(*shape)
    mask = _mask(2, shape[2]) if masked else None
    scale = 1 / math.sqrt(shape[3])
    got = fa.scaled_dot_product_attention(q, k, v, mask, 0.0, scale)
    torch.testing.assert_close(got, fa.reference_attention(q, k, v, mask, scale), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_plan_matches_reference(shape):
    """Zero-padding to the CUDA alignment, padding unequal widths, and query chunking are all exact."""
    q, k, v = _qkv(*shape)
    h, o, m, dqk, dv = shape
    mask = _mask(2, m)
    scale = 1 / math.sqrt(dqk)
    expected = fa.reference_attention(q, k, v, mask, scale)
    cuda = fa.plan_attention(2 * h, o, m, dqk, dv, device_type="cuda", dtype=torch.float32)
    assert cuda.qk_dim % 8 == 0 and cuda.v_dim % 8 == 0
    plans = [cuda, fa.AttentionPlan("cpu_flash", max(dqk, dv), max(dqk, dv)),
             fa.AttentionPlan("math", dqk, dv, query_chunk=3), fa.AttentionPlan("math", dqk + 3, dv + 5, 2),
             fa.AttentionPlan("onednn_chunked", dqk, dv, query_chunk=4)]
    for plan in plans:
        got = fa.run_plan(q, k, v, mask, 0.0, scale, plan)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=f"{plan}")


def test_query_chunked_mask_per_query():
    """A (B, H, O, M) mask is sliced with the queries."""
    q, k, v = _qkv(2, 10, 12, 6, 6)
    mask = torch.randn(2, 2, 10, 12)
    got = fa.run_plan(q, k, v, mask, 0.0, 0.3, fa.AttentionPlan("math", 6, 6, query_chunk=4))
    torch.testing.assert_close(got, fa.reference_attention(q, k, v, mask, 0.3), atol=1e-5, rtol=1e-5)


def test_plans_for_perceiver_shapes():
    for d in (261, 322, 512, 704, 1024):  # published single-head widths
        cpu = fa.plan_attention(1, 2048, 182528, d, d, device_type="cpu", dtype=torch.float32)
        assert cpu.kernel == "onednn_chunked" and cpu.query_chunk == fa.ONEDNN_Q_BLOCK
        # training (autograd) takes torch's CPU flash kernel, which takes any width without padding
        cpu = fa.plan_attention(1, 2048, 182528, d, d, device_type="cpu", dtype=torch.float32, needs_grad=True)
        assert cpu == fa.AttentionPlan("cpu_flash", d, d)
        cuda = fa.plan_attention(1, 2048, 182528, d, d, device_type="cuda", dtype=torch.bfloat16)
        assert cuda.kernel == "efficient" and cuda.qk_dim == cuda.v_dim == -(-d // 8) * 8
    assert fa.plan_attention(8, 256, 2048, 32, 160, device_type="cuda", dtype=torch.bfloat16).kernel == "efficient"
    assert fa.plan_attention(8, 256, 256, 128, 128, device_type="cuda", dtype=torch.bfloat16).kernel == "flash"
    # language model on CPU (q/k 32, v 160, batch 64): either padded onto the fused kernel or MATH with the
    # score matrix bounded by query chunks
    mlm = fa.plan_attention(8 * 64, 256, 2048, 32, 160, device_type="cpu", dtype=torch.float32)
    if mlm.kernel == "math":
        assert mlm.query_chunk * 2 * 8 * 64 * 2048 * 4 <= fa.MATH_SCORE_BUDGET_BYTES
    else:
        assert mlm == fa.AttentionPlan("cpu_flash", 160, 160)
    # attention dropout (training) has no fused CPU kernel: MATH, chunked so 182,528 flow queries stay bounded
    drop = fa.plan_attention(1, 182528, 2048, 322, 322, device_type="cpu", dtype=torch.float32, dropout=0.1)
    assert drop.kernel == "math" and drop.query_chunk < 182528


def test_attention_backend_report():
    shapes = (1, 1, 2048, 322), (1, 1, 182528, 322), (1, 1, 182528, 322)
    assert fa.attention_backend(*shapes).startswith("onednn_chunked")
    assert fa.attention_backend(*shapes, needs_grad=True) == "cpu_flash"
    assert fa.attention_backend((1, 8, 512, 128), (1, 8, 512, 128), (1, 8, 512, 128)) == "cpu_flash"
    assert fa.attention_backend((1, 1, 8, 322), (1, 1, 9, 322), (1, 1, 9, 322), dropout=0.1).startswith("math")
    text = fa.attention_backend((1, 1, 8, 261), (1, 1, 9, 261), (1, 1, 9, 261), device="cuda", has_mask=True) \
        if torch.cuda.is_available() else fa.plan_attention(1, 8, 9, 261, 261, device_type="cuda",
                                                           dtype=torch.float32).describe(261, 261)
    assert "264" in text


def test_recorder_names_kernel_and_order():
    attn = Attention(q_channels=16, kv_channels=24, qk_channels=24, v_channels=24, out_channels=16, num_heads=1)
    with torch.no_grad(), fa.record_attention_calls() as calls:
        attn(torch.randn(1, 4, 16), torch.randn(1, 200, 24))
    assert len(calls) == 1 and calls[0].startswith("keys_are_inputs") and "cpu_flash" in calls[0]


def test_bf16_close_to_fp32_and_mask_is_dtype_safe():
    q, k, v = _qkv(1, 16, 300, 37, 37)
    mask = _mask(2, 300)  # float32 finfo.min: must not overflow to -inf in bf16 / fp16
    expected = fa.reference_attention(q, k, v, mask)
    for dtype in (torch.bfloat16, torch.float16):
        got = fa.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, 0.0, 37 ** -0.5)
        assert got.dtype == dtype and torch.isfinite(got).all()
        err = (got.float() - expected).norm() / expected.norm()
        assert err < 2e-2, (dtype, err)


@pytest.mark.parametrize("case", ["encoder", "decoder", "narrow_decoder"])
def test_projection_reassociation_is_exact(case):
    """One-head cross-attention with keys = inputs (encoder) or unprojected queries (decoder) == standard."""
    torch.manual_seed(0)
    if case == "encoder":  # few queries (latents), many keys, kv-shaped qk width, padding mask
        attn = Attention(q_channels=32, kv_channels=13, qk_channels=13, v_channels=13, out_channels=32,
                         num_heads=1)
        x, kv = torch.randn(2, 6, 32), torch.randn(2, 300, 13)
        keep = torch.ones(2, 300, dtype=torch.bool)
        keep[0, 100:] = False
        keep[1] = False  # fully masked example
        expected_order = "keys_are_inputs"
    else:  # many queries, few latents (optical-flow / multimodal decoders)
        cq = 13 if case == "decoder" else 40
        attn = Attention(q_channels=cq, kv_channels=32, qk_channels=32, v_channels=32, out_channels=cq,
                         num_heads=1)
        x, kv, keep = torch.randn(2, 500, cq), torch.randn(2, 6, 32), None
        if case == "narrow_decoder":  # decoders get no mask in Perceiver, but the path must take one
            keep = torch.ones(2, 6, dtype=torch.bool)
            keep[0, 3:] = False
            keep[1] = False
        expected_order = "queries_are_inputs"
    for p in attn.parameters():  # non-zero biases: the re-association must carry them exactly
        torch.nn.init.normal_(p, std=0.3)
    with torch.no_grad(), fa.record_attention_calls() as calls:
        got, _ = attn(x, kv, keep)
    assert calls[0].startswith(expected_order), calls
    attn.reassociate = False  # this module's switch: the textbook order
    with torch.no_grad(), fa.record_attention_calls() as calls:
        expected, _ = attn(x, kv, keep)
    assert calls[0].startswith("standard"), calls
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if keep is not None:  # and gradients agree
        grads = []
        for flag in (True, False):
            attn.reassociate = flag
            attn.zero_grad()
            attn(x, kv, keep)[0].square().sum().backward()
            # the key bias gets no gradient when keys are the inputs: softmax ignores it (zero in theory)
            grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in attn.parameters()])
        scale = max(b.abs().max().item() for b in grads[1])  # grads reach ~1e4; the key bias' is ~0 (noise)
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-6 * scale, rtol=1e-4)


def test_projection_order_choices():
    # flow encoder: 2048 latents x 182,528 pixels of 322 channels -> keys are the inputs
    assert ra.projection_order(1, 2048, 182528, 512, 322, 322, 322, 512) == "keys_are_inputs"
    # flow decoder: 182,528 pixel queries (322) x 2048 latents (512) -> queries stay unprojected
    assert ra.projection_order(1, 182528, 2048, 322, 512, 512, 512, 322) == "queries_are_inputs"
    # multi-head and self-attention-like shapes keep the standard order
    assert ra.projection_order(8, 256, 2048, 1280, 768, 32, 160, 1280) == "standard"
    assert ra.projection_order(1, 512, 512, 1024, 1024, 1024, 1024, 1024) == "standard"
    # the switch, as an argument (a module's attribute) and as an enclosing block
    assert ra.projection_order(1, 2048, 182528, 512, 322, 322, 322, 512, reassociate=False) == "standard"
    with kernel_options(reassociate=False):
        assert ra.projection_order(1, 2048, 182528, 512, 322, 322, 322, 512) == "standard"


@pytest.mark.parametrize("keys", [40, 300])
def test_fully_masked_rows_have_sane_gradients(keys):
    """torch's fused CPU kernel gets the backward of finfo.min-masked rows wrong (its log-sum-exp cannot hold
    log(M) next to finfo.min); the dispatcher must match the reference: exactly on the partly masked example, and
    for the fully masked one (output = mean of v) on v, with zero gradient to its q and k (the output does not
    depend on them; autograd through the materialised finfo.min scores returns rounding artefacts there)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 1, 6 if i == 0 else keys, 13, generator=g, requires_grad=True) for i in range(3))
    keep = torch.ones(2, keys, dtype=torch.bool)
    keep[0, keys // 3:] = False
    keep[1] = False
    mask = additive_mask(keep, torch.float32)
    grads = []
    for fn in (fa.scaled_dot_product_attention, lambda *a: fa.reference_attention(*a[:4], a[5])):
        out = fn(q, k, v, mask, 0.0, 13 ** -0.5)
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    (dq, dk, dv), (rq, rk, rv) = grads
    for a, b in ((dq[0], rq[0]), (dk[0], rk[0]), (dv, rv)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert dq[1].abs().max() == 0 and dk[1].abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onednn_chunked_path_matches_reference(dtype, monkeypatch):
    """A Perceiver-like wide single head big enough for the oneDNN path, with a padding mask; small tiles so
    that the online softmax runs over several key blocks, including fully masked ones."""
    monkeypatch.setattr(fa, "ONEDNN_Q_BLOCK", 32)
    monkeypatch.setattr(fa, "ONEDNN_KV_BLOCK", 1000)
    q, k, v = _qkv(1, 70, 15000, 72, 80, dtype=dtype)
    keep = torch.ones(2, 15000, dtype=torch.bool)
    keep[0, :9500] = False  # the first key blocks are fully masked for example 0
    keep[0, 12000:13100] = False
    mask = additive_mask(keep, torch.float32)
    with torch.no_grad(), fa.record_attention_calls() as calls:
        got = fa.scaled_dot_product_attention(q, k, v, mask, 0.0, 72 ** -0.5)
    assert "onednn_chunked" in calls[0]
    expected = fa.reference_attention(q.float(), k.float(), v.float(), mask, 72 ** -0.5)
    if dtype == torch.float32:
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    else:
        assert (got.float() - expected).norm() / expected.norm() < 1e-2


# ------------------------------------------------------------------------------------------- switches
class _OpNames(TorchDispatchMode):
    """Names of the aten / mkldnn ops run inside (tells oneDNN's linear from ``F.linear``)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name)
        return func(*args, **(kwargs or {}))


ONEDNN_OP = "mkldnn::_linear_pointwise"
needs_onednn = pytest.mark.skipif(not HAS_ONEDNN_LINEAR, reason="torch built without oneDNN's linear op")


def _big_single_head(seed=0):
    """O x M = 2^20 scores at width 64: the smallest call the oneDNN attention path takes."""
    q, k, v = _qkv(1, 1024, 1024, 64, 64, batch=1, seed=seed)
    keep = torch.ones(1, 1024, dtype=torch.bool)
    keep[0, 700:] = False
    return q, k, v, additive_mask(keep, torch.float32)


@needs_onednn
def test_onednn_attention_switch_chooses_the_kernel():
    q, k, v, mask = _big_single_head()
    expected = fa.reference_attention(q, k, v, mask, 0.125)
    shapes = tuple(q.shape), tuple(k.shape), tuple(v.shape)
    assert fa.attention_backend(*shapes).startswith("onednn_chunked")
    assert fa.attention_backend(*shapes, onednn=False) == "cpu_flash"  # the argument (a module's attribute)
    with kernel_options(onednn_attention=False):
        assert fa.attention_backend(*shapes) == "cpu_flash"
        assert fa.attention_backend(*shapes, onednn=True) == "cpu_flash"  # the block wins over the argument
        with kernel_options(reassociate=False):  # nested, the other switch: onednn_attention stays off
            assert fa.attention_backend(*shapes) == "cpu_flash"
        with kernel_options(onednn_attention=True):
            assert fa.attention_backend(*shapes, onednn=False).startswith("onednn_chunked")
    assert fa.attention_backend(*shapes).startswith("onednn_chunked")  # restored on exit
    for context, onednn, kernel in ((kernel_options(), True, "onednn_chunked"),
                                    (kernel_options(onednn_attention=False), True, "cpu_flash"),
                                    (kernel_options(), False, "cpu_flash")):
        with torch.no_grad(), context, fa.record_attention_calls() as calls:
            got = fa.scaled_dot_product_attention(q, k, v, mask, 0.0, 0.125, onednn=onednn)
        assert kernel in calls[0], (onednn, calls)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_attention_module_attribute_and_block_switch_onednn_attention():
    torch.manual_seed(0)
    attn = Attention(q_channels=64, kv_channels=64, qk_channels=64, v_channels=64, out_channels=64, num_heads=1)
    attn.reassociate = False  # the standard order, so the kernel sees (1024 x 1024) scores at width 64
    x, kv = torch.randn(1, 1024, 64), torch.randn(1, 1024, 64)
    runs = {}
    for name, setting in (("default", None), ("attribute", "attribute"), ("block", "block")):
        attn.onednn_attention = setting != "attribute"
        context = kernel_options(onednn_attention=False) if setting == "block" else kernel_options()
        with torch.no_grad(), context, fa.record_attention_calls() as calls:
            runs[name] = attn(x, kv)[0]
        assert ("onednn_chunked" in calls[0]) == (name == "default"), (name, calls)
    torch.testing.assert_close(runs["attribute"], runs["default"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(runs["block"], runs["default"], atol=1e-5, rtol=1e-5)


def test_attention_module_attribute_and_block_switch_reassociation():
    torch.manual_seed(0)
    attn = Attention(q_channels=16, kv_channels=24, qk_channels=24, v_channels=24, out_channels=16, num_heads=1)
    x, kv = torch.randn(2, 4, 16), torch.randn(2, 200, 24)

    def order(context):
        with torch.no_grad(), context, fa.record_attention_calls() as calls:
            out = attn(x, kv)[0]
        return calls[0].split(":")[0], out

    default, out = order(kernel_options())
    assert default == "keys_are_inputs"
    blocked, out_blocked = order(kernel_options(reassociate=False))
    assert blocked == "standard"
    attn.reassociate = False
    assert order(kernel_options())[0] == "standard"
    assert order(kernel_options(reassociate=True))[0] == "keys_are_inputs"  # an enclosing block wins
    torch.testing.assert_close(out_blocked, out, atol=1e-5, rtol=1e-5)


@needs_onednn
def test_linear_switch_chooses_onednn_or_f_linear():
    torch.manual_seed(0)
    layer = Linear(48, 40)
    x = torch.randn(3, 7, 48)
    expected = torch.nn.functional.gelu(x.double() @ layer.weight.double().t() + layer.bias.double())

    def run(context):
        with torch.no_grad(), context, _OpNames() as ops:
            out = layer(x, gelu="none")
        torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
        return ONEDNN_OP in ops.names

    assert run(kernel_options())
    assert not run(kernel_options(onednn_linear=False))
    layer.onednn_linear = False
    assert not run(kernel_options())
    assert run(kernel_options(onednn_linear=True))
    assert "onednn_linear=False" in repr(layer)


def test_overrides_are_per_thread():
    seen = {}
    with kernel_options(reassociate=False, onednn_linear=False):
        worker = threading.Thread(target=lambda: seen.update(reassociate=resolve("reassociate", True)))
        worker.start()
        worker.join()
        assert not resolve("reassociate", True) and not resolve("onednn_linear", True)
        assert resolve("onednn_attention", False) is False  # not given: the argument decides
    assert seen == {"reassociate": True}
    assert resolve("reassociate", True) and resolve("onednn_linear", True)


def test_set_kernel_options_switches_a_whole_model():
    """All switches off == the textbook path (standard order, F.linear, torch's kernels), same numbers."""
    torch.manual_seed(0)
    model = presets.build("optical-flow", tiny=True).eval()
    x = torch.randn(1, 2, 27, 16, 24)
    with torch.no_grad(), fa.record_attention_calls() as calls, _OpNames() as ops:
        fast = model(x).logits
    assert {line.split(":")[0] for line in calls} >= {"keys_are_inputs", "queries_are_inputs"}
    assert ONEDNN_OP in ops.names or not HAS_ONEDNN_LINEAR
    changed = set_kernel_options(model, reassociate=False, onednn_linear=False, onednn_attention=False)
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    attentions = [m for m in model.modules() if isinstance(m, Attention)]
    assert changed == len(linears) + len(attentions) > 0
    assert not any(m.onednn_linear for m in linears)
    assert not any(m.reassociate or m.onednn_attention for m in attentions)
    with torch.no_grad(), fa.record_attention_calls() as calls, _OpNames() as ops:
        plain = model(x).logits
    assert {line.split(":")[0] for line in calls} == {"standard"} and ONEDNN_OP not in ops.names
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
