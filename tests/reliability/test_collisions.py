"""Two jobs on one output folder.

* The same command started twice at the same moment (a double-clicked CI job, a retried submission): both
  may run, and both exit 0. Our protocol does not lock: the manifest, ``job.json`` and part names are
  deterministic (``part-<shard>``), every write replaces whole, and a worker skips a shard whose part the
  other job already wrote, so the output holds every input exactly once whoever wrote what.
* A job with other inputs (or options) pointed at an existing output is refused before any work (exit 2,
  one line), so two different jobs never mix their rows.
"""

from __future__ import annotations

import json
import re

import pytest
from _reliability_helpers import (
    check_made_clips,
    kill_tree,
    log_tail,
    make_clips,
    parts,
    start,
    video_cmd,
)

N_INPUTS = 8
CLIPS = 1


@pytest.mark.slow
def test_two_identical_jobs_at_once(tmp_path):
    inp = make_clips(tmp_path / "in", N_INPUTS)
    out = tmp_path / "out"
    cmd = video_cmd(inp, out, "--clips-per-video", CLIPS, "--batch-size", 1, "--num-workers", 1)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start(cmd, log) for log in logs]
    try:
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p)
    assert codes == [0, 0], [log_tail(log) for log in logs]
    summary = check_made_clips(out, N_INPUTS, CLIPS)
    assert summary["counts"]["shards"] == N_INPUTS and len(parts(out)) == N_INPUTS
    assert json.loads((out / "_meta" / "job.json").read_text())["plan"]["num_items"] == N_INPUTS
    assert summary["counts"]["inputs_ok"] == N_INPUTS and summary["counts"]["rows"] == N_INPUTS * CLIPS
    # each job printed a complete summary; together they did every input at least once
    tables = [log.read_text(errors="replace") for log in logs]
    assert all(re.search(r"complete \(each input exactly once\)\s+yes", t) for t in tables)
    done = [int(re.search(r"^processed_this_run\s+(\d+)$", t, re.MULTILINE)[1]) for t in tables]
    assert sum(done) >= N_INPUTS, done


def test_other_inputs_into_an_existing_output_are_refused(cli, tmp_path):
    first = make_clips(tmp_path / "first", 1)
    other = make_clips(tmp_path / "other", 2)
    out = tmp_path / "out"
    common = ["--output", out, "--model", "multimodal", "--random-init", "--tiny", "--no-progress",
              "--clips-per-video", CLIPS, "--num-workers", 1]
    assert cli("video", "--input", first, *common)[0] == 0
    before = sorted(p.name for p in out.rglob("*"))
    rc, err = cli("video", "--input", other, *common)
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("perceiver-jobs video: error: ") and "another run" in err[0] and str(out) in err[0]
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing written
    assert (out / "_SUCCESS").is_file()
