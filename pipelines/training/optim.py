"""AdamW with decoupled weight decay on matrices only, and a linear warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based; the optimizer step about to be taken).

    Linear from 1/(warmup+1) to 1 over ``warmup_steps`` steps, then a half cosine from 1 to ``min_ratio`` at
    ``max_steps``; constant at ``min_ratio`` afterwards.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                    lr_multipliers: dict[str, float] | None = None) -> torch.optim.AdamW:
    """Weight decay on weight matrices (ndim >= 2) only; biases, norms and 1-D tables are not decayed.

    ``lr_multipliers`` maps parameter-name prefixes to a learning-rate factor (e.g. a layer whose output the
    model rescales); those parameters get their own groups, which the schedule scales like the others.
    """
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        factor = next((f for prefix, f in (lr_multipliers or {}).items() if name.startswith(prefix)), 1.0)
        groups.setdefault((param.ndim >= 2, factor), []).append(param)
    param_groups = [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * factor}
                    for (decay, factor), params in sorted(groups.items(), key=lambda kv: (kv[0][1], not kv[0][0]))]
    return torch.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int,
                    min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, max_steps, min_ratio))
