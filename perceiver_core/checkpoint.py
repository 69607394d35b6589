"""Safe reading and writing of transformers-format checkpoint directories.

Reads ``model.safetensors`` (preferred) or ``pytorch_model.bin`` with ``torch.load(weights_only=True)``; never
unpickles arbitrary objects. Before the model is allocated, its config is checked against the weight shapes
(from the safetensors header; see ``size_check.py``), so an edited ``config.json`` fails fast with the keys
that do not fit instead of exhausting memory. Writes ``config.json`` + ``model.safetensors`` that transformers
loads as is.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import size_check
from .config import PerceiverConfig
from .config_compat import apply_overrides
from .convert import ConversionReport, from_transformers, match_shapes, to_transformers, to_transformers_key
from .hub import resolve_pretrained
from .load_options import LoadOptions

logger = logging.getLogger(__name__)

PREFIX = "perceiver."  # transformers' base_model_prefix, the heads' key prefix
SAFE_WEIGHTS = "model.safetensors"
TORCH_WEIGHTS = "pytorch_model.bin"


class CheckpointMismatchError(ValueError, RuntimeError):
    """The checkpoint's tensors do not match the model; ``report`` lists the keys.

    Also a ``RuntimeError``: what transformers raises for wrongly shaped weights without
    ``ignore_mismatched_sizes=True``."""

    def __init__(self, message: str, report: ConversionReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class WeightsFile:
    """A checkpoint's weight file, with every tensor's shape known before any tensor is read.

    For safetensors the shapes come from the file header alone; ``pytorch_model.bin`` is memory-mapped
    (``mmap=True``), so its shapes cost no reading either.
    """

    path: Path
    shapes: dict[str, tuple[int, ...]]
    _state: dict[str, torch.Tensor] | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        if self._state is not None:
            return self._state
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"corrupt checkpoint {self.path}: {exc}") from exc


def open_weights(directory: Path, use_safetensors: bool | None = None) -> WeightsFile:
    """The weight file of a checkpoint directory (``model.safetensors`` preferred; only it with
    ``use_safetensors=True``, only ``pytorch_model.bin`` with False, as transformers), shapes read."""
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    safe = directory / SAFE_WEIGHTS
    if use_safetensors is True and not safe.exists():
        raise FileNotFoundError(f"no {SAFE_WEIGHTS} in {directory} (use_safetensors=True)")
    if safe.exists() and use_safetensors is not False:
        from safetensors import safe_open

        try:
            with safe_open(str(safe), framework="pt") as fh:
                shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"corrupt checkpoint {safe}: {exc}") from exc
        return WeightsFile(safe, shapes)
    legacy = directory / TORCH_WEIGHTS
    if legacy.exists():
        state = _load_legacy(legacy)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{legacy} does not hold a state dict")
        return WeightsFile(legacy, {k: tuple(v.shape) for k, v in state.items()}, state)
    raise FileNotFoundError(f"no {SAFE_WEIGHTS} or {TORCH_WEIGHTS} in {directory}")


def _load_legacy(path: Path) -> Any:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # files of the pre-zip format cannot be mapped; read them whole
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read {path} safely (weights_only=True): {exc}") from exc


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    return open_weights(directory).tensors()


def load_pretrained(cls: type, name_or_path: str | os.PathLike, options: LoadOptions):
    """``cls.from_pretrained``: see ``PerceiverPreTrainedModel.from_pretrained`` for the contract."""
    architecture = cls.__name__
    directory = resolve_pretrained(name_or_path, **options.hub_kwargs())
    config = _load_config(architecture, directory, options)
    config.name_or_path = os.fspath(name_or_path)
    weights = open_weights(directory, options.use_safetensors)
    saved_as = (config.architectures or [architecture])[0]
    strict = saved_as == architecture if options.strict is None else options.strict
    ignore_mismatched = options.ignore_mismatched_sizes
    # Check the config against the weights before allocating anything (see size_check.py).
    size_check.check_depth(config)
    shapes = size_check.meta_shapes(cls, config)
    rename = base_model_renames(weights.shapes, architecture)
    _, report = _match(weights.shapes, rename, shapes, architecture)
    _raise_on_problems(report, strict, ignore_mismatched, config, directory, saved_as, architecture)
    size_check.check_total({to_transformers_key(k, architecture): v for k, v in shapes.items()})
    model = cls(config)
    state = weights.tensors()
    _, report = _match({k: tuple(v.shape) for k, v in state.items()}, rename, shapes, architecture)
    converted, _ = from_transformers({rename.get(k, k): v for k, v in state.items()}, shapes, architecture)
    _raise_on_problems(report, strict, ignore_mismatched, config, directory, saved_as, architecture)  # header lied?
    model.load_state_dict(converted, strict=False)  # mismatched keys (ignore_mismatched_sizes) keep fresh weights
    if report.missing or report.unexpected or report.mismatched:
        logger.warning("loaded %s into %s non-strictly:\n%s", saved_as, architecture, report.describe())
    dtype = _resolve_dtype(options.dtype, config, state)
    if dtype != torch.float32:
        model.to(dtype)
    if options.device is not None:
        model.to(options.device)
        model.hf_device_map = {"": options.device}
    config.dtype = dtype
    config._attn_implementation = options.attn_implementation or "eager"
    config.architectures = [architecture]
    model.loading_info = report
    model.eval()
    if options.output_loading_info:
        return model, loading_info_dict(report)
    return model


def _match(checkpoint_shapes: dict[str, tuple[int, ...]], rename: dict[str, str], shapes: dict[str, Any],
           architecture: str) -> tuple[dict[str, str], ConversionReport]:
    """``match_shapes`` across the base-model prefix; unexpected keys keep the checkpoint's own names."""
    fits, report = match_shapes({rename.get(k, k): v for k, v in checkpoint_shapes.items()}, shapes, architecture)
    original = {new: old for old, new in rename.items()}
    report.unexpected = [original.get(k, k) for k in report.unexpected]
    return fits, report


def base_model_renames(checkpoint_keys: Iterable[str], architecture: str) -> dict[str, str]:
    """Checkpoint key -> key as ``architecture`` names it, across the ``perceiver.`` prefix (transformers'
    ``base_model_prefix``): a head's checkpoint loads into ``PerceiverModel`` (its ``perceiver.*`` weights) and
    a ``PerceiverModel`` checkpoint into a head, as in transformers. Keys not listed keep their name."""
    keys = list(checkpoint_keys)
    has_prefix = any(k.startswith(PREFIX) for k in keys)
    if architecture == "PerceiverModel" and has_prefix:
        return {k: k[len(PREFIX):] for k in keys if k.startswith(PREFIX)}
    if architecture != "PerceiverModel" and not has_prefix and any(k.startswith("embeddings.") for k in keys):
        return {k: PREFIX + k for k in keys}
    return {}


def _load_config(owner: str, directory: Path, options: LoadOptions) -> PerceiverConfig:
    """The checkpoint's config (or ``config=``: an object, copied, or a folder / hub id) with the overrides;
    a keyword that is no config attribute either is a ``TypeError`` naming it, as in transformers."""
    given = options.config
    if isinstance(given, PerceiverConfig):
        config = copy.deepcopy(given)  # the caller's object stays as it was
        unused = apply_overrides(config, options.config_overrides)
    elif given is None:
        config, unused = PerceiverConfig.from_pretrained(directory, return_unused_kwargs=True,
                                                         **options.config_overrides)
    elif hasattr(given, "to_dict"):  # another library's config object, e.g. transformers' PerceiverConfig
        config, unused = PerceiverConfig.from_dict(given.to_dict(), return_unused_kwargs=True,
                                                   **options.config_overrides)
    else:  # a folder or hub id of its own
        hub = {k: v for k, v in options.hub_kwargs().items() if k != "subfolder"}
        config, unused = PerceiverConfig.from_pretrained(given, return_unused_kwargs=True, **hub,
                                                         **options.config_overrides)
    if unused:
        names = ", ".join(sorted(unused))
        raise TypeError(f"{owner}.from_pretrained() got unexpected keyword argument(s) {names}: neither a loading "
                        "option nor a PerceiverConfig attribute")
    return config


def _resolve_dtype(requested: torch.dtype | str, config: PerceiverConfig,
                   state: dict[str, torch.Tensor]) -> torch.dtype:
    """transformers' rule: ``"auto"`` is the config's dtype, else that of the first floating weight."""
    if requested != "auto":
        return requested  # type: ignore[return-value]
    if config.dtype is not None:
        return config.dtype
    return next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)


def loading_info_dict(report: ConversionReport) -> dict[str, Any]:
    """transformers' ``output_loading_info`` dict (key names are transformers' names)."""
    return {"missing_keys": set(report.missing), "unexpected_keys": set(report.unexpected),
            "mismatched_keys": {(k, torch.Size(got), torch.Size(want)) for k, got, want in report.mismatched},
            "error_msgs": []}


def _raise_on_problems(report: ConversionReport, strict: bool, ignore_mismatched: bool, config: PerceiverConfig,
                       directory: Path, saved_as: str, architecture: str) -> None:
    mismatched = report.mismatched and not ignore_mismatched
    if not (mismatched or (strict and (report.missing or report.unexpected))):
        return
    suspects = size_check.suspect_fields(config, report.mismatched)
    hint = f"config.json values that do not fit the weights: {', '.join(suspects)}\n" if suspects else ""
    if report.mismatched and not ignore_mismatched:
        hint += ("(to start the wrongly shaped weights afresh, e.g. for a new num_labels, pass "
                 "ignore_mismatched_sizes=True)\n")
    raise CheckpointMismatchError(
        f"checkpoint {directory} (saved as {saved_as}) does not fit {architecture}:\n"
        f"{hint}{report.describe()}", report)


def save_pretrained(model: torch.nn.Module, directory: Path, safe_serialization: bool = True) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    architecture = type(model).__name__
    model.config.architectures = [architecture]
    model.config.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    state = to_transformers({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                            architecture)
    model.config.save_pretrained(directory)
    if safe_serialization:
        tmp = directory / (SAFE_WEIGHTS + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.replace(directory / SAFE_WEIGHTS)  # atomic: a crash never leaves a half-written checkpoint
    else:
        torch.save(state, directory / TORCH_WEIGHTS)
    return directory
