"""PerceiverImageProcessor against transformers' PerceiverImageProcessor on real photos."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_core.image_processor import (
    PerceiverImageProcessor,
    PerceiverImageProcessorConfig,
    center_crop_by_ratio,
    crop_box_size,
)

try:  # a test-only dependency: without it the parity tests skip and the others still run
    import transformers
except ImportError:
    transformers = None
parity = pytest.mark.skipif(transformers is None, reason="parity with transformers: transformers is not installed")

IMAGE_DIR = Path(__file__).resolve().parents[1] / "data" / "images"
NATURAL = sorted((IMAGE_DIR / "natural").glob("*.png"))
# Pillow test images in other modes (RGB JPEG, L, P, RGBA, CMYK, WebP), small: upsampled by the resize.
EDGE_CASES = [
    IMAGE_DIR / "edge_cases" / name
    for name in (
        "hopper.jpg",
        "hopper_gray.jpg",
        "pil123p.png",
        "transparent.png",
        "pil_sample_cmyk.jpg",
        "hopper.webp",
    )
]
TOL = 1e-5
# pil123p.png is a palette image with transparency; converting it to RGB is what we test, not a problem.
pytestmark = pytest.mark.filterwarnings("ignore:Palette images with Transparency")


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def ours() -> PerceiverImageProcessor:
    return PerceiverImageProcessor(return_tensors="pt")  # transformers' default is a list of tensors


@pytest.fixture(scope="module")
def hf():
    if transformers is None:
        pytest.skip("parity with transformers: transformers is not installed")
    return transformers.PerceiverImageProcessor()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
    return (a - b).abs().max().item()


@pytest.mark.parametrize("path", NATURAL + EDGE_CASES, ids=lambda p: p.name)
def test_pil_numpy_tensor_match_transformers(ours, hf, path):
    image = load_rgb(path)
    array = np.asarray(image)  # (H, W, 3) uint8
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)  # (3, H, W) uint8
    want = hf(image, return_tensors="pt")["pixel_values"]
    assert want.shape == (1, 3, 224, 224)
    for value in (image, array, tensor):
        assert max_diff(ours(value)["pixel_values"], want) <= TOL
    as_float = tensor.float()
    assert max_diff(ours(as_float)["pixel_values"], hf(as_float, return_tensors="pt")["pixel_values"]) <= TOL


def test_non_rgb_modes_are_converted(ours):
    for path in EDGE_CASES:
        with Image.open(path) as image:
            original = ours(image)["pixel_values"]
        assert torch.equal(original, ours(load_rgb(path))["pixel_values"]), path.name
    gray = np.array(load_rgb(EDGE_CASES[1]))[:, :, 0]  # (H, W)
    from_gray = ours(gray)["pixel_values"]
    assert torch.equal(from_gray, ours(np.repeat(gray[:, :, None], 3, axis=2))["pixel_values"])
    assert torch.equal(from_gray, ours(torch.from_numpy(gray)[None])["pixel_values"])


def test_batch_matches_transformers_and_single_images(ours, hf):
    images = [load_rgb(p) for p in NATURAL + EDGE_CASES[:2]]
    images.append(images[-1].copy())  # two images of one shape share a kernel call
    got = ours(images)["pixel_values"]
    want = hf(images, return_tensors="pt")["pixel_values"]
    assert got.shape == (len(images), 3, 224, 224)
    assert max_diff(got, want) <= TOL
    for i, image in enumerate(images):
        assert torch.equal(got[i : i + 1], ours(image)["pixel_values"])


def test_stacked_tensor_and_numpy_batches(ours, hf):
    pair = [load_rgb(p) for p in EDGE_CASES[:2]]  # both 128x128
    arrays = np.stack([np.asarray(im) for im in pair])  # (B, H, W, 3)
    tensors = torch.from_numpy(arrays).permute(0, 3, 1, 2)  # (B, 3, H, W)
    want = hf(pair, return_tensors="pt")["pixel_values"]
    assert max_diff(ours(arrays)["pixel_values"], want) <= TOL
    assert max_diff(ours(tensors)["pixel_values"], want) <= TOL
    assert max_diff(ours(list(tensors))["pixel_values"], want) <= TOL


def test_crop_offset_truncates_like_transformers(ours, hf):
    # 250x200: box 175, top offset (250 - 175) / 2 = 37.5 -> 37 (torchvision's center_crop would round to 38).
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(250, 200, 3), dtype=np.uint8)
    assert crop_box_size(250, 200, (224, 224), (256, 256)) == (175, 175)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    assert torch.equal(center_crop_by_ratio(chw, (224, 224), (256, 256)), chw[:, 37:212, 12:187])
    assert max_diff(ours(image)["pixel_values"], hf(image, return_tensors="pt")["pixel_values"]) <= TOL


@pytest.mark.parametrize(
    "settings",
    [
        {"size": (384, 384)},  # box 1.5x the shorter side: zero-padded before the resize
        {"size": (224, 160)},
        {"size": (200, 300), "crop_size": (240, 320)},
        {"do_center_crop": False},
        {"do_normalize": False},
        {"do_rescale": False},
        {"do_rescale": False, "do_normalize": False, "resample": "bilinear"},
        {"image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5)},
    ],
    ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()),
)
@parity
def test_settings_match_transformers(settings, tmp_path):
    config = PerceiverImageProcessorConfig(**settings)
    ours = PerceiverImageProcessor(config)
    ours.save_pretrained(tmp_path)
    hf = transformers.PerceiverImageProcessor.from_pretrained(tmp_path)  # also checks the file format
    images = [load_rgb(NATURAL[1]), load_rgb(EDGE_CASES[0])]
    got = ours(images, return_tensors="pt")["pixel_values"]
    want = hf(images, return_tensors="pt")["pixel_values"]
    assert got.shape[-2:] == config.size
    if not (config.do_rescale or config.do_normalize):
        assert want.dtype == got.dtype == torch.uint8  # the resized uint8, as transformers hands it back
        assert (got.int() - want.int()).abs().max() <= 1  # torchvision rounds; crop offsets are identical
        return
    assert max_diff(got, want) <= TOL


def test_zero_padding_when_box_exceeds_image():
    padded = center_crop_by_ratio(torch.ones(3, 4, 6), size=(384, 384), crop_size=(256, 256))  # box 6x6
    assert padded.shape == (3, 6, 6)
    assert padded[:, 0].sum() == 0 and padded[:, -1].sum() == 0 and padded[:, 1:5].min() == 1


@parity
def test_config_roundtrip_with_transformers(tmp_path):
    transformers.PerceiverImageProcessor().save_pretrained(tmp_path / "hf")
    assert PerceiverImageProcessor.from_pretrained(tmp_path / "hf").config == PerceiverImageProcessorConfig()

    # Older hub files store sizes as plain ints.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "preprocessor_config.json").write_text(
        json.dumps({"size": 384, "crop_size": 256, "resample": 3})
    )
    config = PerceiverImageProcessor.from_pretrained(legacy).config
    assert config.size == (384, 384) and config.crop_size == (256, 256) and config.resample == "bicubic"

    with pytest.raises(OSError):  # a folder without preprocessor_config.json, as in transformers
        PerceiverImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        PerceiverImageProcessor.from_pretrained(tmp_path / "missing")


def test_config_validation():
    with pytest.raises(ValueError):
        PerceiverImageProcessorConfig(size=(0, 224))
    with pytest.raises(ValueError):
        PerceiverImageProcessorConfig(image_mean=(0.5, 0.5))
    with pytest.raises(ValueError):
        PerceiverImageProcessorConfig(resample="lanczos")
    assert PerceiverImageProcessor().replace(size=[256, 256]).config.size == (256, 256)


def test_inputs_not_modified_and_bad_inputs_rejected(ours):
    tensor = torch.from_numpy(np.asarray(load_rgb(EDGE_CASES[0])).copy()).permute(2, 0, 1)
    before = tensor.clone()
    ours(tensor.float())
    ours(tensor)
    assert torch.equal(tensor, before)
    with pytest.raises(ValueError, match="channels"):
        ours(torch.zeros(4, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError):  # a str is a path for transformers; not an existing file
        ours("not an image")
    with pytest.raises(TypeError):
        ours(object())
    with pytest.raises(ValueError):
        ours([])


@pytest.mark.parametrize("height,width", [(1, 50), (50, 1), (1, 1)])
def test_one_pixel_sides_give_the_constant_image(height, width):
    """A 1-pixel side keeps one pixel in the crop: a constant image stays that constant, normalised."""
    import torch

    from perceiver_core.image_processor import PerceiverImageProcessorConfig, preprocess_batch

    config = PerceiverImageProcessorConfig()
    image = torch.full((1, 3, height, width), 100, dtype=torch.uint8)
    out = preprocess_batch(image, config)
    assert out.shape == (1, 3, *config.size)
    expected = [(100 / 255 - m) / s for m, s in zip(config.image_mean, config.image_std)]
    for c in range(3):
        assert torch.allclose(out[0, c], torch.full_like(out[0, c], expected[c]), atol=1e-5)
