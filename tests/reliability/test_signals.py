"""SIGTERM (``ray job stop``, Kubernetes, ``kill``) and Ctrl-C stop a video job cleanly: the shards committed
so far stay, the driver shuts down the Ray it started, one line says how far it got, the exit status is
128 + the signal (143, 130), and the same command resumes to an exactly-once output.

Guarantee (jobs/cli.py): SIGTERM raises like KeyboardInterrupt in the driver, so every ``finally`` runs
(commit log flush, ``ray.shutdown``); ``ray_runtime.connect`` puts that handler back after ``ray.init``,
which would otherwise turn SIGTERM into ``sys.exit`` plus a C++ abort 3 s later.
"""

from __future__ import annotations

import os
import re
import signal
import threading

import pytest
from _reliability_helpers import (
    check_made_clips,
    cmdline,
    committed_units,
    corpus_sizes,
    group_members,
    kill_tree,
    last_line,
    log_tail,
    make_clips,
    mid_job,
    parts,
    start,
    video_cmd,
    wait_until,
)

CLIPS = 1
LINE = re.compile(r"^perceiver-jobs video: interrupted \((SIGTERM|SIGINT)\); (\d+) of (\d+) shards committed; "
                  r"rerun the same command to resume$")


def _ray_in_group(pgid: int) -> bool:
    return any("raylet" in cmdline(p) for p in group_members(pgid))


def test_sigterm_stops_cleanly_and_the_rerun_completes(cli, tmp_path):
    """The job runs as a subprocess with its own Ray (what ``ray job stop``/Kubernetes stop); the rerun runs
    in this process (cheaper; the same command line)."""
    for n in corpus_sizes(10):
        inp = make_clips(tmp_path / f"in{n}", n)
        out, log, err = tmp_path / f"out{n}", tmp_path / f"job{n}.log", tmp_path / f"job{n}.err"
        cmd = video_cmd(inp, out, "--clips-per-video", CLIPS, "--batch-size", 1, "--num-workers", 1)
        proc = start(cmd, log, stderr=err)
        try:
            # the job's own Ray (raylet, GCS, workers) runs in the job's process group
            caught = mid_job(out, proc, ready=lambda proc=proc: _ray_in_group(proc.pid))
            if caught:
                proc.send_signal(signal.SIGTERM)  # the driver only, as `ray job stop` and Kubernetes do
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                kill_tree(proc)
        if caught:
            break
    else:
        pytest.fail("the job always finished before it could be stopped")

    assert rc == 143, log_tail(err)
    match = LINE.match(last_line(err))
    assert match, last_line(err)
    assert match[1] == "SIGTERM" and int(match[3]) == n  # one input per shard here
    assert int(match[2]) == len(parts(out)) >= 1  # what it says is what is there
    text = err.read_text(errors="replace")
    assert "Traceback" not in text and sum(line.startswith("perceiver-jobs") for line in text.splitlines()) == 1
    assert wait_until(lambda: not group_members(proc.pid), 30), [cmdline(p) for p in group_members(proc.pid)]
    assert not (out / "_SUCCESS").exists()
    done_before = committed_units(out)

    rc, err = cli(*cmd[3:])  # cmd: python -m jobs video ...
    assert rc == 0, err
    summary = check_made_clips(out, n, CLIPS)
    assert summary["run"]["processed_this_run"] == n - len(done_before)


def test_ctrl_c_in_process(cli, tmp_path):
    """Ctrl-C while ``main()`` runs in this process (on a Ray it did not start, which stays up): exit 130 and
    the one line; the rerun completes exactly once."""
    late: list[int] = []
    for n in corpus_sizes(8):
        inp = make_clips(tmp_path / f"in{n}", n)
        out = tmp_path / f"out{n}"
        args = ["video", "--input", inp, "--output", out, "--model", "multimodal", "--random-init", "--tiny",
                "--no-progress", "--clips-per-video", CLIPS, "--batch-size", 1, "--num-workers", 1]
        stop = threading.Event()
        sent: list[bool] = []

        def interrupt(out=out, n=n, stop=stop, sent=sent) -> None:
            if wait_until(lambda: stop.is_set() or (parts(out) and not (out / "_SUCCESS").exists()), 300) \
                    and not stop.is_set() and len(parts(out)) < n:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)

        previous = signal.signal(signal.SIGINT, lambda *_: late.append(1))  # a signal after main() returned
        thread = threading.Thread(target=interrupt, daemon=True)
        thread.start()
        try:
            rc, err = cli(*args)
        finally:
            stop.set()
            thread.join()
            signal.signal(signal.SIGINT, previous)
        if sent and not late:
            break
    else:
        pytest.fail("the job always finished before it could be interrupted")

    assert rc == 130, err
    match = LINE.match(err[-1])
    assert match and match[1] == "SIGINT" and int(match[2]) == len(parts(out)), err[-1]
    rc, err = cli(*args)
    assert rc == 0, err
    check_made_clips(out, n, CLIPS)
