"""Safe reading and writing of transformers-format checkpoint directories.

Reads ``model.safetensors`` (preferred) or ``pytorch_model.bin`` with ``torch.load(weights_only=True)``; never
unpickles arbitrary objects. Before the model is allocated, its config is checked against the weight shapes
(from the safetensors header; see ``size_check.py``), so an edited ``config.json`` fails fast with the keys
that do not fit instead of exhausting memory. Writes ``config.json`` + ``model.safetensors`` that transformers
loads as is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import size_check
from .config import PerceiverConfig
from .convert import ConversionReport, from_transformers, match_shapes, to_transformers, to_transformers_key

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
TORCH_WEIGHTS = "pytorch_model.bin"


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model; ``report`` lists the keys."""

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


def open_weights(directory: Path) -> WeightsFile:
    """The weight file of a checkpoint directory (``model.safetensors`` preferred), shapes read."""
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    safe = directory / SAFE_WEIGHTS
    if safe.exists():
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


def load_pretrained(cls: type, directory: Path, *, strict: bool | None = None,
                    config: PerceiverConfig | None = None, **config_overrides: Any):
    config = config or PerceiverConfig.from_pretrained(directory)
    if config_overrides:
        config = config.replace(**config_overrides)
    weights = open_weights(directory)
    architecture = cls.__name__
    saved_as = (config.architectures or [architecture])[0]
    if strict is None:
        strict = saved_as == architecture
    # Check the config against the weights before allocating anything (see size_check.py).
    size_check.check_depth(config)
    shapes = size_check.meta_shapes(cls, config)
    _, report = match_shapes(weights.shapes, shapes, architecture)
    _raise_on_problems(report, strict, config, directory, saved_as, architecture)
    size_check.check_total({to_transformers_key(k, architecture): v for k, v in shapes.items()})
    model = cls(config)
    converted, report = from_transformers(weights.tensors(), shapes, architecture)
    _raise_on_problems(report, strict, config, directory, saved_as, architecture)  # the header may have lied
    model.load_state_dict(converted, strict=False)
    if report.missing or report.unexpected:
        logger.warning("loaded %s into %s non-strictly:\n%s", saved_as, architecture, report.describe())
    model.loading_info = report
    config.architectures = [architecture]
    model.eval()
    return model


def _raise_on_problems(report: ConversionReport, strict: bool, config: PerceiverConfig, directory: Path,
                       saved_as: str, architecture: str) -> None:
    if not (report.mismatched or (strict and (report.missing or report.unexpected))):
        return
    suspects = size_check.suspect_fields(config, report.mismatched)
    hint = f"config.json values that do not fit the weights: {', '.join(suspects)}\n" if suspects else ""
    raise CheckpointMismatchError(
        f"checkpoint {directory} (saved as {saved_as}) does not fit {architecture}:\n"
        f"{hint}{report.describe()}", report)


def save_pretrained(model: torch.nn.Module, directory: Path, safe_serialization: bool = True) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    architecture = type(model).__name__
    model.config.architectures = [architecture]
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
