"""The part of a model configuration that every transformers config has, as a typed dataclass base.

``TransformersConfig`` holds transformers' common fields (``output_hidden_states``, ``return_dict``, labels,
``dtype``...) and gives a subclass transformers' constructor and (de)serialisation contract, so that code written
against ``transformers.PretrainedConfig`` runs unchanged:

- the constructor takes keywords only; aliases (``torch_dtype``, a subclass's ``attribute_map``) are accepted;
  unknown keywords are kept (in ``extra``) and read back as attributes, as transformers keeps them;
- ``num_labels`` and ``id2label`` stay in step: ``LABEL_i`` names by default, and setting ``num_labels`` to a
  new count rebuilds ``id2label`` / ``label2id``;
- ``to_dict`` / ``to_diff_dict`` / ``to_json_string`` / ``to_json_file`` / ``from_dict`` /
  ``from_pretrained(..., return_unused_kwargs=)`` follow transformers' rules for which keys go where.

A subclass declares its own fields with ``@dataclass(init=False)`` and validates them in ``__post_init__``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .hub import resolve_pretrained

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"

# from_dict keywords that go into the config before it is built (transformers' ``valid_fields``)
_BUILD_KEYWORDS = ("num_labels", "attn_implementation", "output_attentions", "torch_dtype", "dtype", "name_or_path")
# from_pretrained keywords that only steer transformers' own machinery and have no effect on a config
_NO_EFFECT_KEYWORDS = ("trust_remote_code", "_from_auto", "_from_pipeline", "_commit_hash")


def as_dtype(value: Any) -> torch.dtype | None:
    """``"bfloat16"`` / ``"torch.bfloat16"`` / ``torch.bfloat16`` -> ``torch.bfloat16``; None stays None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        candidate = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(candidate, torch.dtype):
            return candidate
    raise ValueError(f"dtype must be a torch.dtype or the name of one (e.g. 'bfloat16'), got {value!r}")


def dtype_name(value: torch.dtype | None) -> str | None:
    return None if value is None else str(value).removeprefix("torch.")


def _plain(value: Any) -> Any:
    """A JSON-ready deep copy: tuples become lists (as transformers' ``to_dict`` does)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


# Above this many labels the default LABEL_i maps are computed on access instead of stored: an edited
# config.json with num_labels=10**8 must reach the size checks (size_check.py) in milliseconds, not build
# 10**8 strings first. Real label sets (ImageNet-21k: 21843) stay plain dicts.
LAZY_LABELS_ABOVE = 100_000


class DefaultLabelNames(Mapping):
    """``{i: "LABEL_i"}`` for ``i < count`` (or the inverse with ``inverse=True``), without storing it."""

    def __init__(self, count: int, inverse: bool = False) -> None:
        self.count, self.inverse = count, inverse

    def __getitem__(self, key: Any) -> Any:
        if self.inverse:
            if isinstance(key, str) and key.startswith("LABEL_") and key[6:].isdigit() and int(key[6:]) < self.count:
                return int(key[6:])
        elif isinstance(key, int) and 0 <= key < self.count:
            return f"LABEL_{key}"
        raise KeyError(key)

    def __iter__(self):
        return (f"LABEL_{i}" if self.inverse else i for i in range(self.count))

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"DefaultLabelNames(count={self.count}{', inverse=True' if self.inverse else ''})"


def default_labels(count: int) -> tuple[Mapping, Mapping]:
    """transformers' default (id2label, label2id) for ``count`` labels."""
    if count > LAZY_LABELS_ABOVE:
        return DefaultLabelNames(count), DefaultLabelNames(count, inverse=True)
    id2label = {i: f"LABEL_{i}" for i in range(count)}
    return id2label, {v: k for k, v in id2label.items()}


@dataclass(init=False)
class TransformersConfig:
    """transformers' common config fields; see the module docstring for the contract."""

    model_type: ClassVar[str] = ""
    # alias -> field, for reading and writing (transformers' ``attribute_map``)
    attribute_map: ClassVar[dict[str, str]] = {"torch_dtype": "dtype"}
    # field -> the key it is written under in config.json, where transformers' name differs
    serialized_names: ClassVar[dict[str, str]] = {}

    architectures: list[str] | None = None
    output_hidden_states: bool = False
    output_attentions: bool = False
    return_dict: bool = True
    dtype: torch.dtype | None = None  # weights' dtype; from_pretrained(dtype="auto") uses it
    chunk_size_feed_forward: int = 0  # accepted for transformers; our MLPs give the same numbers either way
    is_encoder_decoder: bool = False
    id2label: Mapping[int, str] | None = None  # a dict, or DefaultLabelNames for huge label counts
    label2id: Mapping[str, int] | None = None
    num_labels: int = 2
    problem_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys we do not interpret, kept as attributes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        if args:
            raise ValueError(f"{cls.__name__} accepts only keyword arguments, but found `{len(args)}` positional "
                             "args.")
        for alias, target in cls.attribute_map.items():
            if alias in kwargs:
                value = kwargs.pop(alias)
                if kwargs.get(target) is None:  # the field's own name wins (transformers: dtype over torch_dtype)
                    kwargs[target] = value
        num_labels_given = kwargs.get("num_labels")
        for f in dataclasses.fields(cls):
            if f.name in kwargs:
                value = kwargs.pop(f.name)
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()  # type: ignore[misc]
            object.__setattr__(self, f.name, value)
        object.__setattr__(self, "extra", dict(self.extra))
        object.__setattr__(self, "_name_or_path", str(kwargs.pop("name_or_path", kwargs.pop("_name_or_path", ""))))
        object.__setattr__(self, "_attn_implementation", kwargs.pop("attn_implementation", None))
        for key in ("_attn_implementation_internal", "_commit_hash"):
            kwargs.pop(key, None)
        model_type = kwargs.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            logger.warning("config of model_type %r read as %s (model_type %r)", model_type, cls.__name__,
                           cls.model_type)
        self.extra.update(kwargs)
        object.__setattr__(self, "dtype", as_dtype(self.dtype))
        self._init_labels(num_labels_given)
        self.__post_init__()

    def _init_labels(self, num_labels_given: int | None) -> None:
        """transformers' rules: no ``id2label`` -> ``LABEL_i`` for ``num_labels`` (and a matching ``label2id``,
        whatever was passed); an ``id2label`` fixes ``num_labels``."""
        if self.id2label is None:
            count = 2 if self.num_labels is None else int(self.num_labels)
            object.__setattr__(self, "id2label", None)
            self.num_labels = count
        else:
            if num_labels_given is not None and num_labels_given != len(self.id2label):
                logger.warning("num_labels=%s does not match the id2label map of length %d; using the map",
                               num_labels_given, len(self.id2label))
            label2id = self.label2id
            self.id2label = self.id2label
            if label2id is not None and not isinstance(label2id, DefaultLabelNames):
                object.__setattr__(self, "label2id", {str(k): int(v) for k, v in label2id.items()})
        if self.problem_type == "single_label_classification" and self.num_labels == 1:
            raise ValueError('`problem_type="single_label_classification"` requires `num_labels > 1`. For binary '
                             'classification use `num_labels=2`, or use `problem_type="regression"` for a '
                             "single-output regression head.")

    def __post_init__(self) -> None:
        """Validation of a subclass's fields (called at the end of ``__init__``)."""

    # ------------------------------------------------------------------ attributes
    def __setattr__(self, name: str, value: Any) -> None:
        name = type(self).attribute_map.get(name, name)
        if name == "dtype":
            value = as_dtype(value)
        elif name == "id2label" and value is not None:
            if isinstance(value, DefaultLabelNames):
                label2id: Mapping = DefaultLabelNames(value.count, inverse=True)
            else:
                value = {int(k): str(v) for k, v in value.items()}
                label2id = {v: k for k, v in value.items()}
            object.__setattr__(self, "num_labels", len(value))
            object.__setattr__(self, "label2id", label2id)
        elif name == "num_labels":
            value = int(value)
            if getattr(self, "id2label", None) is None or len(self.id2label) != value:
                id2label, label2id = default_labels(value)
                object.__setattr__(self, "id2label", id2label)
                object.__setattr__(self, "label2id", label2id)
        if name.startswith("_") or hasattr(type(self), name) or name in self._field_names():
            object.__setattr__(self, name, value)
        else:
            self.extra[name] = value  # transformers keeps unknown attributes and writes them to config.json

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: aliases, then the extra keys
        target = type(self).attribute_map.get(name)
        if target is not None:
            return getattr(self, target)
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def _field_names(cls) -> frozenset[str]:
        names = cls.__dict__.get("_fields_cache")
        if names is None:
            names = frozenset(f.name for f in dataclasses.fields(cls))
            cls._fields_cache = names
        return names

    @property
    def name_or_path(self) -> str:
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: Any) -> None:
        self._name_or_path = str(value)

    @property
    def use_return_dict(self) -> bool:
        return self.return_dict

    @property
    def labels(self) -> dict[int, str]:
        """``id2label`` (``LABEL_i`` names unless the checkpoint has its own)."""
        return self.id2label

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Every attribute, as transformers' ``to_dict``: JSON-ready values, ``model_type``, ``_name_or_path``."""
        out: dict[str, Any] = {}
        renames = type(self).serialized_names
        for f in dataclasses.fields(self):
            if f.name in ("extra", "num_labels"):  # num_labels is len(id2label), as in transformers
                continue
            out[renames.get(f.name, f.name)] = _plain(getattr(self, f.name))
        out["dtype"] = dtype_name(self.dtype)
        out.update(_plain(self.extra))
        out["_name_or_path"] = self._name_or_path
        out["model_type"] = type(self).model_type
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        """The model's own fields, extra keys and the common fields that differ from their defaults."""
        common = {f.name for f in dataclasses.fields(TransformersConfig)} - {"extra", "num_labels"}
        defaults = TransformersConfig._common_defaults()
        out = {k: v for k, v in self.to_dict().items() if k not in common or v != defaults[k]}
        out.pop("_name_or_path", None)
        return out

    @classmethod
    def _common_defaults(cls) -> dict[str, Any]:
        blank = object.__new__(TransformersConfig)
        TransformersConfig.__init__(blank)
        return blank.to_dict()

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        Path(json_file_path).write_text(self.to_json_string(use_diff), encoding="utf-8")

    def update(self, config_dict: dict[str, Any]) -> None:
        for key, value in config_dict.items():
            setattr(self, key, value)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):
        """transformers' ``from_dict``: build from ``config_dict``, then set the keywords that are attributes.

        With ``return_unused_kwargs=True`` returns ``(config, {keywords that are not attributes})``.
        """
        return_unused = kwargs.pop("return_unused_kwargs", False)
        for key in ("_from_auto", "_from_pipeline"):
            kwargs.pop(key, None)
        data = dict(config_dict)
        for key in _BUILD_KEYWORDS:
            if key in kwargs and not (key in ("dtype", "torch_dtype") and kwargs[key] == "auto"):
                data[key] = kwargs[key]
        config = cls(**data)
        unused = apply_overrides(config, {k: v for k, v in kwargs.items()
                                          if not (k in ("dtype", "torch_dtype") and v == "auto")})
        unused = {k: v for k, v in unused.items() if k not in _BUILD_KEYWORDS}
        return (config, unused) if return_unused else config

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike):
        return cls(**_read_json(Path(json_file)))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike,
                        cache_dir: str | os.PathLike | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None,
                        revision: str | None = None, **kwargs: Any):
        """A config from a checkpoint folder, a ``config.json`` file or a hub id (through huggingface_hub's cache;
        ``HF_HUB_OFFLINE=1`` and ``local_files_only`` are honoured). Keywords as ``from_dict``."""
        subfolder = kwargs.pop("subfolder", "")
        for key in _NO_EFFECT_KEYWORDS:
            kwargs.pop(key, None)
        if kwargs.pop("proxies", None) is not None:
            raise ValueError("proxies= is not supported; set HTTPS_PROXY for huggingface_hub instead")
        path = Path(os.fspath(pretrained_model_name_or_path))
        if path.is_file():
            config_file = path
        else:
            folder = resolve_pretrained(path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                        token=token, subfolder=subfolder, force_download=force_download)
            config_file = folder / CONFIG_NAME
            if not config_file.is_file():
                raise FileNotFoundError(f"no {CONFIG_NAME} found in {folder}")
        return cls.from_dict(_read_json(config_file), **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False) -> Path:
        """Write ``config.json`` (every key, not only the differences: explicit values survive default changes)."""
        if push_to_hub:
            raise ValueError("push_to_hub=True is not supported; upload the folder with huggingface_hub")
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(f"{directory} is a file, not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        data.pop("_name_or_path", None)  # a local path of the machine that saved it
        path = directory / CONFIG_NAME
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    def replace(self, **changes: Any):
        """A copy with ``changes``; a new ``num_labels`` or ``id2label`` brings its own label maps."""
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if "num_labels" in changes and "id2label" not in changes and changes["num_labels"] != self.num_labels:
            data["id2label"] = data["label2id"] = None  # the old names no longer fit
        if "id2label" in changes and "label2id" not in changes:
            data["label2id"] = None
        data.update(changes)
        new = type(self)(name_or_path=self._name_or_path, **data)
        new._attn_implementation = self._attn_implementation
        return new


def apply_overrides(config: TransformersConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """Set the ``overrides`` that are attributes of ``config`` (as transformers' ``from_dict``); the rest back."""
    unused = {}
    for key, value in overrides.items():
        if key == "attn_implementation":
            config._attn_implementation = value
        elif hasattr(config, key):
            setattr(config, key, value)
        else:
            unused[key] = value
    return unused


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OSError(f"{path} is not a valid JSON file: {err}") from err
    if not isinstance(data, dict):
        raise OSError(f"{path} does not hold a JSON object")
    return data
