"""Image preprocessing of the Perceiver image classifiers, matching transformers' ``PerceiverImageProcessor``.

Order of operations (crop comes *before* resize):

1. Center crop to a box of ``int(size / crop_size * min(H, W))`` per axis, i.e. 0.875 of the shorter side
   with the defaults; offsets ``int((H - h) / 2)``; an image smaller than the box is zero-padded first.
   ``crop_size`` is therefore a ratio denominator, not a crop size.
2. Resize to ``size`` with antialiased bicubic interpolation (uint8 in, uint8 out, as transformers does).
3. Rescale by 1/255 and normalize with the ImageNet mean/std, fused into one ``normalize``.

Input layouts: PIL images (any mode, converted to RGB), numpy arrays ``(H, W)``, ``(H, W, C)`` or
``(B, H, W, C)``, torch tensors ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``; C is 1 (repeated to RGB) or 3.
Output: ``{"pixel_values": (B, 3, size_h, size_w) float32}``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
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
            resample = data["resample"]
            if isinstance(resample, int):
                if resample not in _PIL_RESAMPLE_CODES:
                    raise ValueError(f"unsupported PIL resample code {resample}")
                resample = _PIL_RESAMPLE_CODES[resample]
            kwargs["resample"] = resample
        for name in ("do_center_crop", "do_resize", "do_rescale", "rescale_factor", "do_normalize"):
            if name in data:
                kwargs[name] = data[name]
        for name in ("image_mean", "image_std"):
            if name in data:
                value = data[name]
                kwargs[name] = (value,) * 3 if isinstance(value, (int, float)) else tuple(value)
        return cls(**kwargs)


def _parse_size(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and "height" in value and "width" in value:
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


def preprocess_batch(images: torch.Tensor, config: PerceiverImageProcessorConfig) -> torch.Tensor:
    """(B, 3, H, W) uint8 or float tensor to (B, 3, size_h, size_w) float32 model input."""
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
    images = images.to(torch.float32)
    if config.do_rescale:
        images = images * config.rescale_factor
    if config.do_normalize:
        images = tvF.normalize(images, mean.tolist(), std.tolist())
    return images


# ----------------------------------------------------------------------------------- input handling
ImageInput = Any  # PIL.Image.Image | np.ndarray | torch.Tensor, or a sequence of them


def to_chw_tensors(images: ImageInput) -> list[torch.Tensor]:
    """Any supported input as a list of contiguous (3, H, W) tensors (dtype kept, uint8 for PIL)."""
    if isinstance(images, (list, tuple)):
        return [t for image in images for t in to_chw_tensors(image)]
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            images = images[:, :, None]
        if images.ndim not in (3, 4):
            raise ValueError(f"numpy images must be (H, W), (H, W, C) or (B, H, W, C), got {images.shape}")
        # torch cannot wrap read-only arrays (e.g. np.asarray of a PIL image) without a warning.
        images = np.ascontiguousarray(images) if images.flags.writeable else np.array(images)
        tensor = torch.from_numpy(images)
        tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
        return to_chw_tensors(tensor)
    if isinstance(images, torch.Tensor):
        if images.ndim == 2:
            images = images[None]
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(
                f"tensor images must be (H, W), (C, H, W) or (B, C, H, W), got {tuple(images.shape)}"
            )
        channels = images.shape[1]
        if channels == 1:
            images = images.expand(-1, 3, -1, -1)
        elif channels != 3:
            raise ValueError(f"images need 1 or 3 channels, got {channels} (convert RGBA/CMYK to RGB first)")
        return [image.contiguous() for image in images]
    if hasattr(images, "convert") and hasattr(images, "mode"):  # PIL.Image.Image
        rgb = images if images.mode == "RGB" else images.convert("RGB")
        return to_chw_tensors(np.asarray(rgb))
    raise TypeError(f"unsupported image type {type(images).__name__}")


class PerceiverImageProcessor:
    """Callable preprocessor: images in, ``{"pixel_values": (B, 3, H, W) float32}`` out."""

    def __init__(self, config: PerceiverImageProcessorConfig | None = None) -> None:
        self.config = config or PerceiverImageProcessorConfig()

    def __repr__(self) -> str:
        return f"PerceiverImageProcessor({self.config})"

    def __call__(
        self,
        images: ImageInput,
        return_tensors: str = "pt",
        device: torch.device | str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Preprocess one image or a batch; images of different sizes are processed per shape group."""
        if return_tensors != "pt":
            raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
        tensors = to_chw_tensors(images)
        if not tensors:
            raise ValueError("no images given")
        if device is not None:
            tensors = [t.to(device) for t in tensors]
        # Same-shape, same-dtype images go through the kernels together; order is restored afterwards.
        groups: dict[tuple, list[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault((tuple(tensor.shape), tensor.dtype), []).append(index)
        outputs: list[torch.Tensor | None] = [None] * len(tensors)
        for indices in groups.values():
            batch = preprocess_batch(torch.stack([tensors[i] for i in indices]), self.config)  # (b, 3, h, w)
            for i, image in zip(indices, batch):
                outputs[i] = image
        if len({o.shape for o in outputs}) > 1:  # only when both crop and resize are off
            raise ValueError("processed images differ in size; enable do_resize to batch them")
        return {"pixel_values": torch.stack(outputs)}

    # ----------------------------------------------------------------------------------- files
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write transformers' ``preprocessor_config.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PREPROCESSOR_CONFIG_NAME
        path.write_text(json.dumps(self.config.to_transformers_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> PerceiverImageProcessor:
        """Read ``preprocessor_config.json`` from a local directory; defaults when the file is absent."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"preprocessor directory not found: {directory}")
        path = directory / PREPROCESSOR_CONFIG_NAME
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(PerceiverImageProcessorConfig.from_transformers_dict(data))

    def replace(self, **changes: Any) -> PerceiverImageProcessor:
        """A processor with some settings changed (validated like the config)."""
        return type(self)(dataclasses.replace(self.config, **changes))
