"""Which model a run trains: head class + ``PerceiverConfig`` from a preset or a checkpoint, plus overrides."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from perceiver_core import PerceiverConfig, presets
from perceiver_core.hub import is_hub_id, resolve_pretrained
from pipelines import storage
from pipelines.training import run_storage
from pipelines.training.config import TrainConfig
from pipelines.training.tasks import Task


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["d_latents=64", "train_size=[32,48]"]`` -> {"d_latents": 64, "train_size": [32, 48]} (JSON values,
    bare strings allowed)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"model config override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


@contextlib.contextmanager
def checkpoint_folder(init_from: str, names: Sequence[str] | None = None) -> Iterator[Path]:
    """A local folder holding ``init_from``: a hub id's snapshot in the Hugging Face cache, else the folder
    (local, or a temporary download from object storage of ``names`` / every file)."""
    if is_hub_id(init_from):
        yield resolve_pretrained(init_from)
        return
    with run_storage.local_copy(storage.resolve(init_from), names=names) as directory:
        yield directory


def init_config(init_from: str) -> PerceiverConfig:
    """The ``PerceiverConfig`` of a checkpoint folder (local, object storage or hub id; only config.json)."""
    with checkpoint_folder(init_from, names=("config.json",)) as directory:
        return PerceiverConfig.from_pretrained(directory)


def resolve_model(config: TrainConfig, task: Task) -> tuple[type, PerceiverConfig]:
    """(head class, its config) for this run: preset (or ``init_from``'s config) + overrides + task settings."""
    if config.init_from:
        base = init_config(config.init_from)
    else:
        base = presets.config(config.preset_name, tiny=config.tiny)
    if config.model_config:
        unknown = set(config.model_config) - {f.name for f in dataclasses.fields(PerceiverConfig)} - {"extra"}
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}")
        base = base.replace(**config.model_config)
    head = task.head_class(config, base)
    model_config = task.prepare_model_config(config, base)
    model_config.architectures = [head.__name__]
    return head, model_config


def build_model(config: TrainConfig, head: type, model_config: PerceiverConfig,
                task: Task | None = None) -> torch.nn.Module:
    """A fresh model (seeded; re-initialised by ``task.init_fresh_model`` when a task is given) or one
    initialised from ``init_from`` (non-strict across heads: e.g. a sequence classifier keeps an MLM
    checkpoint's encoder and starts its decoder fresh)."""
    torch.manual_seed(config.seed)
    if config.init_from:
        with checkpoint_folder(config.init_from) as directory:  # a download on object stores / from the hub
            saved_as = (PerceiverConfig.from_pretrained(directory).architectures or [""])[0]
            model = head.from_pretrained(directory, config=model_config, strict=saved_as == head.__name__)
    else:
        model = head(model_config)
        if task is not None:
            task.init_fresh_model(model, config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.train()
