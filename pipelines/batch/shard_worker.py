"""The one Ray Data stage of every job: an actor that turns a shard number into a committed part file.

For each shard it is given, a ``ShardWorker``

1. reads the shard's manifest rows from the output's ``_meta/manifest`` (``work_plan.read_shard``);
2. runs the job's read function over them (decode, preprocess: a generator of row tables carrying the
   bookkeeping columns of ``pipelines.batch.schemas``); on a GPU the reading runs in a background thread, so that
   decoding overlaps the model;
3. feeds fixed-size batches to the job's model worker (``model_workers.ModelWorker``), which writes any
   sidecars (pictures, flow fields) straight to the output filesystem;
4. writes the shard's rows as one part file (``commit``: whole or absent, deterministic name) with its
   ``accounting.ShardStats`` in the footer, and returns one small row (shard, part, stats) to the driver.

A shard whose part already exists (a retried task after its actor died) is not redone. Output-side
failures (``storage.OutputWriteError``: disk full, permission, store down) are reported to the driver, which
raises them (``sink.RESULT_SCHEMA``), never recorded as a bad input: the job stops and the shard stays
pending for the rerun.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipelines import storage
from pipelines.batch import schemas, sink, work_plan
from pipelines.batch.accounting import shard_stats
from pipelines.batch.model_workers import ModelSpec


@dataclass
class ShardJob:
    """Everything a worker needs, shipped once per actor (no rows: those are on storage)."""

    name: str
    schema: pa.Schema
    output_uri: str
    plan: work_plan.PlanInfo
    read_fn: Any
    read_kwargs: dict[str, Any]
    worker_cls: type
    worker_kwargs: dict[str, Any]
    model: ModelSpec
    batch_size: int
    items_are_inputs: bool = True  # False for text: the reader finds the documents inside each item
    env: dict[str, str] = field(default_factory=dict)


def _batches(tables: Iterator[pa.Table], size: int) -> Iterator[pa.Table]:
    held: list[pa.Table] = []
    rows = 0
    for table in tables:
        if table.num_rows == 0:
            continue
        held.append(table)
        rows += table.num_rows
        while rows >= size:
            whole = pa.concat_tables(held).combine_chunks()
            yield whole.slice(0, size)
            rest = whole.slice(size)
            held, rows = ([rest] if rest.num_rows else []), rest.num_rows
    if rows:
        yield pa.concat_tables(held)


def _prefetched(tables: Iterator[pa.Table], depth: int) -> Iterator[pa.Table]:
    """Run ``tables`` in a thread, ``depth`` tables ahead (PyAV and PIL release the GIL while decoding)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for t in tables:
                q.put(t)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put(e)
        q.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _as_tables(result: Any) -> Iterator[pa.Table]:
    if isinstance(result, pa.Table):
        yield result
    else:
        yield from result


class ShardWorker:
    """``map_batches`` class over rows ``{"shard": k}``; returns ``sink.RESULT_SCHEMA`` rows."""

    def __init__(self, job: ShardJob, device: str = "cpu", torch_threads: int = 1) -> None:
        self.job = job
        self.out = storage.resolve(job.output_uri)
        self.model = job.worker_cls(job.model, device=device, torch_threads=torch_threads, **job.worker_kwargs)
        self.prefetch = self.model.device.type == "cuda"

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for shard in batch.column("shard").to_pylist():
            try:
                rows.append(self.run_shard(int(shard)))
            except storage.OutputWriteError as e:  # reported as data: see sink.RESULT_SCHEMA
                rows.append({"shard": int(shard), "part": None, "stats": None, "output_error": str(e)})
        return pa.Table.from_pylist(rows, schema=sink.RESULT_SCHEMA)

    def run_shard(self, shard: int) -> dict:
        job = self.job
        part = self.out.join(sink.part_name(shard))
        if sink.is_committed(part):  # a retried task: this shard was committed before the actor died
            return {"shard": shard, "part": part.name, "stats": sink.read_part_stats(part).to_json()}
        items = work_plan.read_shard(self.out, job.plan, shard)
        tables = _as_tables(job.read_fn(items, **job.read_kwargs))
        if self.prefetch:
            tables = _prefetched(tables, depth=2 * job.batch_size)
        outputs = [self.model(b) for b in _batches(tables, job.batch_size)]
        table = (pa.concat_tables(outputs) if outputs
                 else schemas.with_bookkeeping(self.model.out_schema).empty_table())
        expected = items.column("id").to_pylist() if job.items_are_inputs else None
        unit_col = schemas.unit_column(job.schema)
        rows = pa.Table.from_arrays([table.column(n) for n in self.model.schema.names], schema=self.model.schema)
        stats = shard_stats(job.name, rows, unit_col, expected)
        storage.write_atomic(part, sink.encode_part(rows, stats), self.out)
        return {"shard": shard, "part": part.name, "stats": stats.to_json()}
