"""The exactly-once Parquet sink and the summary's accounting, without Ray."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import schemas
from pipelines.sink import ParquetSink, part_files, read_column
from pipelines.summary import summarize


def clip_rows(unit: str, parts: list[int], final_at: int | None, error: str | None = None) -> pa.Table:
    n = len(parts)
    return schemas.build_table(schemas.with_bookkeeping(schemas.VIDEO), {
        "id": [f"{unit}:{p}" for p in parts], "input_id": [unit] * n, "source": [f"/v/{unit}.mp4"] * n,
        "clip_index": parts, "psnr_video": [20.0] * n, "error": [error] * n,
        "error_type": [None if error is None else "x"] * n, schemas.UNIT: [unit] * n, schemas.PART: parts,
        schemas.FINAL: [p == final_at for p in parts]}, n)


def test_units_commit_only_when_complete(tmp_path):
    sink = ParquetSink(tmp_path, schemas.VIDEO, commit_interval_s=1e9)
    sink.add(clip_rows("a", [1], None))  # out of order
    sink.add(clip_rows("b", [0, 1], 1))
    sink.add(clip_rows("a", [2], 2))
    assert sink.pending_units == 1  # a still lacks clip 0
    sink.add(clip_rows("b", [1], 1))  # a retried task sends b again: dropped
    stats = sink.close()
    assert stats.units_committed == 1 and stats.duplicate_rows_dropped == 1 and sink.pending_units == 1
    table = pq.read_table(tmp_path)
    assert sorted(table.column("id").to_pylist()) == ["b:0", "b:1"]
    assert table.schema.equals(schemas.VIDEO, check_metadata=False)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_skips_committed_units(tmp_path):
    first = ParquetSink(tmp_path, schemas.VIDEO, commit_interval_s=0)
    first.add(clip_rows("a", [0, 1], 1))
    first.close()
    (tmp_path / ".part-00000-00009.parquet.tmp").write_bytes(b"half-written by a killed run")
    done = set(read_column(tmp_path, "input_id"))
    second = ParquetSink(tmp_path, schemas.VIDEO, committed_units=done, commit_interval_s=0)
    assert not list(tmp_path.glob(".*.tmp"))  # stale temporaries are removed, never read
    second.add(clip_rows("a", [0, 1], 1))  # a restarted actor redoes a: nothing new
    second.add(clip_rows("c", [0], 0, error="open_failed: ..."))
    second.close()
    assert [p.name for p in part_files(tmp_path)] == ["part-00000-00000.parquet", "part-00001-00000.parquet"]
    ids = pq.read_table(tmp_path).column("id").to_pylist()
    assert sorted(ids) == ["a:0", "a:1", "c:0"]


def test_summary_accounting(tmp_path):
    sink = ParquetSink(tmp_path, schemas.VIDEO, commit_interval_s=0)
    sink.add(clip_rows("a", [0, 1], 1))
    sink.add(clip_rows("b", [0], 0, error="empty_file: 0 bytes"))
    stats = sink.close()
    manifest = pa.table({"id": ["a", "b", "c"]})
    s = summarize(tmp_path, "video", schemas.VIDEO, manifest, processed_units=2, wall_time_s=1.0, sink_stats=stats)
    assert not s.complete and s.counts["inputs_missing"] == 1
    s = summarize(tmp_path, "video", schemas.VIDEO, manifest.slice(0, 2), processed_units=2, wall_time_s=1.0,
                  sink_stats=stats)
    assert s.complete and s.counts["inputs_ok"] == 1 and s.counts["inputs_failed"] == 1
    assert s.errors_by_type == {"x": 1} and s.metrics["psnr_video_db"] == 20.0
