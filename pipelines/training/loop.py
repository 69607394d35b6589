"""``train_loop_per_worker``: the function Ray Train runs on every worker (or in-process in local mode).

Per step: take a batch from this worker's shard of the Ray Dataset, let the task mask / sample / augment it,
run the DDP-wrapped ``TrainingModule`` under optional bf16 autocast, clip gradients, step AdamW and the
warm-up + cosine schedule. Every ``log_every`` steps the train metric sums are all-reduced and reported (all
ranks report the same number of times: ``ray.train.report`` is a barrier); rank 0 also evaluates on the
held-out split, prints the progress line and appends to ``metrics.csv``. Every ``checkpoint_every`` steps rank
0 writes a checkpoint into a temporary directory and hands it to ``ray.train.report``.

Resume: ``ray.train.get_checkpoint()`` (a restarted worker group, or a rerun with the same run name) gives the
latest *registered* checkpoint; model, optimizer, scheduler and step count continue from it. The data stream
restarts at a fresh pass (a new shuffle), which is the only thing an uninterrupted run would do differently.

The run directory may be on object storage (``config.run_location``): Ray Train uploads the reported
checkpoints there itself; rank 0 writes ``metrics.csv`` (``MetricsCSV.flush`` with every checkpoint and
evaluation), ``final/`` and, in local mode, the checkpoints through ``pipelines.storage``.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perceiver_core import HEADS, PerceiverConfig
from pipelines import storage
from pipelines.storage import Location

from . import run_storage
from .checkpointing import (
    TrainerState,
    checkpoint_name,
    latest_checkpoint,
    persist_local,
    restore,
    save_model_atomically,
    write_checkpoint,
)
from .config import TrainConfig
from .metrics import MetricsCSV, add_stats, all_reduce_stats, emit, progress_line
from .models import build_model
from .optim import build_optimizer, build_scheduler
from .tasks import TaskCollate, TrainingModule, get_task

FINAL_MODEL_DIR = "final"
METRICS_CSV = "metrics.csv"


def _fault(config: TrainConfig, step: int, rank: int, run: Location, at_checkpoint: bool) -> bool:
    """Fault injection for tests: rank 0 fails once (a marker file remembers it) at ``fail_at_step``."""
    if config.fail_at_step != step or rank != 0 or (config.fail_mode == "during-checkpoint") != at_checkpoint:
        return False
    marker = run.join(f".fault-injected-step-{step}")
    if marker.exists():
        return False
    storage.write_atomic(marker, b"", staging_root=run)
    emit(f"[fault injection] failing at step {step} ({config.fail_mode})")
    if config.fail_mode == "exit":
        os._exit(13)
    if config.fail_mode == "raise":
        raise RuntimeError(f"injected failure at step {step}")
    return True  # during-checkpoint: the caller dies half-way through writing


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train
    from ray.train import Checkpoint

    for name in ("ray.data", "ray.train"):  # keep worker output to our progress lines
        logging.getLogger(name).setLevel(logging.WARNING)
    config = TrainConfig.from_dict(loop_config["train_config"])
    model_config = PerceiverConfig.from_dict(loop_config["model_config"])
    head = HEADS[loop_config["head"]]
    local_mode = loop_config["local_mode"]
    baselines: dict[str, float] = loop_config.get("baselines", {})
    task = get_task(config.task)
    run = config.run_location
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config.cpus_per_worker)
    if local_mode or world == 1 and not config.use_gpu:
        device = torch.device("cuda" if config.use_gpu and torch.cuda.is_available() else "cpu")
    else:
        device = ray.train.torch.get_device()

    def new_optimizer(model):
        return build_optimizer(model, config.lr, config.weight_decay, task.param_lr_multipliers(model_config))

    def new_scheduler(optimizer):
        return build_scheduler(optimizer, config.warmup_steps, config.max_steps, config.min_lr_ratio)

    # ------------------------------------------------------------------ model, optimizer, resume
    checkpoint = ray.train.get_checkpoint()
    # Without a checkpoint registered by Ray Train, a resumed run starts from the newest complete one in the
    # run directory: local mode registers none, and a worker killed right after a checkpoint upload can die
    # before Ray Train's controller has registered it (the upload itself is complete: see is_complete).
    resume_from = latest_checkpoint(run) if checkpoint is None and config.resume else None
    if checkpoint is not None or resume_from is not None:
        # (a download into a temporary directory when the checkpoint is on object storage)
        source = checkpoint.as_directory() if checkpoint is not None else run_storage.local_copy(resume_from)
        with source as d:
            model, optimizer, scheduler, state = restore(d, head, device, new_optimizer, new_scheduler)
            if config.gradient_checkpointing:
                model.gradient_checkpointing_enable()
        if rank == 0:
            name = resume_from.name if resume_from is not None else posixpath.basename(checkpoint.path.rstrip("/"))
            emit(f"[{task.name}] resumed from {name} at step {state.step}")
    else:
        model = build_model(config, head, model_config, task).to(device)
        optimizer, state = new_optimizer(model), TrainerState()
        scheduler = new_scheduler(optimizer)
    state.attempt += 1
    start_step = state.step

    module: torch.nn.Module = TrainingModule(model, task, config)
    if world > 1:
        module = ray.train.torch.prepare_model(
            module, parallel_strategy_kwargs={"find_unused_parameters": task.find_unused_parameters})
    train_shard = ray.train.get_dataset_shard("train") if config.max_steps else None
    val_shard = ray.train.get_dataset_shard("val") if loop_config.get("has_val") else None
    csv_log = MetricsCSV(run.join(METRICS_CSV), task.metric_names(config) + ["grad_norm"], state.attempt) \
        if rank == 0 else None
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    window: dict[str, float] = {}
    window_start, window_samples, run_start = time.time(), 0, time.time()

    def evaluate() -> dict[str, float]:
        """Rank 0: held-out metrics (the same masks / sampled points at every evaluation), printed and logged."""
        model.eval()
        rng = np.random.default_rng([config.seed, 7919])
        evaluation = {**task.summarize(task.evaluate(model, val_shard, config, model_config, device, rng)),
                      **baselines}
        model.train()
        emit(progress_line(task.name, state.step, max(config.max_steps, 1), evaluation, split="eval"))
        csv_log.write(state.step, state.epoch, "eval", evaluation)
        csv_log.flush()
        return evaluation

    def report(final: bool) -> None:
        nonlocal window, window_start, window_samples
        step = state.step
        if config.max_steps == 0:  # evaluate-only: no training metrics, no checkpoint
            evaluation = evaluate() if rank == 0 else {}
            state.metrics = {"step": 0, **{f"eval_{k}": v for k, v in evaluation.items()}}
            ray.train.report(state.metrics)
            return
        log_now = final or step % config.log_every == 0
        eval_now = val_shard is not None and (final or (config.eval_every and step % config.eval_every == 0))
        ckpt_now = final or (config.checkpoint_every and step % config.checkpoint_every == 0)
        if not (log_now or eval_now or ckpt_now):
            return
        pooled = all_reduce_stats(window)  # every rank, every report: a collective
        elapsed = time.time() - window_start
        speed = window_samples * world / elapsed if elapsed > 0 else None
        lr = scheduler.get_last_lr()[0]
        train = task.summarize({k: v for k, v in pooled.items() if k != "grad_norm_sum"})
        if pooled.get("steps"):
            train["grad_norm"] = pooled.get("grad_norm_sum", 0.0) / pooled["steps"]
        train.pop("steps", None)
        metrics: dict[str, Any] = {"step": step, "epoch": state.epoch, "lr": lr,
                                   **{f"train_{k}": v for k, v in train.items()}}
        if rank == 0:
            eta = (config.max_steps - step) * (time.time() - run_start) / max(step - start_step, 1)
            emit(progress_line(task.name, step, config.max_steps, train, lr, speed, eta))
            csv_log.write(step, state.epoch, "train", train, lr, speed)
            if eval_now:
                metrics.update({f"eval_{k}": v for k, v in evaluate().items()})
        state.metrics = metrics
        if ckpt_now:
            tmp = Path(tempfile.mkdtemp(prefix="perceiver-ckpt-")) if rank == 0 else None
            try:
                if rank == 0:
                    csv_log.flush()  # the log holds every row up to this checkpoint before it exists
                    write_checkpoint(tmp, model, optimizer, scheduler, state,
                                     fail_midway=_fault(config, step, rank, run, at_checkpoint=True))
                    task.save_extras(tmp, model_config)
                    if local_mode:  # Ray Train's local mode does not persist reported checkpoints
                        persist_local(tmp, run, step, config.keep_checkpoints)
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(str(tmp)) if rank == 0 else None,
                                 checkpoint_dir_name=checkpoint_name(step))
            finally:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
        else:
            ray.train.report(metrics)
        window, window_start, window_samples = {}, time.time(), 0

    # ------------------------------------------------------------------ steps
    if config.max_steps == 0:
        report(final=True)
    shuffle_buffer = min(1024, 16 * config.batch_size)
    while state.step < config.max_steps:
        batches = 0
        for batch in train_shard.iter_torch_batches(
                batch_size=config.batch_size, collate_fn=TaskCollate(task), drop_last=True,
                local_shuffle_buffer_size=shuffle_buffer, local_shuffle_seed=config.seed + 1000 * state.epoch + rank):
            rng = np.random.default_rng([config.seed, rank, state.step])
            batch = task.prepare_batch(batch, rng, config, model_config, train=True, device=device)
            with autocast:
                out = module(batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = (torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
                         if config.grad_clip else _grad_norm(module))
            optimizer.step()
            scheduler.step()
            state.step += 1
            state.samples += config.batch_size * world
            batches += 1
            window_samples += config.batch_size
            add_stats(window, {**out.stats, "grad_norm_sum": float(grad_norm), "steps": 1.0})
            _fault(config, state.step, rank, run, at_checkpoint=False)
            report(final=state.step >= config.max_steps)
            if state.step >= config.max_steps:
                break
        if batches == 0:
            raise RuntimeError(f"the training data gave no full batch of {config.batch_size} per worker; use more "
                               f"data, a smaller --batch-size or fewer workers")
        state.epoch += 1

    # ------------------------------------------------------------------ final model
    if rank != 0:
        return None
    csv_log.flush()
    model.eval()
    final_dir = save_model_atomically(model, run.join(FINAL_MODEL_DIR),
                                      extras=lambda d: task.save_extras(d, model_config))
    with torch.inference_mode():
        probe = task.probe(model, model_config).float().cpu()
    return {"step": state.step, "start_step": start_step, "attempt": state.attempt, "epoch": state.epoch,
            "metrics": state.metrics, "final_dir": final_dir.uri, "probe": probe.tolist()}


def _grad_norm(module: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().norm() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
