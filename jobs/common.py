"""Flags every subcommand shares, parsed into ``CommonConfig``, and the steps every job takes in order.

Order matters: everything that can fail on bad input (output folder, inputs, labels file, model) is
checked before Ray starts, so mistakes cost seconds and leave nothing behind.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pipelines import storage
from pipelines.batch import ray_runtime
from pipelines.batch.model_workers import ModelSpec
from pipelines.batch.runner import Job, RunOptions, prepare_run, run_job
from pipelines.batch.summary import Summary

logger = logging.getLogger("perceiver_jobs")

MODELS_DIR = Path(__file__).resolve().parent / "models"


class UsageError(ValueError):
    """Bad flags or inputs, reported without a traceback."""


@dataclass(frozen=True)
class CommonConfig:
    inputs: list[str]
    output: str  # a local path (made absolute) or a URI
    model: ModelSpec
    batch_size: int
    num_workers: int | None
    num_gpus: int | None
    address: str | None
    limit: int | None
    cpus_per_worker: float
    read_cpus: float | None
    commit_interval_s: float
    actor_start_timeout_s: float
    progress: bool
    progress_interval_s: float = 30.0


def add_common_arguments(parser: argparse.ArgumentParser, default_model: str | None,
                         default_batch_size: int) -> None:
    g = parser.add_argument_group("common")
    g.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="input files, folders or globs (quote globs)")
    g.add_argument("--output", required=True,
                   help="output folder or URI (s3://bucket/prefix, gs://...): Parquet parts + summary")
    g.add_argument("--model", default=default_model,
                   help="transformers-format checkpoint directory or URI, a Hugging Face hub id "
                        "(e.g. deepmind/vision-perceiver-conv), or a preset name with --random-init")
    g.add_argument("--random-init", action="store_true", help="build --model (a preset) with random weights")
    g.add_argument("--tiny", action="store_true", help="with --random-init: the preset's tiny variant")
    g.add_argument("--bf16", action="store_true", help="run the model under bfloat16 autocast")
    g.add_argument("--batch-size", type=int, default=default_batch_size, help="model batch size (fixed)")
    g.add_argument("--num-workers", type=int, default=None,
                   help="model actors (default: one per GPU; on CPU as many as fit at --cpus-per-worker each)")
    g.add_argument("--num-gpus", type=int, default=None,
                   help="GPUs to use (default: all the cluster has; 0 = CPU only; more than the cluster has "
                        "is an error)")
    g.add_argument("--address", default=None, help="attach to this Ray cluster (default: start a local one)")
    g.add_argument("--s3-endpoint", default=None, metavar="URL",
                   help="S3-compatible endpoint (MinIO, Ceph, R2); the same as setting AWS_ENDPOINT_URL")
    g.add_argument("--limit", type=int, default=None, help="only the first N inputs (manifest order)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs reserved per model actor; its decoding runs on them (in a background thread on GPU)")
    g.add_argument("--read-cpus", type=float, default=None,
                   help="decoder threads per actor (default: --cpus-per-worker)")
    g.add_argument("--commit-interval", type=float, default=30.0, metavar="SECONDS",
                   help="how often the driver appends workers' commit reports to the commit log (parts are "
                        "committed by the workers as each shard finishes)")
    g.add_argument("--actor-start-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="fail when model actors cannot start within this time")
    g.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    g.add_argument("--progress-interval", type=float, default=30.0, metavar="SECONDS",
                   help="without a terminal (logs, CI): seconds between plain progress lines; on a terminal a "
                        "progress bar shows inputs done, rate and ETA")


def common_config(args: argparse.Namespace) -> CommonConfig:
    if args.model is None:
        raise UsageError("--model is required")
    if args.tiny and not args.random_init:
        raise UsageError("--tiny builds a preset; use it with --random-init")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if not args.progress_interval > 0:
        raise UsageError(f"--progress-interval must be > 0, got {args.progress_interval}")
    if args.s3_endpoint:
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint  # read by pipelines.storage, passed to the workers
    model = args.model
    if not args.random_init and not storage.is_uri(model) and not Path(model).exists() and \
            (MODELS_DIR / model).is_dir():
        model = str(MODELS_DIR / model)  # a name of a model shipped in jobs/models
    elif not args.random_init and not storage.is_uri(model) and Path(model).exists():
        model = os.path.abspath(model)  # workers on other nodes use the path as is
    try:
        inputs = [i if storage.is_uri(i) else os.path.abspath(i) for i in args.input]
        output = storage.resolve(args.output).uri
    except storage.StorageError as e:
        raise UsageError(str(e)) from e
    return CommonConfig(
        inputs=inputs, output=output, batch_size=args.batch_size,
        model=ModelSpec(model, random_init=args.random_init, tiny=args.tiny, bf16=args.bf16),
        num_workers=args.num_workers, num_gpus=args.num_gpus, address=args.address, limit=args.limit,
        cpus_per_worker=args.cpus_per_worker, read_cpus=args.read_cpus,
        commit_interval_s=args.commit_interval, actor_start_timeout_s=args.actor_start_timeout,
        progress=not args.no_progress, progress_interval_s=args.progress_interval)


def check_output(output: str) -> None:
    """Fail early when the output cannot be used: an unknown scheme, a file, an unwritable folder."""
    try:
        loc = storage.resolve(output)
    except storage.StorageError as e:
        raise UsageError(str(e)) from e
    if not loc.is_local:
        return  # object stores: the runner proves it by writing a probe
    path = Path(loc.path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output {path} exists and is not a folder")
    probe_parent = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(probe_parent, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(probe_parent).f_flag & os.ST_RDONLY)
        reason = "EROFS: read-only file system" if read_only else "no write permission"
        raise UsageError(f"output folder {path} is not writable ({reason} on {probe_parent})")


def execute(job: Job, config: CommonConfig, command: list[str] | None) -> Summary:
    """Plan (list inputs, write the manifest), start or attach to Ray only when shards are pending, run,
    report."""
    prepared = prepare_run(job, config.output)
    started = False
    try:
        plan = None
        if prepared.pending:
            import ray

            if config.address is None and not ray.is_initialized():
                ray_runtime.check_local_gpus(config.num_gpus)  # before paying for a Ray start
            started = ray_runtime.connect(config.address, env=storage.worker_env())
            ray_runtime.configure_data_context(config.actor_start_timeout_s)  # Ray Data's own bars off: ours
            if config.address is None:  # a local Ray only: no autoscaler sees the placeholder's demand
                ray_runtime.silence_actor_restart_warning()
            plan = ray_runtime.plan_compute(config.num_gpus, config.num_workers, config.cpus_per_worker)
        run = RunOptions(output=config.output, plan=plan, commit_interval_s=config.commit_interval_s,
                         progress_interval_s=config.progress_interval_s if config.progress else None)
        summary = run_job(job, run, command=command, prepared=prepared)
    finally:
        if started:
            import ray

            ray.shutdown()
    print(summary.table())
    print(f"output: {config.output}  (summary: {config.output.rstrip('/')}/_summary.json)")
    return summary
