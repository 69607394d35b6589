"""Training reports: metric sums that add across steps and workers, the CSV log and the progress line.

Tasks return *sums* (``loss_sum``, ``count``, ...) so that metrics pool exactly across batches and ranks
(summing, then dividing once); ``summarize`` helpers turn them into the reported values.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from pipelines import storage


def add_stats(total: dict[str, float], new: Mapping[str, float]) -> dict[str, float]:
    for key, value in new.items():
        total[key] = total.get(key, 0.0) + float(value)
    return total


def all_reduce_stats(stats: Mapping[str, float]) -> dict[str, float]:
    """Sum stats over the workers (a no-op outside torch.distributed). Every rank must pass the same keys."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return dict(stats)
    keys = sorted(stats)
    values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(values)
    return dict(zip(keys, values.tolist()))


class MetricsCSV:
    """Appends one row per logged step to ``run_dir/metrics.csv`` (wide: one column per metric).

    Columns are fixed when the file is created (common columns + the task's metric names); a resumed run
    appends to the same file, and a step logged twice (before a crash and after the restart) appears twice
    with different ``attempt`` values.

    ``path`` may be a local path or a ``storage.Location`` on object storage. Object stores cannot append: the
    file is kept in memory and rewritten whole (``storage.write_atomic``) by ``flush()``, which the loop calls
    with every checkpoint, every evaluation and at the end, and ``write`` calls at most every
    ``flush_every_s`` seconds. After a crash the object holds at least every row up to the checkpoint the
    run resumes from (rows after it are logged again by the resumed run).
    """

    COMMON = ("time", "attempt", "step", "epoch", "split", "lr", "samples_per_s")

    def __init__(self, path, metric_names: Iterable[str], attempt: int, flush_every_s: float = 60.0) -> None:
        self.location = path if isinstance(path, storage.Location) else storage.resolve(str(path))
        self.path = Path(self.location.path) if self.location.is_local else None
        self.attempt = attempt
        self.flush_every_s = flush_every_s
        self._text: list[str] | None = None  # object storage: the whole file
        self._last_flush = time.monotonic()
        if self.path is not None:  # local: append to the file as rows come
            header = None
            if self.path.exists() and self.path.stat().st_size:
                with open(self.path, newline="", encoding="utf-8") as fh:
                    header = next(csv.reader(fh), None)
            self.columns = header or self._new_columns(metric_names)
            if header is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "w", newline="", encoding="utf-8") as fh:
                    csv.writer(fh).writerow(self.columns)
            return
        existing = self.location.read_text() if self.location.is_file() else ""
        header = next(csv.reader(io.StringIO(existing, newline="")), None) if existing else None
        self.columns = header or self._new_columns(metric_names)
        self._text = [existing if header else self._line(self.columns)]
        if header is None:
            self.flush()

    def _new_columns(self, metric_names: Iterable[str]) -> list[str]:
        return list(self.COMMON) + [m for m in metric_names if m not in self.COMMON]

    @staticmethod
    def _line(values) -> str:
        buf = io.StringIO()
        csv.writer(buf).writerow(values)
        return buf.getvalue()

    def write(self, step: int, epoch: int, split: str, metrics: Mapping[str, float], lr: float | None = None,
              samples_per_s: float | None = None) -> None:
        row = {"time": f"{time.time():.3f}", "attempt": self.attempt, "step": step, "epoch": epoch, "split": split,
               "lr": "" if lr is None else f"{lr:.6g}",
               "samples_per_s": "" if samples_per_s is None else f"{samples_per_s:.4g}"}
        row.update({k: f"{v:.6g}" for k, v in metrics.items() if isinstance(v, (int, float))})
        values = [row.get(c, "") for c in self.columns]
        if self._text is None:
            with open(self.path, "a", newline="", encoding="utf-8") as fh:
                csv.writer(fh).writerow(values)
            return
        self._text.append(self._line(values))
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Object storage: rewrite the object with every row so far (local files are appended as written)."""
        if self._text is None:
            return
        run = storage.Location(self.location.fs, self.location.path.rsplit("/", 1)[0],
                               self.location.uri.rsplit("/", 1)[0])
        storage.write_atomic(self.location, "".join(self._text).encode("utf-8"), staging_root=run)
        self._last_flush = time.monotonic()


def read_metrics_csv(path) -> list[dict[str, str]]:
    """Rows of a metrics.csv (a local path, a URI or a ``storage.Location``)."""
    location = path if isinstance(path, storage.Location) else storage.resolve(str(path))
    return list(csv.DictReader(io.StringIO(location.read_text(), newline="")))


def emit(line: str) -> None:
    """Write a progress line to stdout once (Ray Train patches ``print`` into its logger, which may echo)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(task: str, step: int, max_steps: int, metrics: Mapping[str, float], lr: float | None = None,
                  samples_per_s: float | None = None, eta_s: float | None = None, split: str = "train") -> str:
    """``[mlm] step 120/1000 (12%) loss 2.310 bits_per_byte 3.333 | lr 4.0e-04 | 85.3 samples/s | eta 1m20s``."""
    parts = [f"[{task}] {'eval @ ' if split != 'train' else ''}step {step}/{max_steps} ({100 * step // max_steps}%)"]
    parts.append(" ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    tail = []
    if lr is not None:
        tail.append(f"lr {lr:.2e}")
    if samples_per_s is not None:
        tail.append(f"{samples_per_s:.1f} samples/s")
    if eta_s is not None:
        tail.append(f"eta {format_duration(eta_s)}")
    return " ".join(parts) + ("" if not tail else " | " + " | ".join(tail))
