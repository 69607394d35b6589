"""Decode one image (path or bytes) into an RGB uint8 array, or fail with a reason.

Contract of `load_image`: returns a new, writable numpy array of shape (H, W, 3), dtype uint8, RGB,
in display orientation (EXIF orientation applied). Mode conversions:

    RGB                     as is
    L, 1, I;16*, I, F       grey -> RGB; 16-bit values map to 8 bits as round(v / 257), "I" and "F"
                            are clipped to 0..255 first when they hold no 16-bit data
    P without transparency  palette lookup -> RGB
    P with transparency,    alpha-composited on `background` (white by default): transparent
    PA, LA, RGBA, RGBa      pixels become the background colour instead of whatever RGB value
                            they happen to store (often black), which is what a viewer shows
    CMYK, YCbCr, LAB, HSV   Pillow's conversion to RGB
    animated (GIF, WebP)    first frame only

Errors: `ImageDecodeError(reason, detail)` with reason in `IMAGE_ERROR_REASONS`. Truncated files
are errors: this module never sets `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` (it must stay False,
Pillow's default; if some other library turns it on, truncated images decode silently with grey
fill). Each image is decoded once, in a fresh `Image.open`, and the first exception is final,
because a second `load()` on a failed image can return without error.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines import storage
from pipelines.readers.errors import ImageDecodeError

IMAGE_ERROR_REASONS = (
    "not_found",  # no such file
    "empty_file",  # 0 bytes
    "unidentified",  # not an image format Pillow knows (or garbage)
    "truncated",  # the file ends before the image data does
    "too_large",  # more pixels than Pillow's decompression-bomb limit
    "decode_failed",  # any other decoder error (corrupt data stream, ...)
)

ImageSource = str | os.PathLike | bytes

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _open(source: ImageSource) -> tuple[Image.Image, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = "<bytes>"
        if len(source) == 0:
            raise ImageDecodeError("empty_file", name)
        fp: io.BytesIO | str = io.BytesIO(bytes(source))
    elif isinstance(source, str) and source.startswith("file://"):  # a local name that is not valid UTF-8
        name = source
        path = storage.resolve(source).path
        if not os.path.isfile(path):
            raise ImageDecodeError("not_found", name)
        if os.path.getsize(path) == 0:
            raise ImageDecodeError("empty_file", name)
        fp = path
    elif storage.is_uri(source):  # object storage: fetch the bytes through the filesystem layer
        name = str(source)
        try:
            data = storage.resolve(name).read_bytes()
        except (FileNotFoundError, storage.StorageError) as e:
            raise ImageDecodeError("not_found", f"{name}: {e}") from e
        if not data:
            raise ImageDecodeError("empty_file", name)
        fp = io.BytesIO(data)
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise ImageDecodeError("not_found", name)
        if path.stat().st_size == 0:
            raise ImageDecodeError("empty_file", name)
        fp = name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(fp), name
    except UnidentifiedImageError as e:
        raise ImageDecodeError("unidentified", f"{name}: {e}") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError("too_large", f"{name}: {e}") from e
    except Exception as e:  # any Pillow failure to parse the header
        raise ImageDecodeError(_reason(e), f"{name}: {type(e).__name__}: {e}") from e


def _reason(error: Exception) -> str:
    return "truncated" if isinstance(error, OSError) and "truncated" in str(error).lower() else "decode_failed"


def _decode(image: Image.Image, name: str) -> None:
    try:
        image.load()
    except Exception as e:  # Pillow decoders raise OSError, ValueError, SyntaxError, ...
        raise ImageDecodeError(_reason(e), f"{name}: {type(e).__name__}: {e}") from e


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A loaded Pillow image in any mode -> mode "RGB" (see the module docstring for the rules)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0  # 16-bit range -> 8-bit range
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageSource, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Decode a path or encoded bytes -> (H, W, 3) uint8 RGB, EXIF-transposed.

    Raises `ImageDecodeError` for missing, empty, unidentifiable, truncated, oversized or corrupt
    images. A broken EXIF block does not fail an image that decoded: it is shown unrotated.
    """
    image, name = _open(source)
    with image:
        _decode(image, name)
        with contextlib.suppress(Exception):  # unreadable EXIF: keep the decoded pixels as stored
            image = ImageOps.exif_transpose(image)
        return np.array(to_rgb(image, background), dtype=np.uint8)
