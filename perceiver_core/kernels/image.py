"""Image preprocessing kernels of the Perceiver image classifiers, matching transformers' ``PerceiverImageProcessor``.

Order of operations (crop comes *before* resize):

1. Center crop to a box of ``int(size / crop_size * min(H, W))`` per axis, i.e. 0.875 of the shorter side
   with the defaults; offsets ``int((H - h) / 2)``; an image smaller than the box is zero-padded first.
   ``crop_size`` is therefore a ratio denominator, not a crop size.
2. Resize to ``size`` with antialiased interpolation (uint8 in, uint8 out, as transformers does).
3. Rescale by 1/255 and normalize with the ImageNet mean/std, fused into one ``normalize``.

``preprocess_batch`` is what the batch jobs call on (B, 3, H, W) tensors with a frozen
``PerceiverImageProcessorConfig``; ``to_chw_tensors`` turns PIL images, numpy arrays and tensors (channels
first or last, inferred like transformers does, or given) into (3, H, W) tensors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvF

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# transformers stores PIL resampling codes; these are the ones with a torchvision equivalent we support.
_RESAMPLE_MODES = {
    "nearest": InterpolationMode.NEAREST_EXACT,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}
_PIL_RESAMPLE_CODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class PerceiverImageProcessorConfig:
    """Preprocessing settings; ``size`` and ``crop_size`` are (height, width)."""

    size: tuple[int, int] = (224, 224)
    crop_size: tuple[int, int] = (256, 256)
    resample: str = "bicubic"
    do_center_crop: bool = True
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("size", "crop_size"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 2 or min(value) < 1:
                raise ValueError(f"{name} must be a positive (height, width), got {getattr(self, name)}")
            object.__setattr__(self, name, value)
        for name in ("image_mean", "image_std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"{name} needs one value per RGB channel, got {getattr(self, name)}")
            object.__setattr__(self, name, value)
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        if self.resample not in _RESAMPLE_MODES:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE_MODES)}, got {self.resample!r}")
        if self.rescale_factor <= 0:
            raise ValueError(f"rescale_factor must be positive, got {self.rescale_factor}")

    def to_transformers_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` content transformers writes for these settings."""
        code = {name: code for code, name in _PIL_RESAMPLE_CODES.items()}[self.resample]
        return {
            "crop_size": {"height": self.crop_size[0], "width": self.crop_size[1]},
            "do_center_crop": self.do_center_crop,
            "do_normalize": self.do_normalize,
            "do_rescale": self.do_rescale,
            "do_resize": self.do_resize,
            "image_mean": list(self.image_mean),
            "image_processor_type": "PerceiverImageProcessor",
            "image_std": list(self.image_std),
            "resample": code,
            "rescale_factor": self.rescale_factor,
            "size": {"height": self.size[0], "width": self.size[1]},
        }

    @classmethod
    def from_transformers_dict(cls, data: dict[str, Any]) -> PerceiverImageProcessorConfig:
        """Settings from a transformers ``preprocessor_config.json`` (unknown keys are ignored)."""
        kwargs: dict[str, Any] = {}
        for name in ("size", "crop_size"):
            if name in data:
                kwargs[name] = _parse_size(data[name], name)
        if "resample" in data:
            kwargs["resample"] = resample_name(data["resample"])
        for name in ("do_center_crop", "do_resize", "do_rescale", "rescale_factor", "do_normalize"):
            if name in data:
                kwargs[name] = data[name]
        for name in ("image_mean", "image_std"):
            if name in data:
                value = data[name]
                kwargs[name] = (value,) * 3 if isinstance(value, (int, float)) else tuple(value)
        return cls(**kwargs)


def resample_name(value: Any) -> str:
    """Our mode name of a resample given as a PIL code / ``PIL.Image.Resampling``, a name, or a torchvision
    ``InterpolationMode`` (transformers accepts all three)."""
    if isinstance(value, InterpolationMode):
        names = {mode: name for name, mode in _RESAMPLE_MODES.items()}
        if value in names:
            return names[value]
    elif isinstance(value, str) and value in _RESAMPLE_MODES:
        return value
    elif isinstance(value, int) and not isinstance(value, bool) and int(value) in _PIL_RESAMPLE_CODES:
        return _PIL_RESAMPLE_CODES[int(value)]
    raise ValueError(f"resample={value!r} is not supported: use PIL NEAREST (0), BILINEAR (2) or BICUBIC (3), "
                     "their names, or the matching torchvision InterpolationMode (LANCZOS, BOX and HAMMING have "
                     "no antialiased tensor kernel in torchvision)")


def pil_resample(name: str) -> Any:
    """The ``PIL.Image.Resampling`` member transformers stores for our mode name."""
    from PIL import Image

    code = {n: c for c, n in _PIL_RESAMPLE_CODES.items()}[name]
    return Image.Resampling(code)


def _parse_size(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, Mapping) and "height" in value and "width" in value:
        return value["height"], value["width"]
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value[0], value[1]
    raise ValueError(f"{name} must be an int, (height, width) or {{'height', 'width'}}, got {value!r}")


# ----------------------------------------------------------------------------------- functional kernels
def crop_box_size(
    height: int, width: int, size: tuple[int, int], crop_size: tuple[int, int]
) -> tuple[int, int]:
    """transformers' crop box: (size / crop_size) times the shorter side, per axis."""
    min_dim = min(height, width)
    return int(size[0] / crop_size[0] * min_dim), int(size[1] / crop_size[1] * min_dim)


def center_crop_by_ratio(
    images: torch.Tensor, size: tuple[int, int], crop_size: tuple[int, int]
) -> torch.Tensor:
    """Center crop (..., H, W) to ``crop_box_size``; zero-pads first where the box exceeds the image.

    torchvision's own ``center_crop`` rounds the offset (``round(2.5) == 2`` but ``round(3.5) == 4``); transformers
    truncates, so the offset is computed here.
    """
    height, width = images.shape[-2:]
    box_h, box_w = crop_box_size(height, width, size, crop_size)
    # A 1-pixel side would give an empty box (transformers then fails on the empty array): keep one pixel.
    box_h, box_w = max(box_h, 1), max(box_w, 1)
    if box_h > height or box_w > width:
        pad_h, pad_w = max(box_h - height, 0), max(box_w - width, 0)
        # left, top, right, bottom: the odd pixel goes to the right / bottom.
        images = tvF.pad(images, [pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2], fill=0)
        height, width = images.shape[-2:]
    top, left = int((height - box_h) / 2), int((width - box_w) / 2)
    return images[..., top : top + box_h, left : left + box_w]


def preprocess_batch(images: torch.Tensor, config: PerceiverImageProcessorConfig,
                     output_dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float tensor to (B, 3, size_h, size_w) float32 model input.

    ``output_dtype=None`` keeps the input dtype when neither rescale nor normalize is on (transformers then
    hands back the resized uint8 image); rescaled or normalized output is always float32.
    """
    if config.do_center_crop:
        images = center_crop_by_ratio(images, config.size, config.crop_size)
    if config.do_resize:
        images = tvF.resize(
            images.contiguous(),
            list(config.size),
            interpolation=_RESAMPLE_MODES[config.resample],
            antialias=True,
        )
    mean = torch.tensor(config.image_mean, device=images.device)
    std = torch.tensor(config.image_std, device=images.device)
    if config.do_rescale and config.do_normalize:
        # (x * r - mean) / std == (x - mean / r) / (std / r): one pass instead of two.
        scale = 1.0 / config.rescale_factor
        return tvF.normalize(images.to(torch.float32), (mean * scale).tolist(), (std * scale).tolist())
    if not (config.do_rescale or config.do_normalize):
        return images if output_dtype is None else images.to(output_dtype)
    images = images.to(torch.float32)
    if config.do_rescale:
        images = images * config.rescale_factor
    if config.do_normalize:
        images = tvF.normalize(images, mean.tolist(), std.tolist())
    return images


# ----------------------------------------------------------------------------------- input handling
ImageInput = Any  # PIL.Image.Image | np.ndarray | torch.Tensor | a path, or a (nested) sequence of them
FIRST, LAST = "channels_first", "channels_last"


def channel_layout(shape: tuple[int, ...], given: Any = None) -> str:
    """``channels_first`` / ``channels_last`` of a (C, H, W)-or-(H, W, C) image or a batch of them: as given,
    else inferred like transformers (1, 3 or 4 channels; first wins when both ends could be channels)."""
    if given is not None:
        layout = str(getattr(given, "value", given))
        if layout not in (FIRST, LAST):
            raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {given!r}")
        return layout
    first, last = shape[-3], shape[-1]
    if first in (1, 3, 4):
        return FIRST
    if last in (1, 3, 4):
        return LAST
    raise ValueError(f"Unable to infer the channel dimension of an image of shape {tuple(shape)}: images need 1 or "
                     "3 channels, first or last (pass input_data_format= to say which)")


def _pil_rgb(image: Any, convert_rgb: bool | str) -> Any:
    if not convert_rgb or image.mode == "RGB":
        return image
    if convert_rgb == "composite" and ("A" in image.getbands() or image.info.get("transparency") is not None):
        from PIL import Image

        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def to_chw_tensors(images: ImageInput, input_data_format: Any = None, convert_rgb: bool | str = True
                   ) -> list[torch.Tensor]:
    """Any supported input as a list of contiguous (3, H, W) tensors (dtype kept, uint8 for PIL).

    Gray (1 channel or 2-D) is repeated to RGB. PIL images of any mode are converted to RGB with PIL's
    ``convert`` (``convert_rgb=True``), with transparency composited onto white like transformers'
    ``do_convert_rgb=True`` (``convert_rgb="composite"``), or not at all (False). A ``str`` / path names an
    image file.
    """
    if isinstance(images, (list, tuple)):
        return [t for image in images for t in to_chw_tensors(image, input_data_format, convert_rgb)]
    if isinstance(images, (str, os.PathLike)):
        if not os.path.isfile(images):
            raise ValueError(f"Incorrect image source {images!r}: not an image file (URLs are not fetched)")
        from PIL import Image

        with Image.open(images) as image:
            image.load()
            return to_chw_tensors(image, input_data_format, convert_rgb)
    if hasattr(images, "convert") and hasattr(images, "mode"):  # PIL.Image.Image
        rgb = _pil_rgb(images, convert_rgb)
        array = np.array(rgb)  # a writable copy: torch cannot wrap read-only buffers without a warning
        return to_chw_tensors(array, None if array.ndim == 2 else LAST, convert_rgb)
    if isinstance(images, np.ndarray):
        array = np.ascontiguousarray(images) if images.flags.writeable else np.array(images)
        return to_chw_tensors(torch.from_numpy(array), input_data_format, convert_rgb)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"unsupported image type {type(images).__name__}")
    if images.ndim == 2:
        images, input_data_format = images[None], FIRST
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (H, W), (C, H, W) / (H, W, C) or a batch of them, got {tuple(images.shape)}")
    if channel_layout(tuple(images.shape), input_data_format) == LAST:
        images = images.movedim(-1, -3)
    batch = images if images.ndim == 4 else images[None]
    channels = batch.shape[1]
    if channels == 1:
        batch = batch.expand(-1, 3, -1, -1)
    elif channels != 3:
        raise ValueError(f"images need 1 or 3 channels, got {channels} (convert RGBA/CMYK to RGB first)")
    return [image.contiguous() for image in batch]

