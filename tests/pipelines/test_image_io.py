"""pipelines.readers.image_io on Pillow's edge-case images (tests/data/images/edge_cases) and synthetic modes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pipelines.readers.image_io import ImageDecodeError, load_image, to_rgb

EDGE = Path(__file__).resolve().parents[1] / "data" / "images" / "edge_cases"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name, shape", [
    ("hopper.jpg", (128, 128, 3)), ("hopper.webp", (128, 128, 3)), ("hopper_gray.jpg", (128, 128, 3)),
    ("hopper_orientation_6.jpg", (128, 128, 3)), ("pil123p.png", (150, 162, 3)),
    ("pil_sample_cmyk.jpg", (100, 100, 3)), ("transparent.png", (150, 200, 3)),
])
def test_every_mode_becomes_rgb_uint8(name, shape):
    out = load_image(EDGE / name)
    assert out.shape == shape and out.dtype == np.uint8 and out.flags.writeable and out.flags.owndata


def test_rgb_is_unchanged():
    np.testing.assert_array_equal(load_image(EDGE / "hopper.jpg"), np.asarray(Image.open(EDGE / "hopper.jpg")))


def test_grey_is_replicated():
    out = load_image(EDGE / "hopper_gray.jpg")
    np.testing.assert_array_equal(out[..., 0], np.asarray(Image.open(EDGE / "hopper_gray.jpg")))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_exif_orientation_is_applied():
    stored = np.asarray(Image.open(EDGE / "hopper_orientation_6.jpg")).astype(int)
    out = load_image(EDGE / "hopper_orientation_6.jpg").astype(int)
    np.testing.assert_array_equal(out, np.rot90(stored, -1))  # orientation 6: rotate 90 degrees clockwise
    upright = load_image(EDGE / "hopper.jpg").astype(int)
    assert np.abs(out - upright).mean() < 8 < np.abs(stored - upright).mean()


def test_alpha_is_composited_on_the_background():
    rgba = np.asarray(Image.open(EDGE / "transparent.png"))
    clear, opaque = rgba[..., 3] == 0, rgba[..., 3] == 255
    assert clear.any() and opaque.any()
    white = load_image(EDGE / "transparent.png")
    assert (white[clear] == 255).all()
    np.testing.assert_array_equal(white[opaque], rgba[opaque][:, :3])
    black = load_image(EDGE / "transparent.png", background=(0, 0, 0))
    assert (black[clear] == 0).all()


def test_palette_with_transparency_and_la():
    palette = Image.new("P", (4, 2), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    out = load_image(png_bytes(palette))
    assert (out[0, 1] == [0, 0, 255]).all() and (out[1, 0] == 255).all()  # index 0 is transparent -> white
    la = Image.fromarray(np.stack([np.full((2, 2), 10, np.uint8), np.array([[0, 255], [255, 0]], np.uint8)], -1), "LA")
    out = load_image(png_bytes(la))
    assert out[0, 0].tolist() == [255] * 3 and out[0, 1].tolist() == [10] * 3


def test_16bit_grey_maps_to_8bit():
    values = np.array([[0, 257, 65535, 32896]], np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = to_rgb(image)
    assert np.asarray(out)[0, :, 0].tolist() == [0, 1, 255, 128]
    assert load_image(png_bytes(image))[0, :, 0].tolist() == [0, 1, 255, 128]


def test_cmyk_converts():
    out = load_image(EDGE / "pil_sample_cmyk.jpg")
    assert out.shape == (100, 100, 3) and out.std() > 10


def test_bytes_and_path_agree():
    np.testing.assert_array_equal(load_image((EDGE / "pil123p.png").read_bytes()), load_image(EDGE / "pil123p.png"))


@pytest.mark.parametrize("source, reason", [
    (EDGE / "broken.png", "unidentified"),
    (EDGE / "broken_data_stream.png", "decode_failed"),
    (EDGE / "truncated_image.png", "truncated"),
    (EDGE / "truncated_jpeg.jpg", "truncated"),
    (EDGE / "missing.png", "not_found"),
    (b"", "empty_file"),
    (b"\x89PNG\r\n\x1a\n garbage", "truncated"),
])
def test_undecodable_images_raise_with_reason(source, reason):
    with pytest.raises(ImageDecodeError) as info:
        load_image(source)
    assert info.value.reason == reason


def test_failures_are_final_and_truncation_is_never_tolerated():
    # Pillow lets a second load() of a failed image "succeed"; every call must fail afresh.
    for _ in range(2):
        with pytest.raises(ImageDecodeError):
            load_image(EDGE / "broken_data_stream.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    truncated = (EDGE / "hopper.jpg").read_bytes()[:3000]
    with pytest.raises(ImageDecodeError) as info:
        load_image(truncated)
    assert info.value.reason == "truncated"


def test_decompression_bomb_is_rejected(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError) as info:
        load_image(EDGE / "hopper.jpg")  # 16384 px > 2 * 1000
    assert info.value.reason == "too_large"


def test_uris_decode_like_local_files(s3, tmp_path):
    """Images on object storage (an S3 API server) are fetched through pipelines.storage."""
    bucket = s3.new_bucket()
    for name in ("pil123p.png", "hopper_orientation_6.jpg", "truncated_jpeg.jpg"):
        (tmp_path / name).write_bytes((EDGE / name).read_bytes())
    (tmp_path / "empty.png").write_bytes(b"")
    uri = s3.upload_dir(str(tmp_path), bucket, "img")
    for name in ("pil123p.png", "hopper_orientation_6.jpg"):
        np.testing.assert_array_equal(load_image(f"{uri}/{name}"), load_image(EDGE / name))
    for name, reason in (("truncated_jpeg.jpg", "truncated"), ("empty.png", "empty_file"),
                         ("missing.png", "not_found")):
        with pytest.raises(ImageDecodeError) as info:
            load_image(f"{uri}/{name}")
        assert info.value.reason == reason and f"{uri}/{name}" in str(info.value)
