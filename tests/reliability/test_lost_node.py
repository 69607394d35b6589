"""A 2-node local cluster (1 CPU each, one model actor per node); the worker node is killed after the first
commit (non-graceful, like a lost machine) and a fresh node joins. The job, attached with ``--address``,
completes and holds every input exactly once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _reliability_helpers import (
    check_exactly_once,
    kill_tree,
    log_tail,
    make_clips,
    start,
    video_cmd,
    wait_until,
)

N_INPUTS = 10
CLIPS = 2
SCRIPT = Path(__file__).with_name("_cluster_script.py")


@pytest.mark.slow
def test_lost_worker_node(tmp_path):
    inp = make_clips(tmp_path / "in", N_INPUTS)
    out = tmp_path / "out"
    control = tmp_path / "control"
    control.mkdir()
    cluster = start([sys.executable, str(SCRIPT), "--control", str(control), "--head-cpus", "1",
                     "--worker-cpus", "1", "--remove-worker-after-part", str(out)], tmp_path / "cluster.log")
    job = None
    try:
        assert wait_until(lambda: (control / "address").exists(), 180, cluster), log_tail(tmp_path / "cluster.log")
        address = (control / "address").read_text()
        job = start(video_cmd(inp, out, "--address", address, "--num-workers", 2, "--clips-per-video", CLIPS,
                              "--batch-size", 1, "--commit-interval", 0), tmp_path / "job.log")
        rc = job.wait(timeout=480)
        removed = (control / "removed").exists()
        assert rc == 0, log_tail(tmp_path / "job.log") + log_tail(tmp_path / "cluster.log")
    finally:
        (control / "stop").write_text("")
        if job is not None and job.poll() is None:
            kill_tree(job)
        try:
            cluster.wait(timeout=60)
        except Exception:  # noqa: BLE001
            kill_tree(cluster)
    assert removed, "the job finished before the worker node could be removed"
    summary = check_exactly_once(out, {"torchcodec__h265_video.mp4": CLIPS,
                                       "moviepy__big_buck_bunny_432_433.webm": CLIPS})
    assert summary["counts"]["inputs_ok"] == N_INPUTS
