"""How far a batch job has got, shown while it runs: a progress bar on a terminal, plain lines elsewhere.

The driver receives one small row per committed shard (``runner.run_job``), so it knows at every moment how
many shards and inputs are done; this module turns that into

* on a terminal (stderr is a tty): a tqdm bar of inputs (or shards, when the inputs are not known before
  the workers read them, as in the text job) done / total, with rate and ETA, redrawn every second even
  while no shard finishes;
* elsewhere (CI, ``ray job`` logs, ``nohup``, a pipe): one line every ``interval_s`` seconds, the first at
  the start and a last one when the job is done, e.g.
  ``progress: 12/40 shards, 300/1000 inputs, 25 inputs/s, eta 28s``.

Ray Data's own progress output is switched off (``ray_runtime.configure_data_context``): its bars count
Ray blocks, not inputs, and without a terminal it logs a multi-line block per update.

Rates and ETAs are over this run only: a resumed job starts with the shards committed before, which took
no time in this run.
"""

from __future__ import annotations

import io
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

DEFAULT_INTERVAL_S = 30.0
BAR_REFRESH_S = 1.0


@dataclass(frozen=True)
class Snapshot:
    """The counts at one moment. ``inputs_total`` is None when the inputs are only found by the workers."""

    shards_done: int
    shards_total: int
    inputs_done: int
    inputs_total: int | None
    elapsed_s: float
    shards_at_start: int = 0  # committed by earlier runs
    inputs_at_start: int = 0

    @property
    def rate(self) -> float | None:
        """Inputs per second in this run; None before the first shard of this run is done."""
        done = self.inputs_done - self.inputs_at_start
        return done / self.elapsed_s if done > 0 and self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this run's pace (by inputs when their total is known, else by shards)."""
        if self.shards_done >= self.shards_total:
            return 0.0
        if self.elapsed_s <= 0:
            return None
        if self.inputs_total is not None:
            rate = self.rate
            return None if rate is None else max(0, self.inputs_total - self.inputs_done) / rate
        shards = self.shards_done - self.shards_at_start
        return None if shards <= 0 else (self.shards_total - self.shards_done) * self.elapsed_s / shards


def format_duration(seconds: float | None) -> str:
    """``28s``, ``4m05s``, ``2h03m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_rate(rate: float) -> str:
    return f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"


def format_line(snap: Snapshot, done: bool = False) -> str:
    """One plain progress line (no terminal control characters)."""
    inputs = (f"{snap.inputs_done}/{snap.inputs_total} inputs" if snap.inputs_total is not None
              else f"{snap.inputs_done} inputs")
    parts = [f"{snap.shards_done}/{snap.shards_total} shards", inputs]
    if snap.rate is not None:
        parts.append(f"{format_rate(snap.rate)} inputs/s")
    parts.append(f"done in {format_duration(snap.elapsed_s)}" if done else f"eta {format_duration(snap.eta_s)}")
    return "progress: " + ", ".join(parts)


class Progress:
    """Counts committed shards and shows them (see the module docstring). Use as a context manager.

    ``bar``: None = a bar exactly when ``stream`` is a terminal. ``interval_s``: seconds between plain lines.
    """

    def __init__(self, *, shards_total: int, shards_done: int = 0, inputs_total: int | None = None,
                 inputs_done: int = 0, interval_s: float = DEFAULT_INTERVAL_S, stream: IO[str] | None = None,
                 bar: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = max(0.01, float(interval_s))
        self.use_bar = _is_tty(self.stream) if bar is None else bar
        self._clock = clock
        self._start = clock()
        self._shards_total, self._inputs_total = shards_total, inputs_total
        self._shards_at_start, self._inputs_at_start = shards_done, inputs_done
        self._shards, self._inputs = shards_done, inputs_done
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._shards, self._shards_total, self._inputs, self._inputs_total,
                            self._clock() - self._start, self._shards_at_start, self._inputs_at_start)

    def advance(self, shards: int, inputs: int) -> None:
        """``shards`` more shards committed, holding ``inputs`` inputs."""
        with self._lock:
            self._shards += shards
            self._inputs += inputs
            if self._bar is not None:
                self._bar.set_postfix_str(self._postfix(), refresh=False)
                self._bar.update(inputs if self._inputs_total is not None else shards)

    def _postfix(self) -> str:
        if self._inputs_total is not None:
            return f"{self._shards}/{self._shards_total} shards"
        return f"{self._inputs} inputs"

    def __enter__(self) -> Progress:
        self._start = self._clock()
        if self.use_bar:
            from tqdm import tqdm

            by_inputs = self._inputs_total is not None
            width = _columns(self.stream)  # 0 for a terminal of unknown size (script, some CI ptys)
            self._bar = tqdm(total=self._inputs_total if by_inputs else self._shards_total,
                             initial=self._inputs if by_inputs else self._shards,
                             unit="input" if by_inputs else "shard", file=self.stream, dynamic_ncols=width > 0,
                             ncols=None if width > 0 else 100, nrows=None if width > 0 else 20,
                             desc="progress", leave=True)
            self._bar.set_postfix_str(self._postfix(), refresh=True)
        else:
            self._write(format_line(self.snapshot()))
        self._thread = threading.Thread(target=self._tick, name="perceiver-jobs-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._bar is not None:
            with self._lock:
                self._bar.close()
        elif exc_type is None:
            self._write(format_line(self.snapshot(), done=True))

    def _tick(self) -> None:
        wait = BAR_REFRESH_S if self.use_bar else self.interval_s
        while not self._stop.wait(wait):
            if self._bar is not None:
                with self._lock:
                    self._bar.refresh()
            else:
                self._write(format_line(self.snapshot()))

    def _write(self, line: str) -> None:
        try:
            print(line, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed pipe must not stop the job
            pass


def _columns(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def items_in_shards(num_items: int, shard_size: int, done: set[int]) -> int:
    """Items in the committed shards ``done`` (shard k holds items [k*S, min((k+1)*S, N)))."""
    num_shards = -(-num_items // shard_size)
    return sum(min(shard_size, num_items - k * shard_size) for k in done if 0 <= k < num_shards)
