"""A 2-node local cluster (1 CPU each, one model actor per node), inputs and outputs on S3 (the moto server of
tests/conftest.py); the worker node is killed half-way (non-graceful, like a lost machine) and a fresh node
joins. The job, attached with ``--address``, completes and holds every input exactly once.

The cluster's processes have no storage credentials or endpoint: the workers can reach S3 only because the
job ships ``storage.worker_env()`` as its ``runtime_env``.
"""

from __future__ import annotations

import pytest
from _reliability_helpers import (
    Output,
    check_made_clips,
    corpus_sizes,
    kill_tree,
    local_cluster,
    log_tail,
    make_clips,
    mid_job,
    start,
    video_cmd,
)

CLIPS = 2


@pytest.mark.slow
def test_lost_worker_node_on_s3(s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    for n in corpus_sizes(8):
        inp = s3_server.upload_dir(str(make_clips(tmp_path / f"in{n}", n)), bucket, f"in{n}")
        out = Output.s3(s3_server, bucket, f"out{n}")
        log = tmp_path / f"job{n}.log"
        with local_cluster(tmp_path / f"cluster{n}", "--head-cpus", 1, "--worker-cpus", 1,
                           "--remove-worker-on-request") as (address, control):
            job = start(video_cmd(inp, out.uri, "--address", address, "--num-workers", 2, "--clips-per-video",
                                  CLIPS, "--batch-size", 1), log, env=s3_server.env())
            try:
                caught = mid_job(out, job)
                if caught:
                    (control / "remove").write_text("")
                rc = job.wait(timeout=480)
                removed = (control / "removed").exists()
            finally:
                if job.poll() is None:
                    kill_tree(job)
        if caught:
            break
    else:
        pytest.fail("the job always finished before the worker node could be removed")
    assert rc == 0, log_tail(log) + log_tail(tmp_path / f"cluster{n}" / "cluster.log")
    assert removed
    check_made_clips(out, n, CLIPS)
