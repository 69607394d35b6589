"""Weight initialisations for models trained from scratch.

``transformers``: what ``PerceiverForX(config)`` gives (every Linear ~ N(0, initializer_range = 0.02)).
``variance-scaling``: DeepMind's Haiku default for the Perceiver's linear layers, truncated normal with
std 1/sqrt(fan_in) (cut at 2 std) and zero bias. Narrow layers start ~7-10x larger than at 0.02, so attention
logits and per-channel signals are not vanishingly small at step 0; latents, position tables, embeddings and
LayerNorms keep the ``transformers`` init.
"""

from __future__ import annotations

import torch
from torch import nn

INIT_SCHEMES = ("transformers", "variance-scaling")


@torch.no_grad()
def variance_scaling_(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            std = module.in_features ** -0.5
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def apply_init(model: nn.Module, scheme: str) -> nn.Module:
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose from {', '.join(INIT_SCHEMES)}")
    return variance_scaling_(model) if scheme == "variance-scaling" else model
