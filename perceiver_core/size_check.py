"""Size checks that run before a checkpoint's model is allocated.

A ``config.json`` decides how much memory the model takes and how long a forward pass runs, and nothing in
it is bounded: ``d_latents: 10**9`` or ``num_labels: 10**8`` would allocate until the machine runs out of
memory, ``num_blocks: 10**6`` would make every forward pass run for hours. So loading first

1. bounds the work the config asks for that no weight shape reveals (``num_blocks`` reuses the same weights;
   ``num_blocks * num_self_attends_per_block`` is capped at ``MAX_SELF_ATTENTION_LAYERS``),
2. builds the model on the ``meta`` device (shapes only, no memory) and compares its tensor shapes with the
   weight file's header (``checkpoint.py``), naming the config values that do not fit the weights,
3. caps what the config implies in total (``MAX_PARAMETERS`` and the machine's physical memory), which
   matters for non-strict loads where keys missing from the checkpoint are freshly initialised,

and only then builds the model for real.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import torch

from .config import PerceiverConfig

# Published checkpoints apply at most 48 self-attention layers per forward (vision: 8 blocks x 6).
MAX_SELF_ATTENTION_LAYERS = 1024
# 40 GB of float32: an order of magnitude above any published Perceiver (the largest has ~0.2 B).
MAX_PARAMETERS = 10**10


class CheckpointSizeError(ValueError):
    """The config asks for more than a checkpoint may: too many parameters or too deep a forward pass."""


def check_depth(config: PerceiverConfig) -> None:
    """Refuse configs whose forward pass applies more than ``MAX_SELF_ATTENTION_LAYERS`` self-attentions.

    Runs before any module is built, because building ``num_self_attends_per_block`` modules is itself slow.
    """
    layers = config.num_blocks * config.num_self_attends_per_block
    if layers > MAX_SELF_ATTENTION_LAYERS:
        raise CheckpointSizeError(
            f"config.json asks for num_blocks={config.num_blocks} x num_self_attends_per_block="
            f"{config.num_self_attends_per_block} = {layers} self-attention layers per forward pass; "
            f"at most {MAX_SELF_ATTENTION_LAYERS} are allowed")


def meta_shapes(cls: type, config: PerceiverConfig) -> dict[str, torch.Size]:
    """State-dict shapes of ``cls(config)`` built on the meta device: no tensor memory is allocated."""
    with torch.device("meta"):
        model = cls(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def physical_memory_bytes() -> int | None:
    """Total RAM of this machine, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_total(shapes: dict[str, torch.Size], bytes_per_value: int = 4) -> int:
    """Refuse a model of more than ``MAX_PARAMETERS`` values or more bytes than the machine has; the count."""
    total = sum(s.numel() for s in shapes.values())
    largest = sorted(shapes.items(), key=lambda kv: kv[1].numel(), reverse=True)[:3]
    where = ", ".join(f"{k} {list(s)}" for k, s in largest)
    if total > MAX_PARAMETERS:
        raise CheckpointSizeError(f"config.json implies {total:,} parameters, more than the cap of "
                                  f"{MAX_PARAMETERS:,} (largest tensors: {where})")
    memory = physical_memory_bytes()
    if memory is not None and total * bytes_per_value > memory:
        gb = total * bytes_per_value / 1e9
        raise CheckpointSizeError(f"config.json implies {total:,} parameters ({gb:.1f} GB), more than this "
                                  f"machine's {memory / 1e9:.1f} GB of memory (largest tensors: {where})")
    return total


def _numbers(config: PerceiverConfig) -> Iterable[tuple[str, int]]:
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            yield f.name, value
        elif isinstance(value, tuple):
            yield from ((f"{f.name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, int))


def suspect_fields(config: PerceiverConfig, mismatched: list[tuple[str, tuple, tuple]]) -> list[str]:
    """Config values that equal a model dimension the checkpoint disagrees with, as 'name=value (weights N)'.

    A heuristic for the error message: ``d_latents: 10**9`` makes every latent-sized axis 10**9 where the
    weights say 32, so d_latents is named. Fields that enter shapes only through arithmetic are not found.
    """
    numbers = list(_numbers(config))
    found: dict[str, set[int]] = {}
    for _key, got, want in mismatched:
        if len(got) != len(want):
            continue
        for g, w in zip(got, want):
            if g == w:
                continue
            for name, value in numbers:
                if value == w:
                    found.setdefault(f"{name}={value}", set()).add(g)
    return [f"{name} (weights say {', '.join(str(v) for v in sorted(seen))})" for name, seen in found.items()]
