"""Shared helpers for tests comparing perceiver_core with transformers on the same weights (parity tests only:
importing this module skips the importing test module where transformers is not installed)."""

from __future__ import annotations

import torch
from _sample_inputs import max_abs_diff, sample_inputs

from perceiver_core import presets

transformers = __import__("pytest").importorskip("transformers")


def hf_config(cfg):
    values = {k: v for k, v in cfg.to_dict().items() if k not in ("architectures", "model_type")}
    return transformers.PerceiverConfig(**values)


def hf_model(name: str, cfg, seed: int = 0):
    cls = getattr(transformers, presets.get(name).head.__name__)
    torch.manual_seed(seed)
    return cls(hf_config(cfg)).eval()


__all__ = ["hf_config", "hf_model", "max_abs_diff", "sample_inputs", "transformers"]
