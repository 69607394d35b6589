"""The job's work plan on storage: the manifest (one row per work item, in a fixed order) cut into shards.

The driver streams the items of a listing (``Job.items()``) into ``<output>/_meta/manifest/items-NNNNNN.parquet``
files of ``ITEMS_PER_FILE`` rows (row groups of ``ROW_GROUP`` rows), holding at most one file's rows in memory.
Once it knows the item count N it picks the shard size S (a power of two, so a shard never straddles two
files) and records N and S in ``_meta/job.json``, which is written last: a folder with ``job.json`` has a
complete manifest, and reruns reuse it instead of listing the inputs again.

Shard k is items [k*S, (k+1)*S). Workers read their shard's rows from the manifest file themselves
(``read_shard``): the driver never ships items, only shard numbers.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage

MANIFEST_DIR = "_meta/manifest"
ITEMS_PER_FILE = 1 << 16
ROW_GROUP = 1 << 10
TARGET_SHARDS = 256  # small jobs: about this many shards, so that every worker gets work


@dataclass(frozen=True)
class PlanInfo:
    num_items: int
    shard_size: int

    @property
    def num_shards(self) -> int:
        return -(-self.num_items // self.shard_size)

    @property
    def num_files(self) -> int:
        return -(-self.num_items // ITEMS_PER_FILE)

    def to_dict(self) -> dict:
        return asdict(self)


def choose_shard_size(num_items: int, max_shard_size: int, min_shard_size: int = 1) -> int:
    """Smallest power of two giving at most ``TARGET_SHARDS`` shards, capped at ``max_shard_size``.

    It is at least ``min_shard_size`` (rounded up to a power of two): a job whose inputs are one model row each
    passes its batch size, so that a worker's batches are full instead of one row per shard and per part file.
    """
    size = 1
    while size < min(min_shard_size, max_shard_size):
        size *= 2
    while size < max_shard_size and -(-num_items // size) > TARGET_SHARDS:
        size *= 2
    return min(size, ITEMS_PER_FILE)


def _file_name(index: int) -> str:
    return f"items-{index:06d}.parquet"


def _encode(rows: list[dict], schema: pa.Schema) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, compression="zstd", row_group_size=ROW_GROUP)
    return sink.getvalue()


def write_manifest(out: storage.Location, items: Iterable[dict], schema: pa.Schema, max_shard_size: int,
                   limit: int | None = None, min_shard_size: int = 1) -> PlanInfo:
    """Stream ``items`` into manifest files; returns the plan (the caller records it in job.json)."""
    folder = out.join(MANIFEST_DIR)
    rows: list[dict] = []
    count = files = 0
    for item in items:
        if limit is not None and count >= limit:
            break
        rows.append(item)
        count += 1
        if len(rows) == ITEMS_PER_FILE:
            storage.write_atomic(folder.join(_file_name(files)), _encode(rows, schema), out)
            files, rows = files + 1, []
    if rows:
        storage.write_atomic(folder.join(_file_name(files)), _encode(rows, schema), out)
    if count == 0:
        raise ValueError("no inputs found: the listing gave no items")
    return PlanInfo(num_items=count, shard_size=choose_shard_size(count, max_shard_size, min_shard_size))


def read_shard(out: storage.Location, plan: PlanInfo, shard: int) -> pa.Table:
    """The manifest rows of ``shard`` (reads only the row groups it overlaps)."""
    start = shard * plan.shard_size
    stop = min(start + plan.shard_size, plan.num_items)
    file_index, offset = divmod(start, ITEMS_PER_FILE)
    manifest = out.join(MANIFEST_DIR, _file_name(file_index))
    if out.is_local and not os.path.exists(manifest.path):
        import socket

        raise FileNotFoundError(f"{manifest.uri} is not visible on worker node {socket.gethostname()}: on a cluster "
                                "a local --output must be on storage every node mounts (NFS, EFS), or use an "
                                "object store URI (s3://...)")
    with manifest.open_input() as f:
        parquet = pq.ParquetFile(f)
        first, last = offset // ROW_GROUP, (offset + stop - start - 1) // ROW_GROUP
        table = parquet.read_row_groups(list(range(first, last + 1)))
    return table.slice(offset - first * ROW_GROUP, stop - start)


def read_manifest(out: storage.Location, plan: PlanInfo, columns: list[str] | None = None) -> pa.Table:
    """The whole manifest (tests and small tools; a job never needs it on the driver)."""
    tables = []
    for index in range(plan.num_files):
        with out.join(MANIFEST_DIR, _file_name(index)).open_input() as f:
            tables.append(pq.read_table(f, columns=columns))
    return pa.concat_tables(tables)
