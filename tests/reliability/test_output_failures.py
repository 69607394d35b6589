"""Our own output failing (a sidecar or a part that cannot be written: disk full, permissions, a file where a
folder should be) is never the input's fault: the job stops with one line naming the path and the errno
(exit 1), no error row is recorded for the inputs, they stay pending, and the rerun after the fix completes
exactly once with no ``model_error`` row.

Guarantee (pipelines/batch/shard_worker.py, pipelines/batch/sink.py): ``storage.OutputWriteError`` is re-raised by the
model worker (never an error row), reported by the shard worker as ``RESULT_SCHEMA.output_error`` (Ray would
wrap a raised exception and lose its type) and raised by the driver, which stops the job.
"""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
from _reliability_helpers import check_made_clips, committed_units, make_clips, parts

N_INPUTS = 3
CLIPS = 1


def args(inp, out, *extra):
    return ["video", "--input", inp, "--output", out, "--model", "multimodal", "--random-init", "--tiny",
            "--no-progress", "--clips-per-video", CLIPS, "--batch-size", 1, "--num-workers", 1, *extra]


def check_failure(rc: int, err: list[str], path, errno_name: str) -> None:
    assert rc == 1, err
    ours = [line for line in err if line.startswith("perceiver-jobs ")]
    assert len(ours) == 1 and ours[0] == err[-1], err
    assert ours[0].startswith("perceiver-jobs video: error: cannot write ") and str(path) in ours[0], ours
    assert errno_name in ours[0] and "stay pending" in ours[0], ours


def check_no_error_rows(out) -> None:
    for part in parts(out):
        assert pq.read_table(part, columns=["error"]).column("error").null_count == pq.read_metadata(part).num_rows


def test_sidecar_folder_is_a_file(cli, tmp_path):
    inp = make_clips(tmp_path / "in", N_INPUTS)
    out = tmp_path / "out"
    out.mkdir()
    (out / "_pictures").write_text("not a folder")
    rc, err = cli(*args(inp, out, "--pictures"))
    check_failure(rc, err, out / "_pictures", "ENOTDIR")
    check_no_error_rows(out)
    assert not parts(out) and not (out / "_SUCCESS").exists()  # every clip needs a picture: nothing committed

    (out / "_pictures").unlink()
    rc, err = cli(*args(inp, out, "--pictures"))
    assert rc == 0, err
    summary = check_made_clips(out, N_INPUTS, CLIPS)
    assert summary["errors_by_type"] == {} and summary["run"]["processed_this_run"] == N_INPUTS
    rows = pq.read_table(parts(out), columns=["picture", "error_type"]).to_pylist()
    assert all(r["error_type"] is None and (out / r["picture"]).is_file() for r in rows), rows


def test_part_cannot_be_written(cli, tmp_path):
    inp = make_clips(tmp_path / "in", N_INPUTS)
    out = tmp_path / "out"
    blocker = out / "part-00000001.parquet"
    blocker.mkdir(parents=True)  # a folder where shard 1's part must go
    rc, err = cli(*args(inp, out))
    check_failure(rc, err, blocker, "EISDIR")
    check_no_error_rows(out)
    assert blocker.is_dir() and not (out / "_SUCCESS").exists()
    done_before = committed_units(out)
    assert len(done_before) < N_INPUTS

    shutil.rmtree(blocker)
    rc, err = cli(*args(inp, out))
    assert rc == 0, err
    summary = check_made_clips(out, N_INPUTS, CLIPS)
    assert summary["errors_by_type"] == {}
    assert summary["run"]["processed_this_run"] == N_INPUTS - len(done_before)
