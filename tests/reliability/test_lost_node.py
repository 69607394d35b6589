"""A 2-node local cluster (1 CPU each, one model actor per node); the worker node is killed after the first
commit (non-graceful, like a lost machine) and a fresh node joins. The job, attached with ``--address``,
completes and holds every input exactly once.
"""

from __future__ import annotations

import pytest
from _reliability_helpers import (
    check_made_clips,
    kill_tree,
    local_cluster,
    log_tail,
    make_clips,
    start,
    video_cmd,
)

N_INPUTS = 10
CLIPS = 2


@pytest.mark.slow
def test_lost_worker_node(tmp_path):
    inp = make_clips(tmp_path / "in", N_INPUTS)
    out = tmp_path / "out"
    with local_cluster(tmp_path, "--head-cpus", 1, "--worker-cpus", 1, "--remove-worker-after-part", out) as (
            address, control):
        job = start(video_cmd(inp, out, "--address", address, "--num-workers", 2, "--clips-per-video", CLIPS,
                              "--batch-size", 1, "--commit-interval", 0), tmp_path / "job.log")
        try:
            rc = job.wait(timeout=480)
            removed = (control / "removed").exists()
            assert rc == 0, log_tail(tmp_path / "job.log") + log_tail(tmp_path / "cluster.log")
        finally:
            if job.poll() is None:
                kill_tree(job)
    assert removed, "the job finished before the worker node could be removed"
    check_made_clips(out, N_INPUTS, CLIPS)
