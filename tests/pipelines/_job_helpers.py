"""Shared checks for the end-to-end job tests: run the CLI on local Ray, read the output with plain pyarrow."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parents[1] / "data"
TINY = ["--random-init", "--tiny", "--no-progress", "--num-workers", "2"]


def run_cli(*args: str) -> int:
    from jobs.cli import main

    return main([str(a) for a in args])


def read_output(out: Path) -> pa.Table:
    """What a user gets: ``pyarrow.parquet.read_table(<output folder>)``."""
    return pq.read_table(out)


def part_names(out: Path) -> set[str]:
    return {p.name for p in out.glob("part-*.parquet")}


def summary(out: Path) -> dict:
    return json.loads((out / "_summary.json").read_text())


def check_output(out: Path, schema: pa.Schema, manifest_ids: set[str], unit_column: str = "id") -> pa.Table:
    """The invariants every job's output keeps; returns the table for job-specific checks."""
    table = read_output(out)
    assert table.schema.remove_metadata().equals(schema.remove_metadata()), table.schema
    assert (out / "_SUCCESS").is_file() and (out / "_summary.json").is_file()
    rows = table.to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    ok_units = {r[unit_column] for r in rows if r["error"] is None}
    error_rows = [r for r in rows if r["error"] is not None]
    error_units = Counter(r[unit_column] for r in error_rows)
    # Every input accounted for: successes plus errors equal the manifest, nothing twice.
    assert ok_units | set(error_units) == manifest_ids
    assert not ok_units & set(error_units)
    assert all(n == 1 for n in error_units.values())
    for r in error_rows:  # error rows say what, why and where
        assert r["error_type"] and r["error"] and r["source"], r
    for r in rows:
        if r["error"] is None:
            assert r["error_type"] is None and r["source"], r
    s = summary(out)
    assert s["complete"] and s["counts"]["inputs"] == len(manifest_ids)
    assert s["counts"]["inputs_ok"] == len(ok_units) and s["counts"]["inputs_failed"] == len(error_units)
    assert s["counts"]["rows"] == len(rows) and s["counts"]["duplicate_ids"] == 0
    return table


def check_rerun_adds_nothing(out: Path, args: list[str]) -> None:
    before_parts, before_rows = part_names(out), read_output(out).num_rows
    assert run_cli(*args) == 0
    assert part_names(out) == before_parts
    assert read_output(out).num_rows == before_rows
    assert summary(out)["run"]["processed_this_run"] == 0
    assert (out / "_SUCCESS").is_file()


def run_killed_and_rerun(args: list, out: Path, redone: int) -> dict[str, int]:
    """Run a job, then stand in for a run killed after some shards: delete the last ``redone`` parts and
    ``_SUCCESS``, and rerun it (which must redo exactly those). Returns the kept parts' modification times."""
    assert run_cli(*args) == 0
    for name in sorted(part_names(out))[-redone:]:
        (out / name).unlink()
    (out / "_SUCCESS").unlink()
    kept = {name: (out / name).stat().st_mtime_ns for name in part_names(out)}
    assert run_cli(*args) == 0
    return kept


def manifest_ids(out: Path) -> set[str]:
    """The ids of the job's manifest (``_meta/manifest/``), read with plain pyarrow."""
    return set(pq.read_table(out / "_meta" / "manifest", columns=["id"]).column("id").to_pylist())


def bucket_fs(server):
    """A pyarrow S3 filesystem on the test server, built independently of ``pipelines.storage``."""
    from urllib.parse import urlparse

    import pyarrow.fs as pafs

    endpoint = urlparse(server.endpoint)
    env = server.env()
    return pafs.S3FileSystem(endpoint_override=endpoint.netloc, scheme=endpoint.scheme, region=env["AWS_REGION"],
                             access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])
