"""jobs/models/multimodal-tiny: the small autoencoder trained by ``perceiver-jobs train`` (see its RECIPE.md)."""

from pathlib import Path

import pytest
import torch

import jobs
from perceiver_core import PerceiverForMultimodalAutoencoding, load_pretrained

# The installed package's copy (CI runs the tests against the wheel, away from the source tree).
MODELS = Path(jobs.__file__).resolve().parent / "models"
MODEL = MODELS / "multimodal-tiny"
K400 = MODELS / "label_map_k400.txt"


def test_shipped_model_is_small_and_has_kinetics_names():
    assert (MODEL / "model.safetensors").stat().st_size < 5_000_000 and (MODEL / "RECIPE.md").is_file()
    model = load_pretrained(MODEL)
    c = model.config
    assert isinstance(model, PerceiverForMultimodalAutoencoding)
    assert (c.num_frames, c.image_size, c.audio_samples_per_frame, c.output_shape) == (8, 64, 128, (1, 8, 64, 64))
    names = [n for n in K400.read_text(encoding="utf-8").splitlines() if n]
    assert len(names) == 400 and [c.id2label[i] for i in range(400)] == names


def test_shipped_model_loads_in_transformers_with_the_same_outputs():
    transformers = pytest.importorskip("transformers")
    ours = PerceiverForMultimodalAutoencoding.from_pretrained(MODEL).eval()
    theirs = transformers.PerceiverForMultimodalAutoencoding.from_pretrained(MODEL).eval()
    g = torch.Generator().manual_seed(0)
    inputs = {"image": torch.rand(1, 8, 3, 64, 64, generator=g), "audio": torch.rand(1, 1024, 1, generator=g) * 2 - 1,
              "label": torch.zeros(1, 400)}
    points = {"image": torch.arange(0, 8 * 64 * 64, 41), "audio": torch.arange(0, 64, 2), "label": None}
    with torch.inference_mode():
        a = ours(inputs=inputs, subsampled_output_points=points).logits
        b = theirs(inputs=inputs, subsampled_output_points=points).logits
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
