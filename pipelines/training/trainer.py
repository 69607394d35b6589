"""Driver side of a training run: Ray, the datasets, the ``TorchTrainer`` and the run directory.

``fit(config)`` resolves the model, builds the task's Ray Datasets (lazy; Ray Train streams the ``train``
split to the workers with ``streaming_split`` and gives ``val`` unsplit to rank 0's evaluation), then runs
``train_loop_per_worker`` on ``num_workers`` DDP workers (``0`` = Ray Train's in-process local mode).

Run directory ``<output_dir>/<name>/``, a local folder or a prefix on object storage (``s3://bucket/runs``):
Ray Train's ``checkpoint_<step>/`` folders and its checkpoint-manager snapshot (Ray Train writes them through
``RunConfig(storage_path=..., storage_filesystem=...)``, the store's pyarrow filesystem), ``metrics.csv``,
``run.json`` (the resolved configuration, the model configuration and the baselines), ``final/`` (the trained
model). Rerunning with the same name and ``resume`` continues from the latest checkpoint (Ray Train finds it
by the same run name and storage path) with the model configuration and baselines recorded in ``run.json``,
so a resumed run reads no sample again and keeps its label ids; ``resume.check_resume`` refuses flags that
differ from the recorded ones unless the run can apply them (``--max-steps`` raised, logging / cluster flags).

Failed starts: every check (flags, preset, paths, data listing, model config, resume conflicts) runs before
the run folder is created, and a fresh run that fails before its first checkpoint removes the folder it
created, so the corrected command is never refused for an existing name.

Before step 1 the driver only lists files and reads bounded samples (``TrainConfig.sample_rows``); Ray
workers get the storage variables (endpoint, credentials) through ``runtime_env`` (``storage.worker_env``).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import sys
import time
from dataclasses import dataclass
from typing import Any

from perceiver_core import HEADS, PerceiverConfig
from pipelines import storage
from pipelines.storage import Location
from pipelines.training import run_storage
from pipelines.training.checkpointing import latest_checkpoint
from pipelines.training.config import TrainConfig
from pipelines.training.loop import FINAL_MODEL_DIR, train_loop_per_worker
from pipelines.training.models import resolve_model
from pipelines.training.resume import check_resume
from pipelines.training.tasks import get_task

LOCAL_OBJECT_STORE_BYTES = 1 << 30  # a local Ray for training needs little shared memory
RUN_RECORD = "run.json"


@dataclass
class TrainResult:
    run_dir: str  # absolute local path or URI
    final_dir: str | None
    checkpoint_dir: str | None
    step: int
    start_step: int
    metrics: dict[str, Any]
    probe: list | None
    wall_time_s: float


@dataclass
class PreparedRun:
    """Everything the driver builds before step 1: the model to train and the lazy datasets."""

    head: type
    model_config: PerceiverConfig
    datasets: dict[str, Any]
    baselines: dict[str, float]


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
    # Ray Data read tasks, the Ray Train controller and the workers reach object storage with the driver's
    # endpoint and credentials
    env = storage.worker_env()
    extra = {"runtime_env": {"env_vars": env}} if env else {}
    if config.address:
        ray.init(address=config.address, **extra)
        problem = cluster_shortfall(config, ray.cluster_resources())
        if problem:
            print(f"WARNING: {problem}", file=sys.stderr, flush=True)
        return
    # Logical CPUs: the workers' share plus room for Ray Data's read/preprocess tasks (they would otherwise
    # wait for a CPU the training workers hold for the whole run).
    num_cpus = max(os.cpu_count() or 1, config.num_workers * config.cpus_per_worker + 2)
    # address="local": always a fresh in-process cluster, never one someone else started on this machine
    ray.init(address="local", num_cpus=num_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
             include_dashboard=False, log_to_driver=True, **extra)


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


def check_run_dir(config: TrainConfig) -> dict[str, Any] | None:
    """Refuse an existing name without ``resume``, a missing run with it, and a resume whose flags differ
    from ``run.json`` in a way the run cannot apply. Returns the run record of a resumed run."""
    run = config.run_location
    exists = run_storage.has_entries(run)
    if exists and not config.resume:
        raise FileExistsError(f"run directory {run.uri} exists; pass --resume to continue it or choose another "
                              f"--name")
    if config.resume and not exists:
        raise FileNotFoundError(f"--resume: no run at {run.uri}")
    record = read_run_record(run) if config.resume else None
    if record is not None:
        check_resume(TrainConfig.from_dict(record["train_config"]), config)
    return record


def read_run_record(run: Location) -> dict[str, Any] | None:
    record = run.join(RUN_RECORD)
    return json.loads(record.read_text()) if record.is_file() else None


def prepare_run(config: TrainConfig, saved: dict[str, Any] | None = None) -> PreparedRun:
    """The driver's work before step 1: model, lazy datasets, baselines. Reads only listings and bounded
    samples; a resumed run takes its model configuration and baselines from ``run.json`` (``saved``)."""
    task = get_task(config.task)
    if saved is None and config.resume:
        saved = read_run_record(config.run_location)
    if saved is not None:
        head, model_config = HEADS[saved["head"]], PerceiverConfig.from_dict(saved["model_config"])
    else:
        head, model_config = resolve_model(config, task)
    datasets = task.build_datasets(config, model_config)
    if config.cache_data:
        datasets = {name: ds.materialize() for name, ds in datasets.items()}
    baselines = saved["baselines"] if saved is not None else task.baselines(config, model_config, datasets)
    return PreparedRun(head, model_config, datasets, baselines)


def _storage(config: TrainConfig) -> dict[str, Any]:
    """``RunConfig`` storage arguments: the output folder as a path on its pyarrow filesystem (the endpoint of
    an S3-compatible store travels with the filesystem object)."""
    out = storage.resolve(config.output_dir)
    if out.is_local:
        return {"storage_path": out.path}
    return {"storage_path": out.path, "storage_filesystem": out.fs}


def fit(config: TrainConfig) -> TrainResult:
    start = time.time()
    saved = check_run_dir(config)
    fresh = not config.resume
    init_ray(config)
    prepared = prepare_run(config, saved)
    run = config.run_location
    try:
        write_run_record(config, prepared)
        result = run_trainer(config, prepared)
    except Exception:
        if fresh:
            discard_failed_start(run)
        raise
    return collect_result(config, result, start)


def write_run_record(config: TrainConfig, prepared: PreparedRun) -> None:
    """``run.json``: the configuration this attempt runs with (a resume's applied changes included), the
    model configuration and the baselines."""
    run = config.run_location
    if run.is_local:
        os.makedirs(run.path, exist_ok=True)
    record = {"train_config": config.to_dict(), "model_config": prepared.model_config.to_dict(),
              "head": prepared.head.__name__, "baselines": prepared.baselines}
    run_storage.write_text(run.join(RUN_RECORD), json.dumps(record, indent=2, default=str), staging_root=run)


def discard_failed_start(run: Location) -> None:
    """A fresh run that failed before its first checkpoint leaves nothing to resume: remove its folder (this
    call created it), so that the corrected command is not refused for an existing name."""
    if latest_checkpoint(run) is None and not run.join(FINAL_MODEL_DIR, "config.json").is_file():
        run_storage.delete_tree(run)


def run_trainer(config: TrainConfig, prepared: PreparedRun):
    """The ``TorchTrainer`` run: ``num_workers`` DDP workers (0 = local mode), checkpoints in the run folder."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    local_mode = config.num_workers == 0
    loop_config = {"train_config": config.to_dict(), "model_config": prepared.model_config.to_dict(),
                   "head": prepared.head.__name__, "baselines": prepared.baselines,
                   "has_val": "val" in prepared.datasets, "local_mode": local_mode}
    resources = {"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker=resources if not local_mode else None),
        run_config=RunConfig(name=config.name, **_storage(config),
                             checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=config.max_failures)),
        datasets=prepared.datasets,
        dataset_config=DataConfig(datasets_to_split=["train"] if "train" in prepared.datasets else []),
    )
    return trainer.fit()


def collect_result(config: TrainConfig, result, start: float) -> TrainResult:
    """The run's outcome; copies ``final/`` to ``export_dir`` when asked."""
    run = config.run_location
    value = result.return_value or {}
    final = run.join(FINAL_MODEL_DIR)  # (an evaluate-only run saves its --init-from model here)
    final_saved = final.join("config.json").is_file()
    if config.export_dir and final_saved:
        run_storage.copy_tree(final, storage.resolve(config.export_dir), last=("config.json",))
    if config.num_workers == 0:  # Ray Train's local mode keeps no checkpoints of its own: ours are in the run dir
        found = latest_checkpoint(run)
        checkpoint = found.uri if found is not None else None
    else:
        checkpoint = (run.join(posixpath.basename(result.checkpoint.path.rstrip("/"))).uri
                      if result.checkpoint is not None else None)
    return TrainResult(run_dir=run.uri, final_dir=final.uri if final_saved else None,
                       checkpoint_dir=checkpoint, step=int(value.get("step", 0)),
                       start_step=int(value.get("start_step", 0)), metrics=value.get("metrics", {}),
                       probe=value.get("probe"), wall_time_s=time.time() - start)
