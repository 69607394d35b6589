"""A model-worker actor SIGKILLed in the middle of a video job is replaced (Ray Data's actors run with
max_restarts=-1 / max_task_retries=-1) and its shard retried: the job still succeeds, in one run, and holds
every input exactly once (a retried shard rewrites the same ``part-<shard>`` name, or finds it committed).

There is no fault-injection hook in the pipeline, so the test finds the actor's process (title
``ray::MapWorker(...)``) among the descendants of the job it started and kills it.
"""

from __future__ import annotations

import os
import signal

import pytest
from _reliability_helpers import (
    check_made_clips,
    cmdline,
    corpus_sizes,
    descendants,
    kill_tree,
    log_tail,
    make_clips,
    mid_job,
    start,
    video_cmd,
    wait_until,
)

CLIPS = 2


def _model_actors(pid: int) -> list[int]:
    return [p for p in descendants(pid) if "MapWorker" in cmdline(p)]


@pytest.mark.slow
def test_killed_model_actor_is_replaced_and_output_is_exactly_once(tmp_path):
    for n in corpus_sizes(8):
        inp = make_clips(tmp_path / f"in{n}", n)
        out = tmp_path / f"out{n}"
        log = tmp_path / f"job{n}.log"
        cmd = video_cmd(inp, out, "--clips-per-video", CLIPS, "--batch-size", 1, "--num-workers", 1)
        proc = start(cmd, log)
        try:
            # mid-job: the actor is working (something has been committed) and the job has not finished
            if mid_job(out, proc, ready=lambda proc=proc: bool(_model_actors(proc.pid))):
                victims = _model_actors(proc.pid)
                for pid in victims:
                    os.kill(pid, signal.SIGKILL)
                assert wait_until(lambda victims=victims, proc=proc: not set(victims) & set(descendants(proc.pid)),
                                  30)
                assert proc.wait(timeout=400) == 0, log_tail(log)
                break
            assert proc.wait(timeout=400) == 0, log_tail(log)  # finished first: try a bigger corpus
        finally:
            if proc.poll() is None:
                kill_tree(proc)
    else:
        pytest.fail("the job always finished before the actor could be killed")
    summary = check_made_clips(out, n, CLIPS)
    assert summary["run"]["processed_this_run"] == n  # one run did it all, across the kill
