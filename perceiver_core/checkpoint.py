"""Safe reading and writing of transformers-format checkpoint directories.

Reads ``model.safetensors`` (preferred) or ``pytorch_model.bin`` with ``torch.load(weights_only=True)``; never
unpickles arbitrary objects. Writes ``config.json`` + ``model.safetensors`` that transformers loads as is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .config import PerceiverConfig
from .convert import ConversionReport, from_transformers, to_transformers

logger = logging.getLogger(__name__)

SAFE_WEIGHTS = "model.safetensors"
TORCH_WEIGHTS = "pytorch_model.bin"


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model; ``report`` lists the keys."""

    def __init__(self, message: str, report: ConversionReport) -> None:
        super().__init__(message)
        self.report = report


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    safe = directory / SAFE_WEIGHTS
    if safe.exists():
        from safetensors.torch import load_file

        try:
            return load_file(str(safe))
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"corrupt checkpoint {safe}: {exc}") from exc
    legacy = directory / TORCH_WEIGHTS
    if legacy.exists():
        try:
            state = torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"cannot read {legacy} safely (weights_only=True): {exc}") from exc
        if not isinstance(state, dict):
            raise ValueError(f"{legacy} does not hold a state dict")
        return state
    raise FileNotFoundError(f"no {SAFE_WEIGHTS} or {TORCH_WEIGHTS} in {directory}")


def load_pretrained(cls: type, directory: Path, *, strict: bool | None = None,
                    config: PerceiverConfig | None = None, **config_overrides: Any):
    config = config or PerceiverConfig.from_pretrained(directory)
    if config_overrides:
        config = config.replace(**config_overrides)
    state = read_state_dict(directory)
    model = cls(config)
    architecture = cls.__name__
    saved_as = (config.architectures or [architecture])[0]
    if strict is None:
        strict = saved_as == architecture
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    converted, report = from_transformers(state, shapes, architecture)
    problems = report.mismatched or (strict and (report.missing or report.unexpected))
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {directory} (saved as {saved_as}) does not fit {architecture}:\n{report.describe()}",
            report)
    model.load_state_dict(converted, strict=False)
    if report.missing or report.unexpected:
        logger.warning("loaded %s into %s non-strictly:\n%s", saved_as, architecture, report.describe())
    model.loading_info = report
    config.architectures = [architecture]
    model.eval()
    return model


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
