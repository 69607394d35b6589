"""Fast paths give the same answers: chunked == unchunked decoding, per-example output points == per-row runs,
torch.compile == eager (no graph breaks in the encoder), checkpointed == plain gradients, bf16 close to fp32."""

from __future__ import annotations

import pytest
import torch
from _sample_inputs import sample_inputs

from perceiver_core import presets

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _model(name: str, **overrides):
    torch.manual_seed(0)
    return presets.build(name, tiny=True, **overrides).eval()


def _multimodal_inputs(cfg, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    t, s = cfg.num_frames, cfg.image_size
    return {"image": torch.randn(batch, t, 3, s, s, generator=g),
                "audio": torch.randn(batch, t * cfg.audio_samples_per_frame, 1, generator=g),
                "label": torch.zeros(batch, cfg.num_labels)}


# ------------------------------------------------------------------------------------------- chunked decoding
def test_flow_chunked_decode_equals_unchunked():
    model = _model("optical-flow")
    x = sample_inputs("optical-flow", model.config)["inputs"]
    with torch.no_grad():
        whole = model(x).logits
        chunked = model(x, decode_chunk_size=100).logits  # 1536 pixels in uneven chunks
    torch.testing.assert_close(chunked, whole, **TOL)


def test_masked_lm_chunked_decode_equals_unchunked():
    model = _model("language")
    kwargs = sample_inputs("language", model.config)
    with torch.no_grad():
        whole, _ = model.perceiver.run(kwargs["inputs"], kwargs["attention_mask"])
        chunked, _ = model.perceiver.run(kwargs["inputs"], kwargs["attention_mask"], decode_chunk_size=7)
        points = torch.arange(3, 50, 2)
        sub, _ = model.perceiver.run(kwargs["inputs"], kwargs["attention_mask"], points, decode_chunk_size=5)
    torch.testing.assert_close(chunked.logits, whole.logits, **TOL)
    torch.testing.assert_close(sub.logits, whole.logits[:, points], **TOL)


def test_multimodal_whole_clip_equals_chunks_and_transformers_style_chunking():
    model = _model("multimodal")
    cfg = model.config
    inputs = _multimodal_inputs(cfg)
    with torch.no_grad():
        whole = model(inputs).logits  # every point, one decode
        chunked = model.autoencode(inputs, chunk_size=300)  # encode once, decode 300 points at a time
        # transformers' recipe: n calls, each re-encoding and decoding a 1/n slice of every modality
        n = 4
        n_image = cfg.num_frames * cfg.image_size ** 2
        n_audio = cfg.num_frames * cfg.audio_samples_per_frame // cfg.samples_per_patch
        parts = [model(inputs, subsampled_output_points={
            "image": torch.arange(i * n_image // n, (i + 1) * n_image // n),
            "audio": torch.arange(i * n_audio // n, (i + 1) * n_audio // n), "label": None}).logits for i in range(n)]
    b = inputs["image"].shape[0]
    torch.testing.assert_close(chunked["image"].reshape(b, -1, 3), whole["image"], **TOL)
    torch.testing.assert_close(chunked["audio"], whole["audio"], **TOL)
    torch.testing.assert_close(chunked["label"], whole["label"], **TOL)
    torch.testing.assert_close(torch.cat([p["image"] for p in parts], 1), whole["image"], **TOL)
    torch.testing.assert_close(torch.cat([p["audio"] for p in parts], 1), whole["audio"], **TOL)
    torch.testing.assert_close(parts[-1]["label"], whole["label"], **TOL)


# ------------------------------------------------------------------------------------------- per-example points
def test_per_example_points_equal_per_row_runs_multimodal():
    model = _model("multimodal")
    cfg = model.config
    inputs = _multimodal_inputs(cfg)
    labels = {"image": torch.randn(2, cfg.num_frames, 3, cfg.image_size, cfg.image_size),
                  "audio": torch.randn(2, cfg.num_frames * cfg.audio_samples_per_frame, 1),
                  "label": torch.tensor([1, 3])}
    g = torch.Generator().manual_seed(5)
    n_image = cfg.num_frames * cfg.image_size ** 2
    n_audio = cfg.num_frames * cfg.audio_samples_per_frame // cfg.samples_per_patch
    points = {"image": torch.stack([torch.randperm(n_image, generator=g)[:64] for _ in range(2)]),
                  "audio": torch.stack([torch.randperm(n_audio, generator=g)[:8] for _ in range(2)]), "label": None}
    assert not torch.equal(points["image"][0], points["image"][1])
    with torch.no_grad():
        batched = model(inputs, subsampled_output_points=points, labels=labels)
        rows = [model({k: v[i:i + 1] for k, v in inputs.items()},
                      subsampled_output_points={"image": points["image"][i], "audio": points["audio"][i],
                                                 "label": None},
                      labels={k: v[i:i + 1] for k, v in labels.items()}) for i in range(2)]
    for name in ("image", "audio", "label"):
        torch.testing.assert_close(batched.logits[name], torch.cat([r.logits[name] for r in rows]), **TOL)
    for name in ("image", "audio"):  # equal n per row: the batch loss is the mean of the row losses
        expected = (rows[0].losses[name] + rows[1].losses[name]) / 2
        torch.testing.assert_close(batched.losses[name], expected, **TOL)


@pytest.mark.parametrize("name", ["language", "optical-flow"])
def test_per_example_points_equal_per_row_runs(name):
    model = _model(name)
    kwargs = sample_inputs(name, model.config)
    x, mask = kwargs["inputs"], kwargs.get("attention_mask")
    n_out = model.perceiver.decoder.num_outputs if name == "language" else x.shape[-1] * x.shape[-2]
    g = torch.Generator().manual_seed(2)
    points = torch.stack([torch.randperm(n_out, generator=g)[:20] for _ in range(2)])  # (B, n)
    with torch.no_grad():
        batched, _ = model.perceiver.run(x, mask, points)
        rows = [model.perceiver.run(x[i:i + 1], None if mask is None else mask[i:i + 1], points[i])[0]
                for i in range(2)]
    torch.testing.assert_close(batched.logits, torch.cat([r.logits for r in rows]), **TOL)


# ------------------------------------------------------------------------------------------- torch.compile
@pytest.mark.parametrize("name", ["language", "optical-flow", "multimodal"])
def test_encoder_compiles_without_graph_breaks(name):
    model = _model(name)
    kwargs = sample_inputs(name, model.config)
    with torch.no_grad():
        pre = model.perceiver.preprocess(kwargs["inputs"])
        mask = kwargs.get("attention_mask")
        mask = None if mask is None else mask.bool()
        explanation = torch._dynamo.explain(model.perceiver.encoder)(pre.inputs, mask)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        torch._dynamo.reset()
        compiled = torch.compile(model.perceiver.encoder, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(pre.inputs, mask).latents,
                                   model.perceiver.encoder(pre.inputs, mask).latents,
                                   **TOL)


@pytest.mark.parametrize("name", presets.names())
def test_every_head_compiles_and_matches_eager(name):
    """Dynamo traces each whole head (graph breaks allowed outside the encoder); the slow test below runs inductor."""
    model = _model(name)
    kwargs = sample_inputs(name, model.config)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        expected, got = model(**kwargs).logits, compiled(**kwargs).logits
    for e, g in zip(*(v.values() if isinstance(v, dict) else [v] for v in (expected, got))):
        torch.testing.assert_close(g, e, **TOL)


@pytest.mark.slow
def test_inductor_compiled_head_matches_eager():
    model = _model("optical-flow")
    x = sample_inputs("optical-flow", model.config, batch=1)["inputs"]
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).logits, model(x).logits, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------- training paths
@pytest.mark.parametrize("name", ["language", "optical-flow", "multimodal"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    model = _model(name, attention_probs_dropout_prob=0.0).train()
    kwargs = sample_inputs(name, model.config)
    grads = []
    for enabled in (False, True):
        if enabled:
            model.gradient_checkpointing_enable()
        model.zero_grad()
        out = model(**kwargs).logits
        loss = sum(v.float().square().mean() for v in out.values()) if isinstance(out, dict) else out.square().mean()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-4, msg=n)


@pytest.mark.parametrize("name", presets.names())
def test_bf16_autocast_close_to_fp32(name):
    model = _model(name)
    kwargs = sample_inputs(name, model.config)
    with torch.no_grad():
        exact = model(**kwargs).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(**kwargs).logits
    pairs = [(low[k], exact[k]) for k in exact] if isinstance(exact, dict) else [(low, exact)]
    for a, b in pairs:
        assert torch.isfinite(a).all()
        err = (a.float() - b).norm() / b.norm()
        assert err < 2e-2, (name, err.item())


def test_bf16_weights_without_autocast():
    """A model cast to bf16 (inference without autocast): Fourier features are still built in fp32 and the big
    single-head attentions computed in fp32; the outputs stay close to the fp32 model's."""
    model = _model("optical-flow")
    x = sample_inputs("optical-flow", model.config)["inputs"]
    with torch.no_grad():
        exact = model(x).logits
        low = model.to(torch.bfloat16)(x.bfloat16()).logits
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - exact).norm() / exact.norm() < 3e-2
