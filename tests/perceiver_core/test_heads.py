"""Behaviour of the seven heads beyond parity: gradients, masks, losses, full multimodal decoding."""

from __future__ import annotations

import pytest
import torch
from _sample_inputs import sample_inputs

from perceiver_core import PerceiverConfig, PerceiverModel, presets
from perceiver_core.losses import endpoint_error


@pytest.mark.parametrize("name", presets.names())
def test_every_parameter_gets_a_gradient(name):
    cfg = presets.config(name, tiny=True, attention_probs_dropout_prob=0.0)
    model = presets.build(name, tiny=True, attention_probs_dropout_prob=0.0).train()
    kwargs = sample_inputs(name, cfg)
    if name == "multimodal":
        # label masking (p=1) replaces the label input by the mask token, so the label pass gets no gradient
        # through its input; supervise every modality so every decoder/postprocessor weight is used.
        kwargs["labels"] = {"image": kwargs["inputs"]["image"], "audio": kwargs["inputs"]["audio"],
                            "label": torch.tensor([1, 2])}
        kwargs["inputs"]["image"].requires_grad_(True)
        loss = model(**kwargs).loss
    elif name == "optical-flow":
        h, w = cfg.train_size
        loss = model(**kwargs, labels=torch.randn(2, h, w, 2)).loss
    elif name == "language":
        loss = model(**kwargs, labels=kwargs["inputs"]).loss
    else:
        loss = model(**kwargs, labels=torch.tensor([1, 3])).loss
    loss.backward()
    # A key bias adds the same constant to every score of a query row, so softmax cancels it exactly: its true
    # gradient is zero, and the fast cross-attention path (keys folded into the queries) never touches it.
    frozen = [n for n, p in model.named_parameters()
              if (p.grad is None or not torch.isfinite(p.grad).all()) and not n.endswith("to_k.bias")]
    # Multimodal: the label input is always replaced by its mask token (p = 1), so the label padding gets no
    # gradient; audio and image mask tokens exist (transformers has them) but p = 0 never uses them.
    expected_frozen = ["perceiver.input_preprocessor.paddings.audio.mask",
                       "perceiver.input_preprocessor.paddings.image.mask",
                       "perceiver.input_preprocessor.paddings.label.padding"] if name == "multimodal" else []
    assert frozen == expected_frozen
    zero = [n for n, p in model.named_parameters()
            if p.grad is not None and p.grad.abs().sum() == 0 and not n.endswith("to_k.bias")]
    assert zero == []


def test_padding_mask_hides_padded_tokens_and_nothing_else():
    model = presets.build("language", tiny=True).eval()
    ids = torch.randint(6, 262, (1, 20))
    mask = torch.ones(1, 20, dtype=torch.long)
    mask[:, 12:] = 0
    changed_pad = ids.clone()
    changed_pad[:, 15] = 7
    changed_real = ids.clone()
    changed_real[:, 5] = 7
    with torch.no_grad():
        base = model(inputs=ids, attention_mask=mask).logits
        assert torch.allclose(base, model(inputs=changed_pad, attention_mask=mask).logits, atol=1e-6)
        assert not torch.allclose(base, model(inputs=changed_real, attention_mask=mask).logits, atol=1e-4)
        # without the mask the padded token does matter
        unmasked = model(inputs=ids).logits
        assert not torch.allclose(unmasked, model(inputs=changed_pad).logits, atol=1e-4)
        # truncating the padding away gives the same outputs as masking it
        assert torch.allclose(base, model(inputs=ids[:, :12]).logits, atol=1e-5)


def test_fully_masked_row_is_finite():
    model = presets.build("language", tiny=True).eval()
    ids = torch.randint(6, 262, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1] = 0
    with torch.no_grad():
        out = model(inputs=ids, attention_mask=mask).logits
    assert torch.isfinite(out).all()


def test_attention_mask_shape_is_checked():
    model = presets.build("language", tiny=True).eval()
    with pytest.raises(ValueError, match="attention_mask"):
        model(inputs=torch.randint(6, 262, (1, 8)), attention_mask=torch.ones(1, 9))


def test_multimodal_decodes_every_point_without_subsampling():
    cfg = presets.config("multimodal", tiny=True)
    model = presets.build("multimodal", tiny=True).eval()
    kwargs = sample_inputs("multimodal", cfg)
    t, h, w = cfg.output_shape[1:]
    with torch.no_grad():
        full = model(inputs=kwargs["inputs"]).logits
        recon = model.autoencode(kwargs["inputs"], chunk_size=100)
        points = kwargs["subsampled_output_points"]
        sub = model(**kwargs).logits
    assert full["image"].shape == (2, t * h * w, 3)
    assert full["audio"].shape == (2, cfg.num_frames * cfg.audio_samples_per_frame)
    assert full["label"].shape == (2, cfg.num_labels)
    assert recon["image"].shape == (2, t, h, w, 3)
    assert torch.allclose(recon["image"].reshape(2, -1, 3), full["image"], atol=1e-5)
    # a subsampled decode returns exactly the selected rows of the full decode
    assert torch.allclose(sub["image"], full["image"][:, points["image"]], atol=1e-5)
    audio_rows = full["audio"].reshape(2, -1, cfg.samples_per_patch)[:, points["audio"]].reshape(2, -1)
    assert torch.allclose(sub["audio"], audio_rows, atol=1e-5)


def test_multimodal_loss_weights_and_per_modality_losses():
    cfg = presets.config("multimodal", tiny=True)
    model = presets.build("multimodal", tiny=True).eval()
    kwargs = sample_inputs("multimodal", cfg)
    labels = {"image": kwargs["inputs"]["image"], "audio": kwargs["inputs"]["audio"], "label": torch.tensor([0, 1])}
    with torch.no_grad():
        out = model(**kwargs, labels=labels, loss_weights={"image": 1.0, "audio": 0.5, "label": 0.0})
    expected = out.losses["image"] + 0.5 * out.losses["audio"]
    assert torch.allclose(out.loss, expected)
    assert set(out.losses) == {"image", "audio", "label"}


def test_optical_flow_any_size_and_epe_loss():
    model = presets.build("optical-flow", tiny=True).eval()
    x = torch.randn(1, 2, 27, 20, 28)
    target = torch.zeros(1, 20, 28, 2)
    valid = torch.zeros(1, 20, 28, dtype=torch.bool)
    valid[:, :10] = True
    with torch.no_grad():
        out = model(inputs=x, labels=target, valid_mask=valid)
    assert out.logits.shape == (1, 20, 28, 2)
    expected = out.logits[:, :10].norm(dim=-1).mean()
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_endpoint_error_known_values():
    flow = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([3.0, 4.0]).expand(1, 2, 2, 2)
    assert endpoint_error(flow, target).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="shape"):
        endpoint_error(flow, target[:, :1])


def test_outputs_index_like_transformers_tuples():
    model = presets.build("vision-fourier", tiny=True).eval()
    with torch.no_grad():
        out = model(inputs=torch.randn(1, 3, 16, 16), labels=torch.tensor([2]))
    loss, logits = out[0], out[1]
    assert loss is out.loss and logits is out.logits
    assert out["logits"] is out.logits


def test_bare_model_requires_d_model_inputs():
    cfg = PerceiverConfig(num_latents=4, d_latents=16, d_model=8, num_self_attends_per_block=1,
                          num_self_attention_heads=2, num_cross_attention_heads=1)
    model = PerceiverModel(cfg).eval()
    out = model(inputs=torch.randn(2, 5, 8))
    assert out.last_hidden_state.shape == (2, 4, 16) and out.logits is None
    with pytest.raises(ValueError, match="d_model"):
        model(inputs=torch.randn(2, 5, 9))
