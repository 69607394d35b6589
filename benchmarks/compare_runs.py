"""Compare two output folders of the same ``perceiver-jobs`` job (e.g. a GPU run against a CPU run) row by row.

    python benchmarks/compare_runs.py OUT_GPU OUT_CPU [--rtol 1e-3] [--atol 1e-4] [--unit clips] [--subset]

Rows are matched on ``id``. Floats (and lists of floats) must agree within ``atol + rtol * |reference|`` (the
second folder is the reference); integers, booleans and strings, lists of them included, must be equal. Flow
fields written as sidecars (``flow_path``, Middlebury ``.flo``) are compared the same way, pixel by pixel.
Columns that name the run rather than the result (pictures, warnings) are skipped. Prints one Markdown line per
column and a summary line with each run's items/s and rows/s (from ``_summary.json``); exits 1 when any row or
column disagrees, 2 when a folder is not a finished job.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SKIP = {"picture", "warning"}  # presentation, not results


@dataclass
class ColumnResult:
    name: str
    kind: str  # "float", "exact", "flo"
    compared: int = 0
    mismatched: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    example: str = ""

    def line(self) -> str:
        status = "ok" if not self.mismatched else f"**{self.mismatched} differ** (e.g. {self.example})"
        detail = f"max abs diff {self.max_abs:.2e}, max rel {self.max_rel:.2e}" if self.kind != "exact" else "equal"
        return f"| {self.name} | {self.kind} | {self.compared} | {detail if not self.mismatched else '-'} | {status} |"


@dataclass
class Comparison:
    rows_a: int
    rows_b: int
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    columns: list[ColumnResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.only_a and not self.only_b and all(c.mismatched == 0 for c in self.columns)


def read_rows(folder: Path) -> pa.Table:
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts or not (folder / "_SUCCESS").exists():
        raise SystemExit(2)
    return pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default").sort_by("id")


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t)


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[bool, float, float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False, math.inf, math.inf
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    if np.isnan(diff).any():  # NaN on one side only
        return False, math.inf, math.inf
    rel = diff / np.maximum(np.abs(b), 1e-12)
    ok = bool(np.all(diff <= atol + rtol * np.abs(b)))
    return ok, float(diff.max(initial=0.0)), float(np.where(diff > atol, rel, 0.0).max(initial=0.0))


def compare_tables(a: pa.Table, b: pa.Table, rtol: float, atol: float, folder_a: Path | None = None,
                   folder_b: Path | None = None, subset: bool = False) -> Comparison:
    """``subset``: the reference may hold fewer rows (a shorter run); ids only in the first are not an error."""
    ids_a, ids_b = a.column("id").to_pylist(), b.column("id").to_pylist()
    only_a = [] if subset else sorted(set(ids_a) - set(ids_b))
    result = Comparison(len(ids_a), len(ids_b), only_a, sorted(set(ids_b) - set(ids_a)))
    common = sorted(set(ids_a) & set(ids_b))
    a = a.filter(pc.is_in(a.column("id"), pa.array(common))).sort_by("id")
    b = b.filter(pc.is_in(b.column("id"), pa.array(common))).sort_by("id")
    for name in a.column_names:
        if name in SKIP or name not in b.column_names:
            continue
        typ = a.schema.field(name).type
        values_a, values_b = a.column(name).to_pylist(), b.column(name).to_pylist()
        is_float = _is_float(typ) or (pa.types.is_list(typ) and _is_float(typ.value_type))
        col = ColumnResult(name, "float" if is_float else "exact")
        for row_id, x, y in zip(common, values_a, values_b):
            col.compared += 1
            if x is None or y is None:
                same = x is None and y is None
                d_abs = d_rel = 0.0 if same else math.inf
            elif is_float:
                same, d_abs, d_rel = _close(np.asarray(x), np.asarray(y), rtol, atol)
            else:
                same, d_abs, d_rel = x == y, 0.0, 0.0
            col.max_abs, col.max_rel = max(col.max_abs, d_abs), max(col.max_rel, d_rel)
            if not same:
                col.mismatched += 1
                col.example = col.example or f"{row_id}: {str(x)[:60]} vs {str(y)[:60]}"
        result.columns.append(col)
        if name == "flow_path" and folder_a is not None and folder_b is not None:
            result.columns.append(compare_flo(common, values_a, values_b, folder_a, folder_b, rtol, atol))
    return result


def compare_flo(ids, paths_a, paths_b, folder_a: Path, folder_b: Path, rtol: float, atol: float) -> ColumnResult:
    """The flow fields themselves (sidecar .flo files, relative to each output folder)."""
    from pipelines.readers.flow_data import read_flo

    col = ColumnResult("flow field (.flo)", "flo")
    for row_id, pa_, pb_ in zip(ids, paths_a, paths_b):
        if not pa_ or not pb_:
            continue
        col.compared += 1
        same, d_abs, d_rel = _close(read_flo(folder_a / pa_), read_flo(folder_b / pb_), rtol, atol)
        col.max_abs, col.max_rel = max(col.max_abs, d_abs), max(col.max_rel, d_rel)
        if not same:
            col.mismatched += 1
            col.example = col.example or f"{row_id}: max abs {d_abs:.2e}"
    return col


def rates(folder: Path, rows: int, unit: str = "rows") -> str:
    try:
        summary = json.loads((folder / "_summary.json").read_text())
    except (OSError, ValueError):
        return "no _summary.json"
    run = summary.get("run", {})
    wall = run.get("wall_time_s") or math.nan
    ok_rows = summary.get("counts", {}).get("rows_ok", rows)
    per_s = run.get("items_per_s")
    return (f"{ok_rows} {unit} in {wall:.1f} s job wall time = {ok_rows / wall:.2f} {unit}/s "
            f"({per_s or 0:.3f} inputs/s; {run.get('compute', '')})")


def markdown(comparison: Comparison, label: str, folder_a: Path, folder_b: Path, rtol: float, atol: float,
             unit: str = "rows") -> str:
    verdict = "**rows agree**" if comparison.ok else "**ROWS DIFFER**"
    compared = max((c.compared for c in comparison.columns), default=0)
    lines = [f"{label}: {verdict} (tolerance {atol:g} + {rtol:g} x |reference|; {comparison.rows_a} vs "
             f"{comparison.rows_b} rows, {compared} compared)", "",
             f"- {folder_a.name}: {rates(folder_a, comparison.rows_a, unit)}",
             f"- {folder_b.name} (reference): {rates(folder_b, comparison.rows_b, unit)}"]
    if comparison.only_a or comparison.only_b:
        lines.append(f"- ids only in the first: {comparison.only_a[:5]}; "
                     f"only in the reference: {comparison.only_b[:5]}")
    lines += ["", "| column | kind | rows | difference | verdict |", "|---|---|---|---|---|"]
    lines += [c.line() for c in comparison.columns]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the output folder to check (e.g. the GPU run)")
    parser.add_argument("reference", type=Path, help="the reference output folder (e.g. the CPU run)")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--label", default="comparison")
    parser.add_argument("--unit", default="rows", help="what a successful row is, for the rate (clips, pairs)")
    parser.add_argument("--subset", action="store_true",
                        help="the reference is a shorter run: compare the rows it has, ignore the others")
    parser.add_argument("--markdown", type=Path, default=None, help="append the report to this file")
    args = parser.parse_args(argv)
    for folder in (args.run, args.reference):
        if not (folder / "_SUCCESS").exists():
            print(f"{args.label}: {folder} is not a finished job output (no _SUCCESS)")
            return 2
    comparison = compare_tables(read_rows(args.run), read_rows(args.reference), args.rtol, args.atol,
                                args.run, args.reference, subset=args.subset)
    text = markdown(comparison, args.label, args.run, args.reference, args.rtol, args.atol, args.unit)
    print(text)
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write(text + "\n\n")
    return 0 if comparison.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
