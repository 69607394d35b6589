"""End to end: ``perceiver-jobs video`` on local Ray with the tiny multimodal preset over tests/data/videos."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from _job_helpers import (
    DATA,
    TINY,
    check_output,
    check_rerun_adds_nothing,
    manifest_ids,
    part_names,
    run_cli,
    summary,
)

from pipelines import schemas

VIDEOS = DATA / "videos"
# Files in videos/broken/ that yield no clip at all, by name prefix, and the reason they must report.
BROKEN = {"moviepy__result_empty": "empty_file", "truncated_no_moov": "open_failed"}
NO_AUDIO = {"torchcodec__av1_video.mkv", "torchcodec__h265_video.mp4"}


@pytest.fixture(scope="module")
def video_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("video")
    labels = tmp / "labels.csv"
    labels.write_text("file,label_index\ntorchcodec__nasa_13013.mp4,3\nmoviepy__big_buck_bunny_432_433.webm,1\n")
    out = tmp / "out"
    args = ["video", "--input", VIDEOS, "--output", out, "--model", "multimodal", *TINY, "--clips-per-video", "2",
            "--batch-size", "4", "--pictures", "--labels-file", labels, "--commit-interval", "0"]
    assert run_cli(*args) == 0
    # A job killed half-way leaves some shards committed (their part files) and no _SUCCESS: remove three
    # shards' parts, then the rerun must redo exactly those three inputs (one video per shard here).
    for name in sorted(part_names(out))[-3:]:
        (out / name).unlink()
    (out / "_SUCCESS").unlink()
    first_parts = part_names(out)
    first_rows = pq.read_table([str(out / n) for n in first_parts]).num_rows
    assert run_cli(*args) == 0
    return out, args, first_parts, first_rows


def test_every_video_accounted_once(video_run):
    out, _, first_parts, first_rows = video_run
    table = check_output(out, schemas.VIDEO, manifest_ids(out), "input_id")
    assert len(manifest_ids(out)) == 8  # 4 good + 4 broken files
    assert first_parts < part_names(out)  # the resume only added parts
    assert table.num_rows > first_rows
    s = summary(out)
    assert s["run"]["processed_this_run"] == 3  # 8 files, 5 done by the first run
    assert s["counts"]["inputs_failed"] == len(BROKEN)


def test_rows(video_run):
    out = video_run[0]
    rows = check_output(out, schemas.VIDEO, manifest_ids(out), "input_id").to_pylist()
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r["source"].rsplit("/", 1)[-1], []).append(r)
    broken = {n: reason for n in by_file for prefix, reason in BROKEN.items() if n.startswith(prefix)}
    assert len(broken) == len(BROKEN)
    for name, reason in broken.items():  # one error row carrying id, source and reason
        (row,) = by_file[name]
        assert row["error_type"] == reason and name in row["error"]
        assert row["id"] == row["input_id"] and row["clip_index"] is None and row["psnr_video"] is None
    good = [n for n in by_file if n not in broken]
    assert len(good) == 6  # incl. the two truncated files that still decode some clips
    for name in good:
        clips = sorted(by_file[name], key=lambda r: r["clip_index"])
        assert [c["clip_index"] for c in clips] == list(range(len(clips))) and 1 <= len(clips) <= 2
        for c in clips:
            assert c["error"] is None and c["id"] == f"{c['input_id']}:{c['clip_index']}"
            assert math.isfinite(c["psnr_video"]) and c["start_time_s"] >= 0
            assert c["has_audio"] == (name not in NO_AUDIO)
            assert (c["psnr_audio"] is None) == (name in NO_AUDIO)
            assert len(c["top_k_ids"]) == len(c["top_k_labels"]) == len(c["top_k_scores"]) == 5  # tiny: 5 labels
            assert c["top_k_labels"][0] == f"LABEL_{c['top_k_ids'][0]}"
            assert np.all(np.diff(c["top_k_scores"]) <= 0) and abs(sum(c["top_k_scores"]) - 1) < 1e-4
            assert (out / c["picture"]).is_file() and c["picture"].startswith("_pictures/")
    assert {r["label_index"] for r in by_file["torchcodec__nasa_13013.mp4"]} == {3}
    assert "top1_accuracy" in summary(out)["metrics"] and "psnr_video_db" in summary(out)["metrics"]


def test_pandas_reads_it(video_run):
    import pandas as pd

    frame = pd.read_parquet(video_run[0])
    assert {"id", "input_id", "source", "clip_index", "psnr_video", "top_k_labels", "error"} <= set(frame.columns)


def test_rerun_adds_nothing(video_run):
    out, args, *_ = video_run
    check_rerun_adds_nothing(out, args)


def test_changed_options_refuse_the_folder(video_run, capsys):
    _, args, *_ = video_run
    changed = list(args)
    changed[changed.index("--clips-per-video") + 1] = "3"
    assert run_cli(*changed) == 2
    assert "another run" in capsys.readouterr().err


def test_output_folder_reads_in_duckdb_and_polars(video_run):
    """The data glob ``out/*.parquet`` holds only data parts: DuckDB and Polars see the rows pyarrow sees."""
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    out = video_run[0]
    expected = sorted(pq.read_table(out).column("id").to_pylist())
    glob = str(out / "*.parquet")
    assert sorted(r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{glob}')").fetchall()) == expected
    assert sorted(pl.read_parquet(glob)["id"].to_list()) == expected
    assert sorted(pl.scan_parquet(glob).select("id").collect()["id"].to_list()) == expected


def test_every_input_failed_exits_nonzero(ray_local, tmp_path, capsys):
    """Accounting can be complete while nothing succeeded (e.g. every path missing on the workers): the
    error rows and the summary are written, but the job exits 1 with one line naming the error types."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.mp4", "b.webm"):
        (inputs / name).write_bytes(b"")
    out = tmp_path / "out"
    assert run_cli("video", "--input", inputs, "--output", out, "--model", "multimodal", *TINY) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "perceiver-jobs video: error: every one of the 2 inputs failed (empty_file x2)"
    s = summary(out)
    assert s["complete"] and s["counts"]["inputs_failed"] == 2 and s["counts"]["inputs_ok"] == 0
    assert sorted(pq.read_table(out).column("error_type").to_pylist()) == ["empty_file", "empty_file"]


def test_odd_names_and_duplicate_names_under_two_roots(ray_local, tmp_path):
    """A Latin-1 file name (not valid UTF-8) is processed like any other, and ``--input day1 day2`` both
    holding ``cam.mp4`` gives two inputs with two ids (before: the whole job was refused)."""
    import os
    import shutil

    source = VIDEOS / "torchcodec__h265_video.mp4"
    for day in ("day1", "day2"):  # copies, not links: links to one file are one input (deduplicated)
        (tmp_path / day).mkdir()
        shutil.copy(source, tmp_path / day / "cam.mp4")
    shutil.copy(source, os.path.join(str(tmp_path / "day1"), os.fsdecode(b"caf\xe9.mp4")))
    out = tmp_path / "out"
    assert run_cli("video", "--input", tmp_path / "day1", tmp_path / "day2", "--output", out, "--model",
                   "multimodal", *TINY, "--clips-per-video", "1") == 0
    table = check_output(out, schemas.VIDEO, manifest_ids(out), "input_id")
    assert len(manifest_ids(out)) == 3 and table.num_rows == 3
    assert all(e is None for e in table.column("error").to_pylist())
    assert any("caf%E9.mp4" in s for s in table.column("source").to_pylist())
