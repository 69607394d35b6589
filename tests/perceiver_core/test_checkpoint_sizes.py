"""An edited config.json is refused before the model is allocated (size_check.py), fast and by name."""

from __future__ import annotations

import json
import time

import pytest
import torch

from perceiver_core import (
    CheckpointMismatchError,
    PerceiverForImageClassificationFourier,
    PerceiverForSequenceClassification,
    load_pretrained,
    presets,
    size_check,
)

FAST_S = 5.0


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny vision checkpoint, and the logits the saved model gives (the reference for a good load)."""
    torch.manual_seed(0)
    model = presets.build("vision-fourier", tiny=True).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        logits = model(inputs=x).logits
    model.save_pretrained(tmp_path)
    return tmp_path, x, logits


def _edit_config(directory, **changes):
    path = directory / "config.json"
    raw = json.loads(path.read_text())
    if "num_labels" in changes:  # the label names would otherwise fix num_labels
        raw.pop("id2label")
        raw.pop("label2id")
    raw.update(changes)
    path.write_text(json.dumps(raw))


@pytest.fixture
def real_builds(monkeypatch):
    """Records the device of every construction of the vision head: 'meta' for shape checks, 'cpu' for real."""
    devices: list[str] = []
    original = PerceiverForImageClassificationFourier.__init__

    def spy(self, config):
        devices.append(torch.empty(0).device.type)
        original(self, config)

    monkeypatch.setattr(PerceiverForImageClassificationFourier, "__init__", spy)
    return devices


def _refused(load, error=CheckpointMismatchError) -> str:
    """The error message of ``load()``, which must fail with ``error`` within FAST_S seconds."""
    start = time.perf_counter()
    with pytest.raises(error) as err:
        load()
    assert time.perf_counter() - start < FAST_S
    return str(err.value)


def _wrongly_shaped(message: str, key: str) -> bool:
    return key in message.split("wrongly shaped keys", 1)[1]


def test_untouched_checkpoint_loads_with_the_same_logits(checkpoint, real_builds):
    directory, x, logits = checkpoint
    loaded = load_pretrained(directory)
    with torch.no_grad():
        assert torch.equal(loaded(inputs=x).logits, logits)
    assert real_builds == ["meta", "cpu"]  # checked on meta first, then built once for real


@pytest.mark.parametrize("key, value, wrong_key", [
    ("d_latents", 10**9, "perceiver.embeddings.latents (checkpoint [8, 32], model [8, 1000000000])"),
    ("num_labels", 10**8, "perceiver.decoder.decoder.final_layer.weight (checkpoint [10, 32], model [100000000, 32])"),
    ("num_latents", 10**7, "perceiver.embeddings.latents (checkpoint [8, 32], model [10000000, 32])"),
])
def test_config_that_does_not_fit_the_weights_is_refused_before_allocating(checkpoint, real_builds, key, value,
                                                                          wrong_key):
    directory, _, _ = checkpoint
    _edit_config(directory, **{key: value})
    message = _refused(lambda: load_pretrained(directory))
    assert f"config.json values that do not fit the weights: {key}={value} (weights say" in message
    assert "wrongly shaped keys" in message and _wrongly_shaped(message, wrong_key)
    assert real_builds == ["meta"]  # never built with real tensors


@pytest.mark.parametrize("key, value", [("num_blocks", 10**6), ("num_self_attends_per_block", 10**5)])
def test_config_asking_for_too_deep_a_forward_pass_is_refused(checkpoint, real_builds, key, value):
    """num_blocks reuses the same weights, so no shape reveals it: it is capped on its own."""
    directory, _, _ = checkpoint
    _edit_config(directory, **{key: value})
    message = _refused(lambda: load_pretrained(directory), size_check.CheckpointSizeError)
    assert f"{key}={value}" in message and f"at most {size_check.MAX_SELF_ATTENTION_LAYERS}" in message
    assert real_builds == []  # refused before even the meta model (building 10**5 blocks is slow there too)


def test_legacy_weights_are_checked_too(tmp_path):
    presets.build("vision-fourier", tiny=True).save_pretrained(tmp_path, safe_serialization=False)
    _edit_config(tmp_path, d_latents=10**9)
    assert "d_latents=1000000000" in _refused(lambda: load_pretrained(tmp_path))


def test_fresh_weights_of_a_non_strict_load_are_capped(tmp_path):
    """MLM -> classifier leaves the classifier keys missing: only the absolute cap stands between a typo in
    num_labels and the memory of the machine."""
    presets.build("language", tiny=True).save_pretrained(tmp_path)
    message = _refused(lambda: PerceiverForSequenceClassification.from_pretrained(tmp_path, num_labels=10**9),
                       size_check.CheckpointSizeError)
    assert f"more than the cap of {size_check.MAX_PARAMETERS:,}" in message
    assert "final_layer.weight [1000000000, 32]" in message
    small = PerceiverForSequenceClassification.from_pretrained(tmp_path, num_labels=3)  # a sane head still loads
    assert small.perceiver.decoder.decoder.output_proj.weight.shape == (3, 32)


def test_model_larger_than_the_machine_memory_is_refused(checkpoint, real_builds, monkeypatch):
    directory, _, _ = checkpoint
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(directory / "model.safetensors").values())
    monkeypatch.setattr(size_check, "physical_memory_bytes", lambda: 4 * params - 1)
    with pytest.raises(size_check.CheckpointSizeError, match=f"implies {params:,} parameters .* of memory"):
        load_pretrained(directory)
    assert real_builds == ["meta"]
    monkeypatch.setattr(size_check, "physical_memory_bytes", lambda: 4 * params)
    load_pretrained(directory)


def test_every_preset_fits_the_caps():
    """The published configurations (not just the tiny ones) pass the checks that guard loading."""
    for name in presets.names():
        preset = presets.get(name)
        size_check.check_depth(preset.config())
        total = size_check.check_total(size_check.meta_shapes(preset.head, preset.config()))
        assert 10**7 < total < size_check.MAX_PARAMETERS
