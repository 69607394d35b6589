"""Run one batch job: manifest -> CPU read/decode stage -> model actor pool -> exactly-once Parquet sink.

Everything that can be checked is checked before Ray does any work (the caller has already built the
manifest and loaded the model once); then::

    pending manifest rows  (committed units of earlier runs removed: that is the resume)
      -> ray.data.from_items, a few rows per block (so decode work spreads over workers)
      -> map_batches(read stage, CPU tasks, generator)
      -> map_batches(model worker, ActorPoolStrategy(size=pool), fixed batch size)
      -> iter_batches on the driver -> ParquetSink (whole units, atomic part files)
    -> summary (read back from the Parquet) -> _summary.json -> _SUCCESS (last)

Model actors use Ray Data's defaults ``max_restarts=-1`` and ``max_task_retries=-1``: a killed actor is
replaced and its batches are retried; the sink drops the rows it has already seen.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from . import schemas
from .model_workers import ModelSpec, ModelWorker
from .ray_runtime import ComputePlan
from .sink import SUCCESS, ParquetSink, check_schema, part_files, read_column
from .summary import Summary, summarize

logger = logging.getLogger(__name__)

JOB_FILE = "_job.json"
MANIFEST_FILE = "_manifest.parquet"


class OutputError(RuntimeError):
    """The output folder cannot be used (not writable, or holds another job's output)."""


@dataclass
class Job:
    """What to run. ``manifest`` has one row per input with a unique ``id`` (the unit of resume)."""

    name: str
    schema: pa.Schema  # the output schema
    manifest: pa.Table
    read_fn: Callable[..., Any]  # map_batches generator over manifest rows
    read_kwargs: dict[str, Any]
    worker_cls: type[ModelWorker]
    worker_kwargs: dict[str, Any]
    model: ModelSpec
    batch_size: int
    rows_per_read_task: int = 1  # manifest rows per read task (1 for videos: one file per task)
    read_cpus: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  # recorded in _job.json, compared on rerun


@dataclass
class RunOptions:
    output_dir: Path
    plan: ComputePlan | None
    commit_interval_s: float = 60.0
    rows_per_file: int = 50_000
    max_concurrent_calls: int | None = None


def prepare_output(output_dir: Path, job_name: str, options: dict[str, Any], schema: pa.Schema) -> None:
    """Create the folder, prove it is writable, and refuse a folder holding another job's output."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"output folder {output_dir} is not writable: {e}") from e
    job_file = output_dir / JOB_FILE
    if job_file.is_file():
        recorded = json.loads(job_file.read_text())
        if recorded.get("job") != job_name or recorded.get("options") != _jsonable(options):
            raise OutputError(f"{output_dir} holds output of another run ({recorded.get('job')} with options "
                              f"{recorded.get('options')}); rerun with the same options to resume, or choose "
                              "another --output")
    elif part_files(output_dir):
        raise OutputError(f"{output_dir} holds Parquet parts but no {JOB_FILE}; choose another --output")
    try:
        check_schema(output_dir, schema)
    except ValueError as e:
        raise OutputError(str(e)) from e


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


MANIFEST_COLUMNS = ("id", "kind", "path", "path2", "relpath", "position", "row_index", "layout", "label_index")


def _write_manifest(path: Path, manifest: pa.Table) -> None:
    """The ids and sources of this run's inputs (not their content), for reconciliation by users."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(manifest.select([c for c in MANIFEST_COLUMNS if c in manifest.column_names]), tmp,
                   compression="zstd")
    os.replace(tmp, path)


def pending_manifest(manifest: pa.Table, done: set[str]) -> pa.Table:
    if not done:
        return manifest
    keep = [unit not in done for unit in manifest.column("id").to_pylist()]
    return manifest.filter(pa.array(keep, pa.bool_()))


def build_dataset(job: Job, pending: pa.Table, run: RunOptions):
    """The lazy Ray Data plan for the pending manifest rows."""
    import ray
    from ray.data import ActorPoolStrategy

    plan = run.plan
    # Small jobs: smaller blocks, so that every model actor gets work.
    rows_per_block = max(1, min(job.rows_per_read_task, -(-pending.num_rows // plan.pool_size)))
    # Blocks of ``rows_per_block`` manifest rows, built on the driver. Not ``repartition``: that is a Ray
    # task needing a CPU, which never runs on a small machine whose CPUs all hold model actors. Not
    # ``from_arrow``: it computes block metadata in remote tasks. Read stages take plain values.
    ds = ray.data.from_items(pending.to_pylist(), override_num_blocks=-(-pending.num_rows // rows_per_block))
    ds = ds.map_batches(job.read_fn, batch_size=rows_per_block, batch_format="pyarrow", num_cpus=job.read_cpus,
                        fn_kwargs=job.read_kwargs)
    compute = ActorPoolStrategy(size=plan.pool_size, max_concurrent_calls_per_actor=run.max_concurrent_calls)
    return ds.map_batches(
        job.worker_cls, batch_size=job.batch_size, batch_format="pyarrow", compute=compute,
        num_cpus=plan.num_cpus_per_worker, num_gpus=plan.num_gpus_per_worker,
        fn_constructor_kwargs={"spec": job.model, "device": plan.device, "torch_threads": plan.torch_threads,
                               **job.worker_kwargs})


def prepare_run(job: Job, output_dir: Path) -> tuple[pa.Table, set[str]]:
    """Check the output folder and work out what is left: (pending manifest rows, committed units)."""
    prepare_output(output_dir, job.name, job.options, job.schema)
    done = set(read_column(output_dir, schemas.unit_column(job.schema)))
    return pending_manifest(job.manifest, done), done


def run_job(job: Job, run: RunOptions, command: list[str] | None = None) -> Summary:
    """Run (or resume) ``job`` into ``run.output_dir``; returns the summary that was saved beside it.

    Ray must be initialised when anything is pending (``prepare_run`` tells); ``run.plan`` may be None
    when nothing is.
    """
    out = run.output_dir
    pending, done = prepare_run(job, out)
    (out / SUCCESS).unlink(missing_ok=True)  # the folder is about to change
    _atomic_write(out / JOB_FILE, json.dumps({"job": job.name, "options": _jsonable(job.options)},
                                             indent=2).encode())
    _write_manifest(out / MANIFEST_FILE, job.manifest)

    started = time.time()
    sink = ParquetSink(out, job.schema, committed_units=done, commit_interval_s=run.commit_interval_s,
                       rows_per_file=run.rows_per_file)
    stats_text = ""
    compute = run.plan.describe() if run.plan else "nothing to do"
    logger.info("%s: %d of %d inputs to do (%d done before); %s", job.name, pending.num_rows,
                job.manifest.num_rows, job.manifest.num_rows - pending.num_rows, compute)
    if pending.num_rows:
        if run.plan is None:
            raise ValueError("inputs are pending but no compute plan was given")
        ds = build_dataset(job, pending, run)
        try:
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                sink.add(block)
        finally:
            sink.close()  # whatever is complete is committed, even when the job fails
        stats_text = ds.stats()
    wall = time.time() - started
    if sink.pending_units:
        raise RuntimeError(f"{sink.pending_units} input(s) never received their last output row; "
                           "rerun the same command to finish them")
    summary = summarize(out, job.name, job.schema, job.manifest, processed_units=pending.num_rows,
                        wall_time_s=wall, sink_stats=sink.stats, command=command, compute=compute,
                        model=job.model.describe())
    summary.save(out / "_summary.json")
    if stats_text:
        _atomic_write(out / "_ray_stats.txt", stats_text.encode())
    if not summary.complete:
        raise RuntimeError(f"output is incomplete: {summary.counts}; rerun the same command to finish")
    _atomic_write(out / SUCCESS, b"")
    return summary
