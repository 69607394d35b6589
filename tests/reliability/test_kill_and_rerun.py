"""SIGKILL the whole video job (driver, local Ray and its workers) after its first commit; a rerun of the same
command finishes the job, and the output holds every input exactly once (no duplicates, no gaps).

Guarantee (pipelines/sink.py, pipelines/runner.py): part files are written to a temporary name and renamed,
hold whole units only, and a rerun skips the units found in committed parts.
"""

from __future__ import annotations

import json

import pytest
from _reliability_helpers import (
    check_made_clips,
    committed_units,
    kill_tree,
    log_tail,
    make_clips,
    parts,
    start,
    video_cmd,
    wait_until,
)

N_INPUTS = 12
CLIPS = 2


@pytest.mark.slow
def test_sigkill_after_first_commit_then_rerun(tmp_path):
    inp = make_clips(tmp_path / "in", N_INPUTS)
    out = tmp_path / "out"
    log = tmp_path / "job.log"
    # batch size 1 and commit interval 0: one small part file per model batch, so commits come early and often
    cmd = video_cmd(inp, out, "--clips-per-video", CLIPS, "--batch-size", 1, "--commit-interval", 0,
                    "--num-workers", 1)
    proc = start(cmd, log)
    try:
        committed = wait_until(lambda: bool(parts(out)), timeout=240, proc=proc, poll=0.05)
        finished = (out / "_SUCCESS").exists() or proc.poll() is not None
    finally:
        kill_tree(proc)
    assert committed, f"no part file was committed before the job ended/timed out:\n{log_tail(log)}"
    if finished:
        pytest.skip("the job finished before it could be killed (machine too fast for this corpus)")

    assert not (out / "_SUCCESS").exists()
    first_parts = {p.name for p in parts(out)}
    done_before = committed_units(out)  # readable: committed parts are complete files
    assert 0 < len(done_before) < N_INPUTS

    rerun = start(cmd, log)
    try:
        assert rerun.wait(timeout=400) == 0, log_tail(log)
    finally:
        if rerun.poll() is None:
            kill_tree(rerun)
    assert first_parts <= {p.name for p in parts(out)}  # the rerun only added parts
    assert not list(out.glob(".part-*.tmp"))  # temporaries of the killed run were removed
    summary = check_made_clips(out, N_INPUTS, CLIPS)
    # the rerun resumed: it processed only what the killed run had not committed
    assert summary["run"]["processed_this_run"] == N_INPUTS - len(done_before)
    assert json.loads((out / "_job.json").read_text())["job"] == "video"
