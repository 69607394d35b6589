"""``train_loop_per_worker``: the function Ray Train runs on every worker (or in-process in local mode).

The loop is a sequence of named steps over three small records: ``Worker`` (what this worker knows for the
whole run: config, task, rank, device), ``Trainee`` (model, optimizer, schedule and ``TrainerState``: what a
checkpoint saves and a resume restores) and ``Session`` (both, plus the metrics log and the metric window
since the last report)::

    worker_context -> restore_or_build -> train (epoch_batches -> train_step -> report) -> finish
                                          report: train_metrics, log_train, evaluate, save_checkpoint

Per step (``train_step``): take a batch from this worker's shard of the Ray Dataset, let the task mask /
sample / augment it, run the DDP-wrapped ``TrainingModule`` under optional bf16 autocast, clip gradients, step
AdamW and the warm-up + cosine schedule. Every ``log_every`` steps (``report``) the train metric sums are
all-reduced and reported (all ranks report the same number of times: ``ray.train.report`` is a barrier); rank
0 also evaluates on the held-out split, prints the progress line and appends to ``metrics.csv``. Every
``checkpoint_every`` steps rank 0 writes a checkpoint into a temporary directory and hands it to
``ray.train.report``.

Resume: ``ray.train.get_checkpoint()`` (a restarted worker group, or a rerun with the same run name) gives the
latest *registered* checkpoint; model, optimizer, scheduler and step count continue from it. The data stream
restarts at a fresh pass (a new shuffle), which is the only thing an uninterrupted run would do differently.

The run directory may be on object storage (``config.run_location``): Ray Train uploads the reported
checkpoints there itself; rank 0 writes ``metrics.csv`` (``MetricsCSV.flush`` with every checkpoint and
evaluation), ``final/`` and, in local mode, the checkpoints through ``pipelines.storage``.

The steps are module-level functions looked up at call time, so a test can wrap one (e.g. kill the worker
inside ``write_checkpoint``) in the worker process; see tests/training/_faults.py.
"""

from __future__ import annotations

import logging
import posixpath
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from perceiver_core import HEADS, PerceiverConfig
from pipelines.storage import Location
from pipelines.training import run_storage
from pipelines.training.checkpointing import (
    TrainerState,
    checkpoint_name,
    latest_checkpoint,
    persist_local,
    restore,
    save_model_atomically,
    write_checkpoint,
)
from pipelines.training.config import TrainConfig
from pipelines.training.models import build_model
from pipelines.training.optim import build_optimizer, build_scheduler
from pipelines.training.reporting import MetricsCSV, add_stats, all_reduce_stats, emit, progress_line
from pipelines.training.tasks import Task, TaskCollate, TrainingModule, get_task

FINAL_MODEL_DIR = "final"
METRICS_CSV = "metrics.csv"


@dataclass
class Worker:
    """What one worker knows for the whole run, built once from the loop config the driver sends."""

    config: TrainConfig
    model_config: PerceiverConfig
    head: type
    task: Task
    run: Location
    rank: int
    world: int
    device: torch.device
    local_mode: bool
    baselines: dict[str, float]
    has_val: bool

    @property
    def chief(self) -> bool:
        """Rank 0: evaluates, logs, checkpoints and saves the final model."""
        return self.rank == 0


@dataclass
class Trainee:
    """The model being trained and what continues across a resume (a checkpoint holds all but ``module``)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainerState
    start_step: int  # the step this attempt started from
    module: torch.nn.Module | None = None  # the (DDP-wrapped) TrainingModule that the steps call


@dataclass
class Window:
    """Train metric sums since the last report, and the samples and time they took (for samples/s)."""

    stats: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    started: float = field(default_factory=time.time)


@dataclass
class Session:
    worker: Worker
    trainee: Trainee
    log: MetricsCSV | None  # rank 0 only
    val_shard: Any  # rank 0's held-out dataset (None without one)
    window: Window = field(default_factory=Window)
    started: float = field(default_factory=time.time)


class Due(NamedTuple):
    """What a step's report does: log train metrics, evaluate, checkpoint."""

    log: bool
    eval: bool
    checkpoint: bool


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train

    for name in ("ray.data", "ray.train"):  # keep worker output to our progress lines
        logging.getLogger(name).setLevel(logging.WARNING)
    worker = worker_context(loop_config)
    trainee = restore_or_build(worker)
    trainee.module = wrap_for_ddp(worker, trainee.model)
    log = MetricsCSV(worker.run.join(METRICS_CSV), worker.task.metric_names(worker.config) + ["grad_norm"],
                     trainee.state.attempt) if worker.chief else None
    val_shard = ray.train.get_dataset_shard("val") if worker.has_val else None
    session = Session(worker, trainee, log, val_shard)
    if worker.config.max_steps == 0:
        evaluate_only(session)
    else:
        train(session, ray.train.get_dataset_shard("train"))
    return finish(session)


# ---------------------------------------------------------------------------------------------- set-up
def worker_context(loop_config: dict[str, Any]) -> Worker:
    import ray.train

    config = TrainConfig.from_dict(loop_config["train_config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config.cpus_per_worker)
    local_mode = loop_config["local_mode"]
    if local_mode or world == 1 and not config.use_gpu:
        device = torch.device("cuda" if config.use_gpu and torch.cuda.is_available() else "cpu")
    else:
        device = ray.train.torch.get_device()
    return Worker(config=config, model_config=PerceiverConfig.from_dict(loop_config["model_config"]),
                  head=HEADS[loop_config["head"]], task=get_task(config.task), run=config.run_location, rank=rank,
                  world=world, device=device, local_mode=local_mode, baselines=loop_config.get("baselines", {}),
                  has_val=bool(loop_config.get("has_val")))


def new_optimizer(worker: Worker, model: torch.nn.Module) -> torch.optim.Optimizer:
    c = worker.config
    return build_optimizer(model, c.lr, c.weight_decay, worker.task.param_lr_multipliers(worker.model_config))


def new_scheduler(worker: Worker, optimizer: torch.optim.Optimizer) -> Any:
    c = worker.config
    return build_scheduler(optimizer, c.warmup_steps, c.max_steps, c.min_lr_ratio)


def restore_or_build(worker: Worker) -> Trainee:
    """The checkpoint Ray Train registered, else (``--resume``) the newest complete one in the run directory,
    else a fresh (or ``--init-from``) model with a new optimizer and schedule. Counts this attempt."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    # Local mode registers no checkpoint, and a worker killed right after a checkpoint upload can die before
    # Ray Train's controller registered it (the upload itself is complete: see checkpointing.is_complete).
    resume_from = latest_checkpoint(worker.run) if checkpoint is None and worker.config.resume else None
    if checkpoint is not None:
        trainee = restore_from(worker, checkpoint.as_directory(), posixpath.basename(checkpoint.path.rstrip("/")))
    elif resume_from is not None:  # (a download into a temporary directory when it is on object storage)
        trainee = restore_from(worker, run_storage.local_copy(resume_from), resume_from.name)
    else:
        model = build_model(worker.config, worker.head, worker.model_config, worker.task).to(worker.device)
        optimizer = new_optimizer(worker, model)
        trainee = Trainee(model, optimizer, new_scheduler(worker, optimizer), TrainerState(), start_step=0)
    trainee.state.attempt += 1
    return trainee


def restore_from(worker: Worker, source, name: str) -> Trainee:
    """Model, optimizer, schedule and state from a checkpoint folder (``source``: a context giving its path)."""
    with source as directory:
        model, optimizer, scheduler, state = restore(
            directory, worker.head, worker.device, lambda m: new_optimizer(worker, m),
            lambda o: new_scheduler(worker, o))
    if worker.config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if worker.chief:
        emit(f"[{worker.task.name}] resumed from {name} at step {state.step}")
    return Trainee(model, optimizer, scheduler, state, start_step=state.step)


def wrap_for_ddp(worker: Worker, model: torch.nn.Module) -> torch.nn.Module:
    import ray.train.torch

    module: torch.nn.Module = TrainingModule(model, worker.task, worker.config)
    if worker.world > 1:
        module = ray.train.torch.prepare_model(
            module, parallel_strategy_kwargs={"find_unused_parameters": worker.task.find_unused_parameters})
    return module


# ---------------------------------------------------------------------------------------------- training
def train(session: Session, shard: Any) -> None:
    """Epochs over this worker's shard until ``max_steps``, reporting after every step that is due."""
    config, state = session.worker.config, session.trainee.state
    while state.step < config.max_steps:
        batches = 0
        for batch in epoch_batches(session.worker, shard, state.epoch):
            train_step(session, batch)
            batches += 1
            report(session, final=state.step >= config.max_steps)
            if state.step >= config.max_steps:
                break
        if batches == 0:
            raise RuntimeError(f"the training data gave no full batch of {config.batch_size} per worker; use more "
                               f"data, a smaller --batch-size or fewer workers")
        state.epoch += 1


def epoch_batches(worker: Worker, shard: Any, epoch: int):
    """One pass over the shard in full batches, shuffled locally with a seed per (epoch, rank)."""
    c = worker.config
    return shard.iter_torch_batches(
        batch_size=c.batch_size, collate_fn=TaskCollate(worker.task), drop_last=True,
        local_shuffle_buffer_size=min(1024, 16 * c.batch_size), local_shuffle_seed=c.seed + 1000 * epoch + worker.rank)


def train_step(session: Session, batch: dict[str, Any]) -> None:
    """One optimizer step on one batch; its metric sums go into the session's window."""
    worker, t = session.worker, session.trainee
    c = worker.config
    rng = np.random.default_rng([c.seed, worker.rank, t.state.step])
    batch = worker.task.prepare_batch(batch, rng, c, worker.model_config, train=True, device=worker.device)
    with torch.autocast(device_type=worker.device.type, dtype=torch.bfloat16, enabled=c.precision == "bf16"):
        out = t.module(batch)
    t.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(t.module.parameters(), c.grad_clip) if c.grad_clip \
        else _grad_norm(t.module)
    t.optimizer.step()
    t.scheduler.step()
    t.state.step += 1
    t.state.samples += c.batch_size * worker.world
    session.window.samples += c.batch_size
    add_stats(session.window.stats, {**out.stats, "grad_norm_sum": float(grad_norm), "steps": 1.0})


def due(config: TrainConfig, step: int, final: bool, has_val: bool) -> Due:
    return Due(log=final or step % config.log_every == 0,
               eval=has_val and (final or bool(config.eval_every and step % config.eval_every == 0)),
               checkpoint=final or bool(config.checkpoint_every and step % config.checkpoint_every == 0))


def report(session: Session, final: bool) -> None:
    """After a step: when anything is due, pool the window across workers (a collective on every rank), log,
    evaluate, report to Ray Train (with a checkpoint when due) and start a new window."""
    worker, state = session.worker, session.trainee.state
    now = due(worker.config, state.step, final, session.val_shard is not None)
    if not any(now):
        return
    train_summary, speed = train_metrics(session)
    lr = session.trainee.scheduler.get_last_lr()[0]
    metrics: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "lr": lr,
                               **{f"train_{k}": v for k, v in train_summary.items()}}
    if worker.chief:
        log_train(session, train_summary, lr, speed)
        if now.eval:
            metrics.update({f"eval_{k}": v for k, v in evaluate(session).items()})
    state.metrics = metrics
    if now.checkpoint:
        save_checkpoint(session, metrics)
    else:
        import ray.train

        ray.train.report(metrics)
    session.window = Window()


def train_metrics(session: Session) -> tuple[dict[str, float], float | None]:
    """The window's train summary pooled over every worker, and the samples per second of all workers."""
    worker, window = session.worker, session.window
    pooled = all_reduce_stats(window.stats)  # every rank, every report: a collective
    elapsed = time.time() - window.started
    speed = window.samples * worker.world / elapsed if elapsed > 0 else None
    summary = worker.task.summarize({k: v for k, v in pooled.items() if k != "grad_norm_sum"})
    if pooled.get("steps"):
        summary["grad_norm"] = pooled.get("grad_norm_sum", 0.0) / pooled["steps"]
    summary.pop("steps", None)
    return summary, speed


def log_train(session: Session, summary: dict[str, float], lr: float, speed: float | None) -> None:
    """Rank 0: the progress line and a metrics.csv row."""
    config, t = session.worker.config, session.trainee
    step = t.state.step
    eta = (config.max_steps - step) * (time.time() - session.started) / max(step - t.start_step, 1)
    emit(progress_line(session.worker.task.name, step, config.max_steps, summary, lr, speed, eta))
    session.log.write(step, t.state.epoch, "train", summary, lr, speed)


def evaluate(session: Session) -> dict[str, float]:
    """Rank 0: held-out metrics (the same masks / sampled points at every evaluation), printed and logged."""
    worker, t = session.worker, session.trainee
    c = worker.config
    t.model.eval()
    rng = np.random.default_rng([c.seed, 7919])
    sums = worker.task.evaluate(t.model, session.val_shard, c, worker.model_config, worker.device, rng)
    evaluation = {**worker.task.summarize(sums), **worker.baselines}
    t.model.train()
    emit(progress_line(worker.task.name, t.state.step, max(c.max_steps, 1), evaluation, split="eval"))
    session.log.write(t.state.step, t.state.epoch, "eval", evaluation)
    session.log.flush()
    return evaluation


def evaluate_only(session: Session) -> None:
    """``--max-steps 0``: one evaluation of the ``--init-from`` model; no training metrics, no checkpoint."""
    import ray.train

    evaluation = evaluate(session) if session.worker.chief else {}
    session.trainee.state.metrics = {"step": 0, **{f"eval_{k}": v for k, v in evaluation.items()}}
    ray.train.report(session.trainee.state.metrics)


def save_checkpoint(session: Session, metrics: dict[str, Any]) -> None:
    """Rank 0 writes a checkpoint into a temporary folder (and, in local mode, persists it in the run folder);
    every rank reports, rank 0 with the checkpoint, which Ray Train registers once copied completely."""
    import ray.train
    from ray.train import Checkpoint

    worker = session.worker
    tmp = Path(tempfile.mkdtemp(prefix="perceiver-ckpt-")) if worker.chief else None
    try:
        if tmp is not None:
            write_checkpoint_folder(session, tmp)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(tmp)) if tmp is not None else None,
                         checkpoint_dir_name=checkpoint_name(session.trainee.state.step))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_checkpoint_folder(session: Session, directory: Path) -> None:
    worker, t = session.worker, session.trainee
    session.log.flush()  # the log holds every row up to this checkpoint before it exists
    write_checkpoint(directory, t.model, t.optimizer, t.scheduler, t.state)
    worker.task.save_extras(directory, worker.config, worker.model_config)
    if worker.local_mode:  # Ray Train's local mode does not persist reported checkpoints
        persist_local(directory, worker.run, t.state.step, worker.config.keep_checkpoints)


# ---------------------------------------------------------------------------------------------- the end
def finish(session: Session) -> dict[str, Any] | None:
    """Rank 0: the final model into ``final/`` and the run's summary (with a probe of the model's outputs)."""
    worker, t = session.worker, session.trainee
    if not worker.chief:
        return None
    session.log.flush()
    t.model.eval()
    final_dir = save_model_atomically(t.model, worker.run.join(FINAL_MODEL_DIR),
                                      extras=lambda d: worker.task.save_extras(d, worker.config, worker.model_config))
    with torch.inference_mode():
        probe = worker.task.probe(t.model, worker.model_config).float().cpu()
    return {"step": t.state.step, "start_step": t.start_step, "attempt": t.state.attempt, "epoch": t.state.epoch,
            "metrics": t.state.metrics, "final_dir": final_dir.uri, "probe": probe.tolist()}


def _grad_norm(module: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
