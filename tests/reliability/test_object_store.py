"""Kill and rerun with inputs and outputs on object storage (S3 API: the moto server of tests/conftest.py).

A video job reading ``s3://`` and writing ``s3://`` is SIGKILLed half-way (driver, local Ray, workers); the
rerun of the same command finishes it. Read back from S3 with plain ``pyarrow.fs.S3FileSystem``: every
input exactly once, ``_SUCCESS`` present, and nothing but complete parts and the job's own files next to
them (an upload cut by the kill stays a staging key under ``_meta/staging/``, never a part).

The job gets the endpoint and credentials only from its environment (``AWS_ENDPOINT_URL``, ...), as a user of
MinIO would set them; its local Ray workers inherit them.
"""

from __future__ import annotations

import pytest
from _reliability_helpers import (
    PART_RE,
    Output,
    check_made_clips,
    committed_units,
    corpus_sizes,
    kill_tree,
    log_tail,
    make_clips,
    mid_job,
    run,
    start,
    video_cmd,
)

CLIPS = 2


@pytest.mark.slow
def test_sigkill_half_way_on_s3_then_rerun(s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    env = s3_server.env()
    for n in corpus_sizes(8):
        inp = s3_server.upload_dir(str(make_clips(tmp_path / f"in{n}", n)), bucket, f"in{n}")
        out = Output.s3(s3_server, bucket, f"out{n}")
        log = tmp_path / f"job{n}.log"
        cmd = video_cmd(inp, out.uri, "--clips-per-video", CLIPS, "--batch-size", 1, "--num-workers", 1)
        proc = start(cmd, log, env=env)
        try:
            caught = mid_job(out, proc)
        finally:
            kill_tree(proc)
        if caught and len(out.parts()) < n:
            break
    else:
        pytest.fail("the job always finished before it could be killed")

    assert not out.is_file("_SUCCESS")
    done_before = committed_units(out)  # readable: a part on S3 is a complete object
    assert 0 < len(done_before) < n

    assert run(cmd, log, env=env) == 0, log_tail(log)
    summary = check_made_clips(out, n, CLIPS)
    assert summary["run"]["processed_this_run"] == n - len(done_before)
    beside_parts = {name for name in out.names() if not PART_RE.match(name)}
    assert beside_parts == {"_summary.json", "_SUCCESS"}, beside_parts  # no temporaries, no partial objects
