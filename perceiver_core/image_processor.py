"""``PerceiverImageProcessor``: a drop-in for transformers' (5.x, torchvision backend) with the same values.

Same constructor keywords and attributes (``size`` / ``crop_size`` as ``{"height", "width"}`` mappings with
``.height`` / ``.width``, ``resample`` as the PIL code, ``image_mean``...), per-call overrides
(``processor(images, size=..., do_normalize=False, return_tensors="pt")``), ``preprocess``, a
``BatchFeature`` with ``.pixel_values`` / ``.to(...)``, ``to_dict`` / ``to_json_string`` / ``to_json_file``,
``save_pretrained`` returning the files written, and ``from_pretrained`` for folders, json files and hub
ids (through ``perceiver_core.hub``), with keyword overrides and ``return_unused_kwargs``. The pixel work is
in ``kernels.image`` (see there for the crop-then-resize order).

Where we differ, on purpose: PIL images of any mode are converted to RGB and gray arrays are repeated to RGB
(transformers fails on them unless ``do_convert_rgb=True``); keywords that change nothing here but mean
something in transformers (``do_pad``, ``pad_size``, ``data_format="channels_last"``, ``image_seq_length``,
``default_to_square=False``) raise ``UnsupportedOptionError``; unknown call keywords raise ``TypeError``
(transformers: the same); unused ``from_pretrained`` keywords are warned about (transformers drops them).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .batch_encoding import BatchFeature, UnsupportedOptionError, reject_unexpected, save_folder, tensor_type
from .kernels.image import (
    FIRST,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PREPROCESSOR_CONFIG_NAME,
    ImageInput,
    PerceiverImageProcessorConfig,
    _parse_size,
    center_crop_by_ratio,
    crop_box_size,
    pil_resample,
    preprocess_batch,
    resample_name,
    to_chw_tensors,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PREPROCESSOR_CONFIG_NAME", "ImageSize", "PerceiverImageProcessor",
           "PerceiverImageProcessorConfig", "center_crop_by_ratio", "crop_box_size", "preprocess_batch",
           "to_chw_tensors"]

# transformers' ImagesKwargs, in its order: the keywords the constructor, the call and from_pretrained take.
VALID_KWARGS = ("do_convert_rgb", "do_resize", "size", "default_to_square", "crop_size", "resample", "do_rescale",
                "rescale_factor", "do_normalize", "image_mean", "image_std", "do_pad", "pad_size", "do_center_crop",
                "data_format", "input_data_format", "device", "return_tensors", "disable_grouping",
                "image_seq_length")
_BOOLS = ("do_convert_rgb", "do_resize", "do_rescale", "do_normalize", "do_pad", "do_center_crop", "disable_grouping")
# to_dict's key order in transformers (extra attributes come first, None values are left out).
_DICT_ORDER = ("do_convert_rgb", "device", "disable_grouping", "do_resize", "resample", "do_rescale",
               "rescale_factor", "do_normalize", "do_center_crop", "size", "crop_size", "image_mean", "image_std",
               "do_pad", "pad_size", "data_format", "input_data_format", "return_tensors", "image_seq_length")
_QUIET_UNUSED = ("trust_remote_code", "use_fast", "_from_auto", "_from_pipeline", "subfolder")


class ImageSize(Mapping):
    """``{"height": h, "width": w}`` with attribute access, like transformers' ``SizeDict``."""

    __slots__ = ("height", "width")

    def __init__(self, height: int, width: int) -> None:
        object.__setattr__(self, "height", int(height))
        object.__setattr__(self, "width", int(width))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ImageSize is immutable; assign a new size to the processor instead")

    def __getitem__(self, key: str) -> int:
        if key in self.__slots__:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self):
        return iter(self.__slots__)

    def __len__(self) -> int:
        return 2

    def __eq__(self, other: object) -> bool:
        if dataclasses.is_dataclass(other) and not isinstance(other, type):  # transformers' SizeDict
            other = {k: v for k, v in dataclasses.asdict(other).items() if v is not None}
        return isinstance(other, Mapping) and dict(self) == dict(other)

    __hash__ = None

    def __reduce__(self) -> tuple:
        return type(self), (self.height, self.width)

    def __repr__(self) -> str:
        return f"ImageSize(height={self.height}, width={self.width})"

    @classmethod
    def parse(cls, value: Any, name: str, default_to_square: bool | None = True) -> ImageSize:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # transformers' SizeDict
            value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
        if isinstance(value, int) and default_to_square is False:
            raise UnsupportedOptionError(f"{name}={value} with default_to_square=False means a shortest edge; the "
                                         "Perceiver processor needs a height and a width")
        if isinstance(value, Mapping) and set(value) - {"height", "width"}:
            extra = {k: v for k, v in value.items() if v is not None and k not in ("height", "width")}
            if extra:
                raise ValueError(f"{name} must have the keys 'height' and 'width' (the Perceiver crop needs "
                                 f"both), got {dict(value)}")
            value = {"height": value.get("height"), "width": value.get("width")}
        return cls(*_parse_size(value, name))


class PerceiverImageProcessor:
    """Callable preprocessor: images in, ``BatchFeature(pixel_values=...)`` out."""

    model_input_names = ["pixel_values"]
    # Class defaults, as in transformers.
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    rescale_factor = 1 / 255
    image_mean = IMAGENET_MEAN
    image_std = IMAGENET_STD

    def __init__(self, config: PerceiverImageProcessorConfig | None = None, /, **kwargs: Any) -> None:
        """transformers' keywords (``size={"height": 384, "width": 384}``, ``crop_size=``, ``resample=``...);
        ``config`` is our own frozen settings record. Unknown keywords become attributes, as in transformers."""
        kwargs.pop("feature_extractor_type", None)
        kwargs.pop("processor_class", None)
        kwargs.pop("image_processor_type", None)
        if config is not None:
            if not isinstance(config, PerceiverImageProcessorConfig):
                raise TypeError("PerceiverImageProcessor takes keyword arguments (as in transformers), or one "
                                f"PerceiverImageProcessorConfig positionally; got {type(config).__name__}")
            kwargs = {**_config_kwargs(config), **kwargs}
        default_to_square = kwargs.pop("default_to_square", None)
        for key in VALID_KWARGS:
            if key == "default_to_square":
                continue
            value = kwargs.pop(key, None)
            if value is None:
                value = copy.deepcopy(_class_default(key))
            if key in ("size", "crop_size") and value is not None:
                value = ImageSize.parse(value, key, default_to_square)
            elif key in ("image_mean", "image_std") and isinstance(value, list):
                value = tuple(value)
            setattr(self, key, value)
        for key, value in kwargs.items():
            setattr(self, key, value)
        self._settings({})  # validate now rather than at the first call

    @property
    def config(self) -> PerceiverImageProcessorConfig:
        """The current settings as our frozen record (what the batch jobs' kernels take)."""
        return self._settings({})[0]

    def replace(self, **changes: Any) -> PerceiverImageProcessor:
        """A processor with some settings of ``config`` changed (validated like the config)."""
        return type(self)(dataclasses.replace(self.config, **changes))

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    # ----------------------------------------------------------------------------------- processing
    def _settings(self, overrides: dict[str, Any]) -> tuple[PerceiverImageProcessorConfig, dict[str, Any]]:
        """Attributes with the call's overrides, validated: (pixel settings, input/output options)."""
        reject_unexpected("PerceiverImageProcessor.preprocess()",
                          {k: v for k, v in overrides.items() if k not in VALID_KWARGS})
        values = {key: overrides[key] if key in overrides else getattr(self, key, None) for key in VALID_KWARGS}
        for key in _BOOLS:
            if values[key] is not None and not isinstance(values[key], bool):
                raise TypeError(f"{key} must be a bool or None, got {values[key]!r}")
        for key in ("do_pad", "pad_size", "image_seq_length"):
            if values[key]:
                raise UnsupportedOptionError(f"{key}={values[key]!r}: the Perceiver processor crops and resizes every "
                                             "image to one size, so there is nothing to pad or count")
        if values["data_format"] is not None and str(getattr(values["data_format"], "value", values["data_format"])
                                                     ) != FIRST:
            raise UnsupportedOptionError(f"data_format={values['data_format']!r}: pixel_values are channels first "
                                         "(transformers' torchvision backend ignores the keyword)")
        sizes = {}
        for key, needed in (("size", values["do_resize"] or values["do_center_crop"]),
                            ("crop_size", values["do_center_crop"])):
            if values[key] is not None:
                sizes[key] = tuple(ImageSize.parse(values[key], key, values["default_to_square"]).values())
            elif needed:
                raise ValueError(f"{key} must be specified if do_resize / do_center_crop is True")
            else:
                sizes[key] = getattr(PerceiverImageProcessorConfig, key)
        means = {}
        for key in ("image_mean", "image_std"):
            value = values[key]
            means[key] = (value,) * 3 if isinstance(value, (int, float)) else value
            if value is None:
                if values["do_normalize"]:
                    raise ValueError(f"{key} must be specified if do_normalize is True")
                means[key] = getattr(PerceiverImageProcessorConfig, key)
        rescale_factor = values["rescale_factor"]
        if rescale_factor is None:
            if values["do_rescale"]:
                raise ValueError("rescale_factor must be specified if do_rescale is True")
            rescale_factor = PerceiverImageProcessorConfig.rescale_factor
        resample = values["resample"]
        config = PerceiverImageProcessorConfig(
            size=sizes["size"], crop_size=sizes["crop_size"],
            resample=resample_name(resample) if resample is not None else "bilinear",
            do_center_crop=bool(values["do_center_crop"]), do_resize=bool(values["do_resize"]),
            do_rescale=bool(values["do_rescale"]), rescale_factor=rescale_factor,
            do_normalize=bool(values["do_normalize"]), **means)
        options = {"return_tensors": tensor_type(values["return_tensors"]), "device": values["device"],
                   "input_data_format": values["input_data_format"],
                   # None: PIL's convert (transformers fails on non-RGB PIL images); True: its white composite.
                   "convert_rgb": {None: True, True: "composite", False: False}[values["do_convert_rgb"]]}
        return config, options

    def preprocess(self, images: ImageInput, *args: Any, **kwargs: Any) -> BatchFeature:
        """Preprocess one image or a batch (PIL, numpy, tensors, file paths; nested lists are flattened).

        ``pixel_values`` is a list of (3, H, W) tensors (``return_tensors=None``, transformers' default), a
        (B, 3, H, W) tensor (``"pt"``) or array (``"np"``). Float32, or the input dtype when neither
        rescale nor normalize is on (uint8 stays uint8, as in transformers).
        """
        if args:
            raise TypeError("PerceiverImageProcessor.preprocess() takes the images as its only positional argument")
        config, options = self._settings(kwargs)
        tensors = to_chw_tensors(images, options["input_data_format"], options["convert_rgb"])
        if not tensors:
            raise ValueError("no images given")
        if options["device"] is not None:
            tensors = [t.to(options["device"]) for t in tensors]
        # Same-shape, same-dtype images go through the kernels together; order is restored afterwards.
        groups: dict[tuple, list[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault((tuple(tensor.shape), tensor.dtype, tensor.device), []).append(index)
        outputs: list[torch.Tensor | None] = [None] * len(tensors)
        for indices in groups.values():
            batch = preprocess_batch(torch.stack([tensors[i] for i in indices]), config, output_dtype=None)
            for i, image in zip(indices, batch):
                outputs[i] = image
        kind = options["return_tensors"]
        if kind is not None and len({(o.shape, o.dtype) for o in outputs}) > 1:
            raise ValueError("Unable to convert output 'pixel_values' to tensor: the processed images differ in "
                             "size (do_center_crop and do_resize are off); use return_tensors=None for a list")
        return BatchFeature({"pixel_values": outputs}, tensor_type=kind)

    def __call__(self, images: ImageInput, *args: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, *args, **kwargs)

    # ----------------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """The attributes, as transformers serialises them (sizes as plain dicts, None values left out)."""
        attributes = {k: copy.deepcopy(v) for k, v in self.__dict__.items() if not k.startswith("_")}
        out = {k: v for k, v in attributes.items() if k not in VALID_KWARGS}
        for key in _DICT_ORDER:
            value = attributes.get(key, getattr(self, key, None))
            if value is not None:
                out[key] = dict(value) if isinstance(value, ImageSize) else value
        out["image_processor_type"] = type(self).__name__
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        Path(json_file_path).write_text(self.to_json_string(), encoding="utf-8")

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
                        ) -> list[str]:
        """Write ``preprocessor_config.json``; returns ``[its path]`` like transformers."""
        reject_unexpected("PerceiverImageProcessor.save_pretrained()", kwargs)
        directory = save_folder(save_directory, push_to_hub)
        path = directory / PREPROCESSOR_CONFIG_NAME
        self.to_json_file(path)
        return [str(path)]

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs: Any) -> Any:
        """A processor from ``to_dict()`` output; keywords override (``return_unused_kwargs`` as transformers)."""
        return_unused = kwargs.pop("return_unused_kwargs", False)
        settings = {**image_processor_dict, **{k: v for k, v in kwargs.items() if k in VALID_KWARGS}}
        processor = cls(**settings)
        unused = {}
        for key, value in kwargs.items():
            if key in VALID_KWARGS:
                continue
            if key in processor.__dict__:
                setattr(processor, key, value)
            else:
                unused[key] = value
        if return_unused:
            return processor, unused
        noisy = [k for k in unused if k not in _QUIET_UNUSED]
        if noisy:
            warnings.warn(f"PerceiverImageProcessor.from_pretrained: keyword(s) {noisy} are not processor "
                          "settings and were not used (transformers drops them silently)", stacklevel=3)
        return processor

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> PerceiverImageProcessor:
        return cls(**json.loads(Path(json_file).read_text(encoding="utf-8")))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        cache_dir: str | os.PathLike | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None, revision: str = "main",
                        **kwargs: Any) -> Any:
        """Read ``preprocessor_config.json`` from a folder, a json file path or a hub id (huggingface_hub cache,
        ``HF_HUB_OFFLINE``); processor keywords override the stored values."""
        from .hub import resolve_pretrained

        if kwargs.get("proxies"):
            raise UnsupportedOptionError("from_pretrained(proxies=...) is not supported")
        kwargs.pop("proxies", None)
        source = Path(os.fspath(pretrained_model_name_or_path))
        if source.is_file():
            path = source
        else:
            folder = resolve_pretrained(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                        local_files_only=local_files_only, token=token,
                                        subfolder=kwargs.get("subfolder", ""), force_download=force_download)
            path = folder / PREPROCESSOR_CONFIG_NAME
            if not path.is_file():
                raise FileNotFoundError(f"Can't load image processor for '{pretrained_model_name_or_path}': no "
                                        f"{PREPROCESSOR_CONFIG_NAME} in {folder}")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), **kwargs)


def _class_default(key: str) -> Any:
    if key in ("size", "crop_size"):
        return dict(zip(("height", "width"), getattr(PerceiverImageProcessorConfig, key)))
    if key == "resample":
        return pil_resample(PerceiverImageProcessorConfig.resample)
    return getattr(PerceiverImageProcessor, key, None)


def _config_kwargs(config: PerceiverImageProcessorConfig) -> dict[str, Any]:
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    values["resample"] = pil_resample(config.resample)
    for key in ("size", "crop_size"):
        values[key] = dict(zip(("height", "width"), values[key]))
    return values


def _json_default(value: Any) -> Any:
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "value"):  # enums such as torchvision's InterpolationMode
        return value.value
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
