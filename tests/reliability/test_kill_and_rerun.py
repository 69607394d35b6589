"""SIGKILL the whole video job (driver, local Ray and its workers) half-way; a rerun of the same command
finishes the job, and the output holds every input exactly once (no duplicates, no gaps).

Guarantee (pipelines/batch/sink.py): shard k's rows are written whole to ``part-<k>.parquet`` by one atomic
write (mkstemp + fsync + rename), so a kill leaves complete parts and hidden temporaries only, and a rerun
does exactly the shards without a part. A broken input among them stays one error row across the kill.
"""

from __future__ import annotations

import json

import pytest
from _reliability_helpers import (
    VIDEOS,
    check_exactly_once,
    committed_units,
    corpus_sizes,
    kill_tree,
    log_tail,
    make_clips,
    mid_job,
    parts,
    run,
    start,
    video_cmd,
)

CLIPS = 2
EMPTY = VIDEOS / "broken" / "moviepy__result_empty.webm"  # zero bytes: one error row, reason empty_file


@pytest.mark.slow
def test_sigkill_half_way_then_rerun(tmp_path):
    for n in corpus_sizes(8):
        inp = make_clips(tmp_path / f"in{n}", n)
        (inp / "zz_empty.webm").symlink_to(EMPTY)  # the last shard
        out = tmp_path / f"out{n}"
        log = tmp_path / f"job{n}.log"
        # batch size 1, one worker, one input per shard: parts come early and the job runs on for seconds
        cmd = video_cmd(inp, out, "--clips-per-video", CLIPS, "--batch-size", 1, "--num-workers", 1)
        proc = start(cmd, log)
        try:
            caught = mid_job(out, proc)
        finally:
            kill_tree(proc)
        if caught and len(parts(out)) < n + 1:
            break
        assert parts(out), f"no part file was committed:\n{log_tail(log)}"
    else:
        pytest.fail("the job always finished before it could be killed")

    assert not (out / "_SUCCESS").exists()
    first_parts = {p.name for p in parts(out)}
    done_before = committed_units(out)  # readable: committed parts are complete files
    assert 0 < len(done_before) < n + 1
    leftovers = [p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(("part-", "_"))]
    assert all(name.startswith(".") for name in leftovers), leftovers  # temporaries are hidden, never *.parquet

    assert run(cmd, log) == 0, log_tail(log)
    assert first_parts <= {p.name for p in parts(out)}  # the rerun only added parts
    summary = check_exactly_once(out, CLIPS)
    assert summary["counts"]["inputs_ok"] == n and summary["errors_by_type"] == {"empty_file": 1}, summary
    # the rerun resumed: it processed only what the killed run had not committed
    assert summary["run"]["processed_this_run"] == n + 1 - len(done_before)
    assert json.loads((out / "_meta" / "job.json").read_text())["job"] == "video"
