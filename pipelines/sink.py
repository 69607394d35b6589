"""Exactly-once Parquet output: complete units only, atomic part files, resume by skipping committed units.

The driver streams the pipeline's output blocks into a ``ParquetSink``. A *unit* is one manifest item (a
video, an image, a text row); stages tag every row with the unit it came from, its index within the unit
and whether it is the unit's last row (see ``pipelines.schemas``). The sink

* holds a unit's rows until all of them are there, then stages the unit for writing;
* drops rows of a unit it already committed (a retried task or a restarted actor re-sends them);
* writes staged rows every ``rows_per_file`` rows or ``commit_interval_s`` seconds as a new part file:
  first ``.part-*.parquet.tmp``, then an atomic rename to ``part-<run>-<seq>.parquet``.

A part file therefore exists completely or not at all, and holds whole units. After a crash, the units in
the part files are done; a rerun reads their unit ids (one column, cheap) and skips them. Files whose names
start with ``_`` or ``.`` (summary, success marker, temporaries, picture folders) are invisible to
``pyarrow.parquet.read_table(output_dir)`` and pandas.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import schemas

PART_RE = re.compile(r"^part-(\d{5})-(\d{5})\.parquet$")
SUCCESS = "_SUCCESS"


def part_files(output_dir: Path) -> list[Path]:
    """Committed part files, in (run, sequence) order."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if PART_RE.match(p.name))


def read_column(output_dir: Path, column: str) -> list[str]:
    """One column of every committed part file (reads nothing else)."""
    values: list = []
    for path in part_files(output_dir):
        values.extend(pq.read_table(path, columns=[column]).column(column).to_pylist())
    return values


def check_schema(output_dir: Path, schema: pa.Schema) -> None:
    """Fail when committed parts were written with another schema (another job or other options)."""
    for path in part_files(output_dir)[:1]:
        found = pq.read_schema(path)
        if not found.remove_metadata().equals(schema.remove_metadata()):
            raise ValueError(
                f"{output_dir} holds output of another schema ({schemas.schema_name(found) or 'unknown'}: "
                f"{path.name}); rerun with the same job and options, or choose another --output")


@dataclass
class SinkStats:
    rows_written: int = 0
    units_committed: int = 0
    duplicate_rows_dropped: int = 0
    files_written: int = 0


class ParquetSink:
    """Writes rows of ``schema`` (arriving with bookkeeping columns) into ``output_dir`` exactly once."""

    def __init__(self, output_dir: str | Path, schema: pa.Schema, *, rows_per_file: int = 50_000,
                 bytes_per_file: int = 256 << 20, commit_interval_s: float = 60.0,
                 committed_units: set[str] | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.schema = schema
        self.rows_per_file = rows_per_file
        self.bytes_per_file = bytes_per_file
        self.commit_interval_s = commit_interval_s
        self.committed: set[str] = set(committed_units or ())
        self.stats = SinkStats()
        self._pending: dict[str, dict] = {}  # unit -> {"parts": {part: 1-row table}, "final": int | None}
        self._staged: list[pa.Table] = []
        self._staged_rows = 0
        self._staged_bytes = 0
        self._last_flush = time.monotonic()
        existing = [PART_RE.match(p.name) for p in part_files(self.output_dir)]
        self._run = 1 + max((int(m.group(1)) for m in existing), default=-1)
        self._seq = 0
        for stale in self.output_dir.glob(".part-*.tmp"):  # left by a killed run; never committed
            stale.unlink(missing_ok=True)

    @property
    def pending_units(self) -> int:
        return len(self._pending)

    def add(self, table: pa.Table) -> None:
        """Take one output block (schema + ``_unit``/``_part``/``_final``)."""
        if table.num_rows == 0:
            return
        units = table.column(schemas.UNIT).to_pylist()
        parts = table.column(schemas.PART).to_pylist()
        finals = table.column(schemas.FINAL).to_pylist()
        whole = [False] * len(units)  # rows that are complete one-row units (the common case)
        for i, (unit, part, final) in enumerate(zip(units, parts, finals)):
            if unit in self.committed:
                self.stats.duplicate_rows_dropped += 1
            elif part == 0 and final and unit not in self._pending:
                whole[i] = True
                self.committed.add(unit)
                self.stats.units_committed += 1
            else:
                self._add_part(unit, part, final, table.slice(i, 1))
        if any(whole):
            self._stage(table.filter(pa.array(whole)))
        self._maybe_flush()

    def _add_part(self, unit: str, part: int, final: bool, row: pa.Table) -> None:
        entry = self._pending.setdefault(unit, {"parts": {}, "final": None})
        if part in entry["parts"]:
            self.stats.duplicate_rows_dropped += 1
            return
        entry["parts"][part] = row
        if final:
            entry["final"] = part
        if entry["final"] is not None and len(entry["parts"]) == entry["final"] + 1:
            del self._pending[unit]
            self.committed.add(unit)
            self.stats.units_committed += 1
            self._stage(pa.concat_tables([entry["parts"][k] for k in sorted(entry["parts"])]))

    def _stage(self, table: pa.Table) -> None:
        table = pa.Table.from_arrays([table.column(name) for name in self.schema.names], schema=self.schema)
        self._staged.append(table)
        self._staged_rows += table.num_rows
        self._staged_bytes += table.nbytes

    def _maybe_flush(self) -> None:
        due = time.monotonic() - self._last_flush >= self.commit_interval_s
        if self._staged_rows >= self.rows_per_file or self._staged_bytes >= self.bytes_per_file or (
                due and self._staged_rows):
            self.flush()

    def flush(self) -> Path | None:
        """Write the staged units as one part file (atomically); None when nothing is staged."""
        self._last_flush = time.monotonic()
        if not self._staged:
            return None
        table = pa.concat_tables(self._staged)
        name = f"part-{self._run:05d}-{self._seq:05d}.parquet"
        tmp = self.output_dir / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd", row_group_size=8192)
        with open(tmp, "rb") as fh:  # data on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, self.output_dir / name)
        self._seq += 1
        self.stats.rows_written += table.num_rows
        self.stats.files_written += 1
        self._staged, self._staged_rows, self._staged_bytes = [], 0, 0
        return self.output_dir / name

    def close(self) -> SinkStats:
        """Flush what is staged. Units still incomplete are not written (a rerun redoes them)."""
        self.flush()
        return self.stats
