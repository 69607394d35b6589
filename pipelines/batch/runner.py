"""Run one batch job: the driver plans and keeps the books, Ray workers read, infer and write.

    first run:  list the inputs (streamed) -> _meta/manifest/*.parquet -> _meta/job.json (written last)
    every run:  pending shards = all shards - committed parts (one listing of the output folder)
      -> ray.data.from_items([{"shard": k}, ...])        shard numbers only, never rows
      -> map_batches(ShardWorker, ActorPoolStrategy)     read + model + write part-<k>.parquet (whole)
      -> the driver receives one (shard, part, stats) row per shard -> _meta/commits/ (commit log)
    -> summary merged from the shards' stats -> _summary.json -> _SUCCESS (last, only when complete)

While the job runs, the rows the driver receives drive ``pipelines.batch.progress`` (a bar on a terminal,
a plain line every ``RunOptions.progress_interval_s`` elsewhere).

``pipelines.batch.sink`` explains why every input ends up in the output exactly once, after kills, retries,
lost nodes and two jobs on one folder. Model actors use Ray Data's defaults (``max_restarts=-1``,
``max_task_retries=-1``): a killed actor is replaced and its shards retried.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipelines import storage
from pipelines.batch import progress, schemas, sink, work_plan
from pipelines.batch.model_workers import ModelSpec, ModelWorker
from pipelines.batch.ray_runtime import ComputePlan
from pipelines.batch.shard_worker import ShardJob, ShardWorker
from pipelines.batch.summary import Summary, summarize

logger = logging.getLogger(__name__)

JOB_FILE = "_meta/job.json"
SUMMARY_FILE = "_summary.json"
SUCCESS = "_SUCCESS"
STATS_FILE = "_meta/ray_stats.txt"
LAYOUT_VERSION = 2
OLD_LAYOUT = ("_job.json", "_manifest.parquet")


class OutputError(RuntimeError):
    """The output folder cannot be used (not writable, or holds another job's output)."""


@dataclass
class Job:
    """What to run. ``items()`` streams the manifest rows (``item_schema``), each with a unique ``id``."""

    name: str
    schema: pa.Schema  # the output schema
    items: Callable[[], Iterable[dict]]
    item_schema: pa.Schema
    read_fn: Callable[..., Any]  # manifest rows (a shard) -> tables of rows for the model worker
    read_kwargs: dict[str, Any]
    worker_cls: type[ModelWorker]
    worker_kwargs: dict[str, Any]
    model: ModelSpec
    batch_size: int
    max_shard_size: int = 64  # inputs per part file at most
    min_shard_size: int = 1  # inputs per shard at least (power of two above it); one model row per input: batch size
    items_are_inputs: bool = True
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # recorded in job.json, compared on rerun
    # Called once the manifest is written (first run): how the labels file matched the inputs
    # (``labels.LabelMapper.report``). Recorded in job.json, so every later run's summary shows it too.
    label_report: Callable[[], dict[str, Any]] | None = None


@dataclass
class RunOptions:
    output: str  # local path or URI
    plan: ComputePlan | None
    commit_interval_s: float = 30.0
    env: dict[str, str] = field(default_factory=dict)
    progress_interval_s: float | None = None  # None: no progress output (library use); the CLI passes 30 s
    progress_bar: bool | None = None  # None: a bar exactly when stderr is a terminal


@dataclass
class Prepared:
    out: storage.Location
    plan: work_plan.PlanInfo
    done: set[int]
    labels: dict[str, Any] = field(default_factory=dict)  # the job's label report (job.json), if any

    @property
    def pending(self) -> list[int]:
        return [k for k in range(self.plan.num_shards) if k not in self.done]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _read_job_file(out: storage.Location) -> dict | None:
    loc = out.join(JOB_FILE)
    try:
        return json.loads(loc.read_bytes())
    except FileNotFoundError:
        return None


def _peeked(items: Iterable[dict]) -> Iterable[dict]:
    """``items`` with its first element already taken: a missing or empty input fails here, before the
    output folder is created."""
    it = iter(items)
    first = next(it, None)
    if first is None:
        raise ValueError("no inputs found: the listing gave no items")
    return itertools.chain([first], it)


def prepare_run(job: Job, output: str) -> Prepared:
    """Check the output folder, write the manifest on a first run, and find the committed shards."""
    try:
        out = storage.resolve(output)
        items = None if out.join(JOB_FILE).exists() else _peeked(job.items())
        storage.check_writable(out)
    except (storage.StorageError, storage.OutputWriteError) as e:
        raise OutputError(str(e)) from e
    names = {name for name, _ in storage.list_names(out)}
    if names & set(OLD_LAYOUT):
        old = min(names & set(OLD_LAYOUT))
        raise OutputError(f"{out.uri} was written by an older perceiver-jobs (it has {old}); choose another --output")
    recorded = _read_job_file(out)
    options = _jsonable(job.options)
    if recorded is not None:
        if recorded.get("job") != job.name or recorded.get("options") != options:
            raise OutputError(f"{out.uri} holds output of another run ({recorded.get('job')} with options "
                              f"{recorded.get('options')}); rerun with the same inputs and options to resume, "
                              "or choose another --output")
        plan = work_plan.PlanInfo(**recorded["plan"])
        labels = recorded.get("labels") or {}
    else:
        if any(sink.PART_RE.match(n) for n in names):
            raise OutputError(f"{out.uri} holds Parquet parts but no {JOB_FILE}; choose another --output")
        listing = items if items is not None else job.items()
        if job.limit is not None:  # take exactly --limit items: the listing (and its label report) stops there
            listing = itertools.islice(listing, job.limit)
        plan = work_plan.write_manifest(out, listing, job.item_schema, job.max_shard_size, job.limit,
                                        min_shard_size=job.min_shard_size)
        labels = _jsonable(job.label_report()) if job.label_report is not None else {}
        body = {"layout": LAYOUT_VERSION, "job": job.name, "options": options, "plan": plan.to_dict(),
                "schema": schemas.describe(job.schema)}
        if labels:
            body["labels"] = labels
        storage.write_atomic(out.join(JOB_FILE), json.dumps(body, indent=2, default=str).encode(), out)
    return Prepared(out=out, plan=plan, done=sink.committed_shards(out), labels=labels)


def _num_blocks(pending: int, pool: int) -> int:
    # A block is one actor task (the unit Ray retries); more blocks balance better but cost the driver
    # ~1 ms and a few KB each (from_items).
    return max(1, min(pending, max(4 * pool, -(-pending // 16)), 20_000))


def shard_job(job: Job, prepared: Prepared) -> ShardJob:
    """What every ``ShardWorker`` of this run gets (the job's code and settings; no rows)."""
    return ShardJob(name=job.name, schema=job.schema, output_uri=prepared.out.uri, plan=prepared.plan,
                    read_fn=job.read_fn, read_kwargs=job.read_kwargs, worker_cls=job.worker_cls,
                    worker_kwargs=job.worker_kwargs, model=job.model, batch_size=job.batch_size,
                    items_are_inputs=job.items_are_inputs)


def build_dataset(job: Job, prepared: Prepared, run: RunOptions):
    """The lazy Ray Data plan over the pending shards."""
    import ray
    from ray.data import ActorPoolStrategy

    plan = run.plan
    pending = prepared.pending
    pool = max(1, min(plan.pool_size, len(pending)))  # an actor without a shard would only cost its start-up
    ds = ray.data.from_items([{"shard": k} for k in pending], override_num_blocks=_num_blocks(len(pending), pool))
    return ds.map_batches(
        ShardWorker, batch_size=1, batch_format="pyarrow", compute=ActorPoolStrategy(size=pool),
        num_cpus=plan.num_cpus_per_worker, num_gpus=plan.num_gpus_per_worker,
        fn_constructor_kwargs={"job": shard_job(job, prepared), "device": plan.device,
                               "torch_threads": plan.torch_threads})


def _progress(job: Job, prepared: Prepared, run: RunOptions) -> contextlib.AbstractContextManager:
    """The progress display of this run (``contextlib.nullcontext()`` when ``run.progress_interval_s`` is None).

    Totals: every shard of the plan; inputs when each item is an input (the text job's documents are only
    found by the workers, so it counts shards and shows the inputs done so far)."""
    if run.progress_interval_s is None:
        return contextlib.nullcontext()
    plan, done = prepared.plan, {k for k in prepared.done if k < prepared.plan.num_shards}
    inputs_total = plan.num_items if job.items_are_inputs else None
    inputs_done = progress.items_in_shards(plan.num_items, plan.shard_size, done) if job.items_are_inputs else 0
    return progress.Progress(shards_total=plan.num_shards, shards_done=len(done), inputs_total=inputs_total,
                             inputs_done=inputs_done, interval_s=run.progress_interval_s, bar=run.progress_bar)


def run_job(job: Job, run: RunOptions, command: list[str] | None = None,
            prepared: Prepared | None = None) -> Summary:
    """Run (or resume) ``job`` into ``run.output``; returns the summary saved beside it.

    Ray must be initialised when shards are pending; ``run.plan`` may be None when none are.
    """
    prepared = prepared or prepare_run(job, run.output)
    out, pending = prepared.out, prepared.pending
    out.join(SUCCESS).delete()  # the folder is about to change
    started = time.time()
    compute = run.plan.describe() if run.plan else "nothing to do"
    logger.info("%s: %d of %d shards to do (%d items, %d per shard); %s", job.name, len(pending),
                prepared.plan.num_shards, prepared.plan.num_items, prepared.plan.shard_size, compute)
    log = sink.CommitLog(out, interval_s=run.commit_interval_s)
    stats_text = ""
    if pending:
        if run.plan is None:
            raise ValueError("shards are pending but no compute plan was given")
        ds = build_dataset(job, prepared, run)
        try:
            with _progress(job, prepared, run) as shown:
                for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    before = log.inputs
                    log.add(batch)
                    if shown is not None:
                        shown.advance(batch.num_rows, log.inputs - before)
        finally:
            log.flush()  # what was committed is logged, even when the job fails
        stats_text = ds.stats()
    wall = time.time() - started
    done = sink.committed_shards(out)
    merged, footers = sink.merged_stats(out, done)
    summary = summarize(job.name, merged, plan=prepared.plan, committed_shards=len(done),
                        items_are_inputs=job.items_are_inputs, processed_shards=len(pending),
                        processed_inputs=log.inputs, driver_bytes_received=log.bytes_received, wall_time_s=wall,
                        command=command, compute=compute, model=job.model.describe(), footers_read=footers,
                        labels=prepared.labels)
    storage.write_atomic(out.join(SUMMARY_FILE), summary.to_json().encode(), out)
    if stats_text:
        storage.write_atomic(out.join(STATS_FILE), stats_text.encode(), out)
    if not summary.complete:
        raise RuntimeError(f"output is incomplete: {summary.counts}; rerun the same command to finish")
    storage.write_atomic(out.join(SUCCESS), b"", out)
    return summary
