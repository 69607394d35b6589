"""The commit protocol: one part file per shard, written whole by the worker, named by the shard alone.

Why our own protocol and not Ray Data's ``write_parquet`` + ``CheckpointConfig``: Ray's checkpoint filters
*rows* by id and commits *blocks*, so a video whose clips land in two blocks can be half committed, and its
ids are the output rows' ids, not the inputs'. Here the unit of commit is a shard of the manifest:

* **Deterministic names.** Shard k's rows go to ``part-<k>.parquet`` (k zero-padded to 8 digits; any width
  is read back). The same inputs always give the same name, so a retried task, a restarted actor, a rerun
  after a kill or a second job started on the same folder can only *replace* a part with one of the same
  inputs: every input is in the output exactly once, whatever ran twice.
* **Whole or absent.** The worker builds the part in memory and hands it to ``storage.write_atomic`` (local:
  exclusive temporary + fsync + rename; object stores: staging key + server-side copy), so a reader globbing
  ``out/*.parquet`` (pyarrow, pandas, DuckDB, Polars, Spark) only ever sees complete parts of whole inputs.
* **Stats travel with the part.** The shard's ``accounting.ShardStats`` sit in the part's footer metadata
  and in the row the worker returns to the driver, which appends them to a compact commit log
  (``_meta/commits/*.parquet``: shard, part, stats). Resume lists the part names (O(shards)); the summary
  merges the log, and reads a footer only for a part whose log entry a kill lost.
"""

from __future__ import annotations

import io
import os
import re
import stat
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.batch.accounting import ShardStats

PART_RE = re.compile(r"^part-(\d+)\.parquet$")
COMMITS_DIR = "_meta/commits"
STATS_KEY = b"perceiver_jobs.shard_stats"
COMMIT_SCHEMA = pa.schema([pa.field("shard", pa.int64()), pa.field("part", pa.string()),
                           pa.field("stats", pa.string())])
# What a worker returns per shard: a commit, or (``output_error`` set, part/stats null) the reason our own
# output could not be written. Ray would wrap a raised OutputWriteError in a UserCodeException and lose its
# type, so the worker reports it as data and the driver raises it (the job stops; no input is blamed).
RESULT_SCHEMA = COMMIT_SCHEMA.append(pa.field("output_error", pa.string()))


def part_name(shard: int) -> str:
    return f"part-{shard:08d}.parquet"


def committed_shards(out: storage.Location) -> set[int]:
    """Shards whose part file exists (one listing of the output folder)."""
    done = set()
    for name, _ in storage.list_names(out):
        m = PART_RE.match(name)
        if m:
            done.add(int(m.group(1)))
    return done


def is_committed(part: storage.Location) -> bool:
    """Whether ``part`` is a committed part: a plain file. Locally a symlink never is (the same rule as
    ``committed_shards``), so a link planted at a part's name is neither read as a commit nor followed."""
    if part.is_local:
        try:
            return stat.S_ISREG(os.lstat(part.path).st_mode)
        except FileNotFoundError:
            return False
    return part.is_file()


def encode_part(table: pa.Table, stats: ShardStats) -> bytes:
    metadata = dict(table.schema.metadata or {})
    metadata[STATS_KEY] = stats.to_json().encode()
    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), sink, compression="zstd", row_group_size=8192)
    return sink.getvalue()


def read_part_stats(part: storage.Location) -> ShardStats:
    with part.open_input() as f:
        metadata = pq.read_metadata(f).metadata or {}
    return ShardStats.from_json(metadata[STATS_KEY].decode())


@dataclass
class CommitLog:
    """The driver's append-only log of commits reported by workers (flushed every ``interval_s``)."""

    out: storage.Location
    interval_s: float = 30.0
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:8])
    inputs: int = 0  # inputs in the shards committed through this log (this run)
    bytes_received: int = 0  # what the driver received from the workers (Arrow bytes of the commit rows)
    _rows: list[dict] = field(default_factory=list)
    _seq: int = 0
    _last: float = field(default_factory=time.monotonic)

    def add(self, batch: pa.Table) -> None:
        self.bytes_received += batch.nbytes
        failures = (batch.column("output_error").to_pylist() if "output_error" in batch.column_names
                    else [None] * batch.num_rows)
        rows = [r for r, failure in zip(batch.select(COMMIT_SCHEMA.names).to_pylist(), failures) if failure is None]
        self.inputs += sum(ShardStats.from_json(r["stats"]).counts["inputs"] for r in rows)
        self._rows.extend(rows)
        failure = next((f for f in failures if f is not None), None)
        if failure is not None:  # a worker could not write our output (see RESULT_SCHEMA): the job stops
            self.flush()
            raise storage.OutputWriteError(failure)
        if len(self._rows) >= 4096 or time.monotonic() - self._last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._rows:
            return
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(self._rows, schema=COMMIT_SCHEMA), sink, compression="zstd")
        name = f"commits-{self.run_id}-{self._seq:06d}.parquet"
        storage.write_atomic(self.out.join(COMMITS_DIR, name), sink.getvalue(), self.out)
        self._seq += 1
        self._rows = []


def merged_stats(out: storage.Location, shards: set[int]) -> tuple[ShardStats, int]:
    """Merge the stats of ``shards`` (committed ones): from the commit log, else from the part footers.
    Returns (merged stats, how many footers had to be read)."""
    total, seen = ShardStats(), set()
    folder = out.join(COMMITS_DIR)
    for name, _ in sorted(storage.list_names(folder)):
        if not name.endswith(".parquet"):
            continue
        with folder.join(name).open_input() as f:
            log = pq.read_table(f, columns=["shard", "stats"])
        for shard, text in zip(log.column("shard").to_pylist(), log.column("stats").to_pylist()):
            if shard in shards and shard not in seen:
                seen.add(shard)
                total.merge(ShardStats.from_json(text))
    missing = shards - seen
    for shard in sorted(missing):
        total.merge(read_part_stats(out.join(part_name(shard))))
    return total, len(missing)
