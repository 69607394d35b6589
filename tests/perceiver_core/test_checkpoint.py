"""Checkpoint loading and saving: safe formats, key conversion, clear errors on mismatches."""

from __future__ import annotations

import json

import pytest
import torch

from perceiver_core import (
    CheckpointMismatchError,
    PerceiverConfig,
    PerceiverForImageClassificationFourier,
    PerceiverForMaskedLM,
    PerceiverForSequenceClassification,
    load_pretrained,
    presets,
)
from perceiver_core.convert import to_transformers_key


def _roundtrip_equal(a, b, x):
    with torch.no_grad():
        return torch.equal(a(inputs=x).logits, b(inputs=x).logits)


def test_save_and_load_roundtrip(tmp_path):
    model = presets.build("vision-fourier", tiny=True).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_pretrained(tmp_path)
    assert type(loaded) is PerceiverForImageClassificationFourier
    assert _roundtrip_equal(model, loaded, torch.randn(1, 3, 16, 16))


def test_pytorch_model_bin_is_read_with_weights_only(tmp_path):
    model = presets.build("vision-fourier", tiny=True).eval()
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists()
    loaded = PerceiverForImageClassificationFourier.from_pretrained(tmp_path)
    assert _roundtrip_equal(model, loaded, torch.randn(1, 3, 16, 16))


def test_pickled_objects_are_refused(tmp_path):
    model = presets.build("vision-fourier", tiny=True)
    model.config.save_pretrained(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only"):
        PerceiverForImageClassificationFourier.from_pretrained(tmp_path)


def test_corrupt_safetensors_gives_clear_error(tmp_path):
    model = presets.build("vision-fourier", tiny=True)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        PerceiverForImageClassificationFourier.from_pretrained(tmp_path)


def test_missing_directory_and_weights(tmp_path):
    with pytest.raises(FileNotFoundError):
        PerceiverForImageClassificationFourier.from_pretrained(tmp_path / "nope")
    presets.config("vision-fourier", tiny=True).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        PerceiverForImageClassificationFourier.from_pretrained(tmp_path)


def test_mismatch_names_missing_unexpected_and_wrongly_shaped_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    model = presets.build("vision-fourier", tiny=True)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["perceiver.embeddings.latents"]
    state["perceiver.encoder.bogus.weight"] = torch.zeros(1)
    state["perceiver.decoder.decoder.final_layer.bias"] = torch.zeros(99)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError) as err:
        PerceiverForImageClassificationFourier.from_pretrained(tmp_path)
    message = str(err.value)
    assert "missing keys (1): perceiver.embeddings.latents" in message
    assert "unexpected keys (1): perceiver.encoder.bogus.weight" in message
    assert "perceiver.decoder.decoder.final_layer.bias (checkpoint [99], model [10])" in message
    report = err.value.report
    assert report.missing == ["perceiver.embeddings.latents"]


def test_mlm_checkpoint_initialises_a_classifier_non_strictly(tmp_path):
    mlm = presets.build("language", tiny=True)
    mlm.save_pretrained(tmp_path)
    clf = PerceiverForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert torch.equal(clf.perceiver.encoder.latents, mlm.perceiver.encoder.latents)
    assert clf.config.num_labels == 3
    assert any("final_layer" in k for k in clf.loading_info.missing)
    with pytest.raises(CheckpointMismatchError):
        PerceiverForSequenceClassification.from_pretrained(tmp_path, strict=True)


def test_config_json_roundtrip_keeps_labels_and_unknown_keys(tmp_path):
    cfg = PerceiverConfig(id2label={0: "cat", 1: "dog", 2: "emu"}, train_size=[10, 12])
    cfg.extra["custom_field"] = 5
    cfg.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["label2id"] == {"cat": 0, "dog": 1, "emu": 2} and raw["model_type"] == "perceiver"
    back = PerceiverConfig.from_pretrained(tmp_path)
    assert back.num_labels == 3 and back.labels[2] == "emu" and back.train_size == (10, 12)
    assert back.extra["custom_field"] == 5


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        PerceiverConfig(d_latents=30, num_self_attention_heads=8)
    with pytest.raises(ValueError, match="rank 4"):
        PerceiverConfig(output_shape=(16, 224, 224))


def test_key_names_follow_transformers():
    assert to_transformers_key("perceiver.encoder.self_attn.3.attn.to_q.weight", "PerceiverForMaskedLM") == \
        "perceiver.encoder.self_attends.3.attention.self.query.weight"
    assert to_transformers_key("perceiver.decoder.decoder.cross_attn.mlp_norm.bias", "PerceiverForMaskedLM") == \
        "perceiver.decoder.decoding_cross_attention.layernorm.bias"
    assert to_transformers_key("encoder.latents", "PerceiverModel") == "embeddings.latents"
    assert isinstance(presets.build("language", tiny=True), PerceiverForMaskedLM)
