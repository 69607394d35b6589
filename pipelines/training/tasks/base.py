"""The contract between the training loop and a task (mlm, classification, flow, autoencoding).

A task turns a ``TrainConfig`` into a model configuration and Ray Datasets (driver side), and turns batches
into a loss and metric *sums* (worker side). Its ``TrainingModule`` is what DDP wraps: its ``forward(batch)``
runs the model and returns the loss, so gradient synchronisation sees every parameter the loss used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn
from torch import nn

from perceiver_core import PerceiverConfig, presets
from pipelines.training.config import TrainConfig
from pipelines.training.init_schemes import apply_init


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor of a numpy batch column (copied when Ray hands out a read-only buffer)."""
    array = np.asarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


@dataclass
class StepOutput:
    loss: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)  # sums, pooled across steps and ranks


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class TrainingModule(nn.Module):
    """Wraps a head so that ``forward(batch)`` returns a ``StepOutput``; DDP wraps this module."""

    def __init__(self, model: nn.Module, task: Task, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.config = config

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        return self.task.forward(self.model, batch, self.config)


class TaskCollate(NumpyBatchCollateFn):
    """``iter_torch_batches(collate_fn=...)`` as Ray wants it (a NumpyBatchCollateFn): the task's ``collate``."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return self.task.collate(batch)


class Task:
    """Base class; subclasses set ``name`` and implement the hooks marked below."""

    name: str = ""
    find_unused_parameters: bool = False  # DDP: some parameters may get no gradient (e.g. an unused head)
    default_init_scheme: str = "transformers"  # for models trained from scratch (``init_schemes``)

    # ------------------------------------------------------------- driver side
    def head_class(self, config: TrainConfig, model_config: PerceiverConfig) -> type:
        return presets.get(config.preset_name).head

    def prepare_model_config(self, config: TrainConfig, model_config: PerceiverConfig) -> PerceiverConfig:
        """Task-derived settings (labels from the data, output shapes). Default: unchanged."""
        return model_config

    def build_datasets(self, config: TrainConfig, model_config: PerceiverConfig) -> dict[str, Any]:
        """{"train": Dataset, "val": Dataset (optional)} of preprocessed examples."""
        raise NotImplementedError

    def baselines(self, config: TrainConfig, model_config: PerceiverConfig, datasets: dict[str, Any]
                  ) -> dict[str, float]:
        """Reference figures reported beside the eval metrics (e.g. a unigram or majority baseline)."""
        return {}

    def metric_names(self, config: TrainConfig) -> list[str]:
        """Columns of metrics.csv (train and eval summaries, baselines)."""
        return ["loss"]

    # ------------------------------------------------------------- worker side
    def collate(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Numpy batch from Ray Data -> tensors (deterministic; runs in Ray's batch iterator)."""
        return {k: as_tensor(v) for k, v in batch.items()}

    def prepare_batch(self, batch: dict[str, torch.Tensor], rng: np.random.Generator, config: TrainConfig,
                      model_config: PerceiverConfig, train: bool, device: torch.device) -> dict[str, Any]:
        """Random per-step work (masking, sampled output points, augmentation) and the move to ``device``."""
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, model: nn.Module, batch: dict[str, Any], config: TrainConfig) -> StepOutput:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, dataset: Any, config: TrainConfig, model_config: PerceiverConfig,
                 device: torch.device, rng: np.random.Generator) -> dict[str, float]:
        """Metric sums over the held-out split (rank 0 only, model unwrapped, in eval mode)."""
        stats = dict.fromkeys(self.eval_stat_keys, 0.0)
        batches = dataset.iter_torch_batches(batch_size=config.batch_size, collate_fn=TaskCollate(self))
        with torch.inference_mode():
            for i, batch in enumerate(batches):
                if config.eval_batches is not None and i >= config.eval_batches:
                    break
                batch = self.prepare_batch(batch, rng, config, model_config, train=False, device=device)
                for k, v in self.eval_stats(model, batch, config).items():
                    stats[k] = stats.get(k, 0.0) + v
        return stats

    eval_stat_keys: tuple[str, ...] = ()  # sums that ``evaluate`` reports even when the held-out split is empty

    def eval_stats(self, model: nn.Module, batch: dict[str, Any], config: TrainConfig) -> dict[str, float]:
        """Metric sums of one held-out batch. Default: the training forward's sums."""
        return self.forward(model, batch, config).stats

    def summarize(self, stats: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    def init_fresh_model(self, model: nn.Module, config: TrainConfig) -> nn.Module:
        """Re-initialise a model trained from scratch (not ``--init-from`` or resumed runs)."""
        return apply_init(model, config.init_scheme or self.default_init_scheme)

    def param_lr_multipliers(self, model_config: PerceiverConfig) -> dict[str, float]:
        """Parameter-name prefixes whose learning rate is scaled (e.g. a rescaled output layer)."""
        return {}

    def probe(self, model: nn.Module, model_config: PerceiverConfig) -> torch.Tensor:
        """The model's output on a fixed input: lets tests compare a saved checkpoint with the trained model."""
        raise NotImplementedError

    def save_extras(self, directory, config: TrainConfig, model_config: PerceiverConfig) -> None:
        """Files saved beside a model checkpoint (tokenizer, preprocessing config)."""
