"""The progress display of batch jobs (``pipelines.batch.progress``): line and ETA formatting, the plain lines
written without a terminal, and the bar on one. No Ray: the driver's loop is simulated with ``advance``."""

from __future__ import annotations

import io
import re
import time

import pytest

from pipelines.batch.progress import Progress, Snapshot, format_duration, format_line, items_in_shards


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (28.4, "28s"), (59.6, "1m00s"), (245, "4m05s"),
                                               (3600, "1h00m"), (7380, "2h03m"), (None, "?"),
                                               (float("inf"), "?")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_line_rate_and_eta():
    # 300 of 1000 inputs in 12 s: 25 inputs/s, 700 left -> 28 s
    snap = Snapshot(shards_done=12, shards_total=40, inputs_done=300, inputs_total=1000, elapsed_s=12.0)
    assert format_line(snap) == "progress: 12/40 shards, 300/1000 inputs, 25 inputs/s, eta 28s"
    assert format_line(snap, done=True).endswith("25 inputs/s, done in 12s")


def test_resumed_run_rates_count_this_run_only():
    # 500 inputs (20 shards) were committed by an earlier run; this run did 250 in 10 s -> 25/s, 250 left -> 10 s
    snap = Snapshot(30, 40, 750, 1000, elapsed_s=10.0, shards_at_start=20, inputs_at_start=500)
    assert snap.rate == pytest.approx(25.0) and snap.eta_s == pytest.approx(10.0)


def test_unknown_input_total_uses_the_shard_rate():
    # text jobs: documents are found by the workers; 2 of 4 shards in 10 s -> 2 shards left -> 10 s
    snap = Snapshot(2, 4, 50, None, elapsed_s=10.0)
    assert format_line(snap) == "progress: 2/4 shards, 50 inputs, 5.0 inputs/s, eta 10s"


def test_nothing_done_yet_has_no_rate_and_unknown_eta():
    assert format_line(Snapshot(0, 40, 0, 1000, elapsed_s=5.0)) == "progress: 0/40 shards, 0/1000 inputs, eta ?"
    assert Snapshot(40, 40, 1000, 1000, elapsed_s=5.0).eta_s == 0.0


def test_items_in_shards_counts_the_short_last_shard():
    assert items_in_shards(10, 4, {0, 2}) == 4 + 2  # shards of 4, 4, 2
    assert items_in_shards(10, 4, {5}) == 0  # not a shard of this plan


def test_plain_lines_without_a_terminal():
    stream = io.StringIO()
    with Progress(shards_total=4, inputs_total=10, interval_s=0.05, stream=stream) as progress:
        assert not progress.use_bar
        progress.advance(1, 4)
        time.sleep(0.3)
        progress.advance(3, 6)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "progress: 0/4 shards, 0/10 inputs, eta ?"
    assert any(re.fullmatch(r"progress: 1/4 shards, 4/10 inputs, [\d.]+ inputs/s, eta \w+", line) for line in lines)
    assert re.fullmatch(r"progress: 4/4 shards, 10/10 inputs, [\d.]+ inputs/s, done in \w+", lines[-1])
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_no_final_line_when_the_job_fails():
    stream = io.StringIO()
    with pytest.raises(RuntimeError), Progress(shards_total=2, inputs_total=2, interval_s=60, stream=stream):
        raise RuntimeError("boom")
    assert stream.getvalue().splitlines() == ["progress: 0/2 shards, 0/2 inputs, eta ?"]


def test_bar_on_a_terminal():
    stream = FakeTerminal()
    with Progress(shards_total=4, shards_done=1, inputs_total=1000, inputs_done=250, stream=stream) as progress:
        assert progress.use_bar
        progress.advance(1, 250)
    out = stream.getvalue()
    assert "\r" in out and "progress" in out
    assert "500/1000" in out and "2/4 shards" in out  # resumed at 250: this run added 250
    assert "%|" in out and not re.search(r"progress: \d+/\d+ shards", out)  # the bar, not the plain lines
