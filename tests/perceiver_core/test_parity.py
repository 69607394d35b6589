"""Numerical parity with transformers' Perceiver on the same (seeded random) weights, both directions."""

from __future__ import annotations

import pytest
import torch
from _hf_helpers import hf_config, hf_model, max_abs_diff, sample_inputs, transformers

from perceiver_core import presets

TOL = 1e-4
NAMES = presets.names()


@pytest.fixture(scope="module", params=NAMES)
def pair(request, tmp_path_factory):
    """(name, config, transformers model, our model loaded from transformers' save_pretrained)."""
    name = request.param
    cfg = presets.config(name, tiny=True)
    hf = hf_model(name, cfg)
    path = tmp_path_factory.mktemp(name)
    hf.save_pretrained(path)
    ours = presets.get(name).head.from_pretrained(path)
    return name, cfg, hf, ours


def test_transformers_checkpoint_loads_and_matches(pair):
    name, cfg, hf, ours = pair
    kwargs = sample_inputs(name, cfg)
    with torch.no_grad():
        expected = hf(**kwargs, output_hidden_states=True)
        got = ours(**kwargs, output_hidden_states=True)
    assert max_abs_diff(expected.logits, got.logits) <= TOL
    assert max_abs_diff(expected.hidden_states, got.hidden_states) <= TOL


def test_attentions_match(pair):
    name, cfg, hf, ours = pair
    kwargs = sample_inputs(name, cfg)
    with torch.no_grad():
        expected = hf(**kwargs, output_attentions=True)
        got = ours(**kwargs, output_attentions=True)
    assert len(got.attentions) == cfg.num_blocks * cfg.num_self_attends_per_block
    assert max_abs_diff(expected.attentions, got.attentions) <= TOL
    assert max_abs_diff(expected.cross_attentions, got.cross_attentions) <= TOL


def test_our_checkpoint_loads_in_transformers(pair, tmp_path):
    name, cfg, _, ours = pair
    reseeded = presets.get(name).head(cfg)  # fresh random weights, different from the transformers seed
    reseeded.eval()
    reseeded.save_pretrained(tmp_path)
    cls = getattr(transformers, presets.get(name).head.__name__)
    hf = cls.from_pretrained(tmp_path).eval()
    kwargs = sample_inputs(name, cfg, seed=3)
    with torch.no_grad():
        assert max_abs_diff(hf(**kwargs).logits, reseeded(**kwargs).logits) <= TOL


def test_masked_lm_loss_matches():
    cfg = presets.config("language", tiny=True)
    hf = hf_model("language", cfg)
    ours = presets.get("language").head(cfg).eval()
    ours.load_state_dict(_ours_from_hf(hf, "PerceiverForMaskedLM", ours))
    kwargs = sample_inputs("language", cfg)
    labels = torch.full((2, cfg.max_position_embeddings), -100)
    labels[:, 3:9] = kwargs["inputs"][:, 3:9]
    with torch.no_grad():
        assert abs(hf(**kwargs, labels=labels).loss.item() - ours(**kwargs, labels=labels).loss.item()) <= TOL
        # labels as long as the input are padded with -100 (transformers requires max_position_embeddings)
        assert abs(ours(**kwargs, labels=labels[:, :24]).loss.item() - ours(**kwargs, labels=labels).loss.item()) < 1e-6


@pytest.mark.parametrize("labels", [torch.tensor([1, 0]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])])
def test_sequence_classification_matches(labels, tmp_path):
    cfg = presets.config("language", tiny=True, num_blocks=3, num_self_attends_per_block=1)
    torch.manual_seed(0)
    hf = transformers.PerceiverForSequenceClassification(hf_config(cfg)).eval()
    hf.save_pretrained(tmp_path)
    from perceiver_core import PerceiverForSequenceClassification

    ours = PerceiverForSequenceClassification.from_pretrained(tmp_path)
    kwargs = sample_inputs("language", cfg)
    with torch.no_grad():
        expected = hf(**kwargs, labels=labels, output_hidden_states=True)
        got = ours(**kwargs, labels=labels, output_hidden_states=True)
    assert max_abs_diff(expected.logits, got.logits) <= TOL
    assert abs(expected.loss.item() - got.loss.item()) <= TOL
    assert len(got.hidden_states) == len(expected.hidden_states) == 6  # 3 blocks x (1 layer + 1)


def test_interpolate_pos_encoding_matches(tmp_path):
    cfg = presets.config("vision-learned", tiny=True)
    hf = hf_model("vision-learned", cfg)
    hf.save_pretrained(tmp_path)
    from perceiver_core import PerceiverForImageClassificationLearned

    ours = PerceiverForImageClassificationLearned.from_pretrained(tmp_path)
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        expected = hf(inputs=x, interpolate_pos_encoding=True).logits
        got = ours(inputs=x, interpolate_pos_encoding=True).logits
    assert max_abs_diff(expected, got) <= TOL
    with pytest.raises(ValueError, match="interpolate_pos_encoding"):
        ours(inputs=x)


def test_qk_v_channel_overrides_and_query_shape(tmp_path):
    cfg = presets.config("vision-fourier", tiny=True, qk_channels=16, v_channels=32,
                         cross_attention_shape_for_attention="q", use_query_residual=False)
    hf = hf_model("vision-fourier", cfg)
    hf.save_pretrained(tmp_path)
    from perceiver_core import PerceiverForImageClassificationFourier

    ours = PerceiverForImageClassificationFourier.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        assert max_abs_diff(hf(inputs=x).logits, ours(inputs=x).logits) <= TOL


def _ours_from_hf(hf, architecture, ours):
    from perceiver_core.convert import from_transformers

    state, report = from_transformers(hf.state_dict(), {k: v.shape for k, v in ours.state_dict().items()},
                                      architecture)
    assert report.ok, report.describe()
    return state
