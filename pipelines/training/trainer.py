"""Driver side of a training run: Ray, the datasets, the ``TorchTrainer`` and the run directory.

``fit(config)`` resolves the model, builds the task's Ray Datasets (lazy; Ray Train streams the ``train``
split to the workers with ``streaming_split`` and gives ``val`` unsplit to rank 0's evaluation), then runs
``train_loop_per_worker`` on ``num_workers`` DDP workers (``0`` = Ray Train's in-process local mode).

Run directory ``<output_dir>/<name>/``: Ray Train's ``checkpoint_<step>/`` folders and its checkpoint-manager
snapshot, ``metrics.csv``, ``run.json`` (the resolved configuration), ``final/`` (the trained model).
Rerunning with the same name and ``resume`` continues from the latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .loop import FINAL_MODEL_DIR, METRICS_CSV, train_loop_per_worker
from .models import resolve_model
from .tasks import get_task

LOCAL_OBJECT_STORE_BYTES = 1 << 30  # a local Ray for training needs little shared memory


@dataclass
class TrainResult:
    run_dir: Path
    final_dir: Path | None
    checkpoint_dir: Path | None
    step: int
    start_step: int
    metrics: dict[str, Any]
    probe: list | None
    wall_time_s: float


def quiet_ray_logs() -> None:
    """Keep the terminal to our progress lines: no Ray Data progress bars / per-execution INFO logs."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)


def init_ray(config: TrainConfig) -> None:
    import ray

    quiet_ray_logs()
    if ray.is_initialized():
        return
    if config.address:
        ray.init(address=config.address)
        problem = cluster_shortfall(config, ray.cluster_resources())
        if problem:
            print(f"WARNING: {problem}", file=sys.stderr, flush=True)
        return
    # Logical CPUs: the workers' share plus room for Ray Data's read/preprocess tasks (they would otherwise
    # wait for a CPU the training workers hold for the whole run).
    num_cpus = max(os.cpu_count() or 1, config.num_workers * config.cpus_per_worker + 2)
    # address="local": always a fresh in-process cluster, never one someone else started on this machine
    ray.init(address="local", num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             include_dashboard=False, log_to_driver=True)


def cluster_shortfall(config: TrainConfig, resources: dict[str, float]) -> str | None:
    """Why an attached cluster cannot run this training now (None when it can). Ray would wait silently: the
    workers for CPUs or GPUs the cluster lacks, Ray Data's read tasks for a CPU the workers do not hold. An
    autoscaling cluster may still add the nodes, so this is a warning, not an error."""
    workers = max(config.num_workers, 1)
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if config.use_gpu and gpus < workers:
        return (f"the cluster has {gpus:g} GPU(s) for {workers} GPU worker(s): training waits until the autoscaler "
                f"adds GPU nodes")
    needed = workers * config.cpus_per_worker if config.num_workers else 0
    if cpus < needed + 1:
        return (f"the cluster has {cpus:g} CPU(s); {workers} worker(s) x {config.cpus_per_worker} CPU(s) leave "
                f"none for Ray Data's read and preprocessing tasks, so training waits until the autoscaler adds "
                f"CPUs (lower --num-workers or --cpus-per-worker on a fixed cluster)")
    return None


def check_run_dir(config: TrainConfig) -> None:
    run_dir = config.run_dir
    exists = run_dir.exists() and any(run_dir.iterdir())
    if exists and not config.resume:
        raise FileExistsError(f"run directory {run_dir} exists; pass --resume to continue it or choose another "
                              f"--name")
    if config.resume and not exists:
        raise FileNotFoundError(f"--resume: no run at {run_dir}")


def fit(config: TrainConfig) -> TrainResult:
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    start = time.time()
    check_run_dir(config)
    init_ray(config)
    task = get_task(config.task)
    head, model_config = resolve_model(config, task)
    datasets = task.build_datasets(config, model_config)
    if config.cache_data:
        datasets = {name: ds.materialize() for name, ds in datasets.items()}
    baselines = task.baselines(config, model_config, datasets)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(
        {"train_config": config.to_dict(), "model_config": model_config.to_dict(), "head": head.__name__,
         "baselines": baselines}, indent=2, default=str), encoding="utf-8")

    local_mode = config.num_workers == 0
    loop_config = {"train_config": config.to_dict(), "model_config": model_config.to_dict(), "head": head.__name__,
                   "baselines": baselines, "has_val": "val" in datasets, "local_mode": local_mode}
    resources = {"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker=resources if not local_mode else None),
        run_config=RunConfig(name=config.name, storage_path=str(run_dir.parent),
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=config.max_failures)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"] if "train" in datasets else []),
    )
    result = trainer.fit()
    value = result.return_value or {}
    final_dir = run_dir / FINAL_MODEL_DIR  # (an evaluate-only run saves its --init-from model here)
    if config.export_dir and final_dir.is_dir():
        export = Path(config.export_dir)
        export.mkdir(parents=True, exist_ok=True)
        for f in final_dir.iterdir():
            shutil.copy2(f, export / f.name)
    checkpoint = Path(result.checkpoint.path) if (result.checkpoint is not None and not local_mode) else None
    if local_mode:
        from .checkpointing import latest_checkpoint

        checkpoint = latest_checkpoint(run_dir)
    return TrainResult(run_dir=run_dir, final_dir=final_dir if final_dir.is_dir() else None,
                       checkpoint_dir=checkpoint, step=int(value.get("step", 0)),
                       start_step=int(value.get("start_step", 0)), metrics=value.get("metrics", {}),
                       probe=value.get("probe"), wall_time_s=time.time() - start)


def metrics_csv(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS_CSV
