"""The end-of-job summary: counts, the exactly-once check, throughput and metrics, read back from the output.

Everything except throughput is computed from the committed Parquet parts (with plain pyarrow), so a
resumed job's summary covers all of its runs and matches what a user reading the output would find.

Accounting: every manifest id must appear in the output's unit column (``input_id`` for videos and flow
from videos, ``id`` otherwise) as at least one success row or exactly one error row, and no ``id`` may
appear twice. ``complete`` is true when nothing is missing and nothing is duplicated.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import schemas
from .sink import SinkStats, part_files

HEAVY_COLUMNS = {"latents"}


@dataclass
class Summary:
    job: str
    counts: dict[str, int]
    complete: bool
    errors_by_type: dict[str, int]
    run: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
        tmp.replace(path)

    def table(self) -> str:
        """A plain two-column table for the terminal."""
        rows: list[tuple[str, str]] = [("job", self.job)]
        rows += [(k, str(v)) for k, v in self.counts.items()]
        rows.append(("complete (each input exactly once)", "yes" if self.complete else "NO"))
        rows += [(f"errors: {k}", str(v)) for k, v in sorted(self.errors_by_type.items())]
        for key in ("processed_this_run", "wall_time_s", "items_per_s", "rows_per_s"):
            if key in self.run:
                rows.append((key, _fmt(self.run[key])))
        rows += [(k, _fmt(v)) for k, v in self.metrics.items()]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return "n/a" if value is None else str(value)


def read_output(output_dir: Path, schema: pa.Schema) -> pa.Table:
    """All committed rows, light columns only (no latents)."""
    columns = [n for n in schema.names if n not in HEAVY_COLUMNS]
    files = part_files(output_dir)
    if not files:
        return schema.empty_table().select(columns)
    return pa.concat_tables(pq.read_table(p, columns=columns) for p in files)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _topk_accuracy(table: pa.Table) -> dict[str, float | None]:
    ok = table.filter(pc.and_(pc.is_null(table.column("error")),
                                      pc.is_valid(table.column("label_index"))))
    if ok.num_rows == 0:
        return {}
    labels = ok.column("label_index").to_pylist()
    top = ok.column("top_k_ids").to_pylist()
    if any(t is None for t in top):
        return {}
    return {"labelled_items": ok.num_rows,
            "top1_accuracy": float(np.mean([t[:1].count(y) > 0 for t, y in zip(top, labels)])),
            "top5_accuracy": float(np.mean([y in t[:5] for t, y in zip(top, labels)]))}


def _flow_metrics(table: pa.Table) -> dict[str, float | None]:
    gt = table.filter(pc.and_(pc.is_null(table.column("error")),
                                      pc.equal(table.column("has_gt"), True)))
    if gt.num_rows == 0:
        return {}
    n = np.asarray(gt.column("num_valid_px").to_pylist(), np.float64)
    total = n.sum()
    out: dict[str, float | None] = {"pairs_with_gt": gt.num_rows, "valid_px": int(total)}
    for name in ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all"):
        values = np.asarray([np.nan if v is None else v for v in gt.column(name).to_pylist()], np.float64)
        out[name] = float((values * n).sum() / total) if total else None  # pixel-weighted, as Sintel/KITTI
    out["epe_pair_mean"] = float(np.mean(gt.column("epe").to_pylist()))
    return out


def job_metrics(job: str, table: pa.Table) -> dict[str, float | None]:
    ok = table.filter(pc.is_null(table.column("error")))
    metrics: dict[str, float | None] = {}
    if job == "video":
        metrics["psnr_video_db"] = _mean(ok.column("psnr_video").to_pylist())
        metrics["psnr_audio_db"] = _mean(ok.column("psnr_audio").to_pylist())
        metrics.update(_topk_accuracy(table))
    elif job in ("images", "text-classify"):
        metrics.update(_topk_accuracy(table))
    elif job == "text-fill-mask":
        metrics["masks_filled"] = int(sum(v or 0 for v in ok.column("num_masks").to_pylist()))
    elif job == "flow":
        metrics["flow_mean_px"] = _mean(ok.column("flow_mean_px").to_pylist())
        metrics.update(_flow_metrics(table))
    return {k: v for k, v in metrics.items() if v is not None}


def summarize(output_dir: Path, job: str, schema: pa.Schema, manifest: pa.Table, *, processed_units: int,
              wall_time_s: float, sink_stats: SinkStats, command: list[str] | None = None, compute: str = "",
              model: str = "") -> Summary:
    table = read_output(output_dir, schema)
    unit_col = schemas.unit_column(schema)
    ids = table.column("id").to_pylist()
    units = table.column(unit_col).to_pylist()
    errors = table.column("error").to_pylist()
    error_types = table.column("error_type").to_pylist()
    ok_units = {u for u, e in zip(units, errors) if e is None}
    error_units = Counter(u for u, e in zip(units, errors) if e is not None)
    manifest_ids = set(manifest.column("id").to_pylist())
    failed_units = set(error_units) - ok_units
    missing = manifest_ids - ok_units - failed_units
    duplicates = len(ids) - len(set(ids))
    # A unit with only error rows must have exactly one of them.
    doubled_errors = sum(1 for u in failed_units if error_units[u] > 1)
    counts = {
        "inputs": len(manifest_ids),
        "inputs_ok": len(ok_units & manifest_ids),
        "inputs_failed": len(failed_units & manifest_ids),
        "inputs_missing": len(missing),
        "rows": len(ids),
        "rows_ok": sum(e is None for e in errors),
        "rows_error": sum(e is not None for e in errors),
        "rows_with_warning": sum(w is not None for w in table.column("warning").to_pylist()),
        "duplicate_ids": duplicates + doubled_errors,
        "outputs_not_in_manifest": len((ok_units | failed_units) - manifest_ids),
    }
    rows_this_run = sink_stats.rows_written
    run = {
        "command": command,
        "model": model,
        "compute": compute,
        "processed_this_run": processed_units,
        "rows_written_this_run": rows_this_run,
        "duplicate_rows_dropped": sink_stats.duplicate_rows_dropped,
        "wall_time_s": round(wall_time_s, 3),
        "items_per_s": processed_units / wall_time_s if processed_units and wall_time_s > 0 else None,
        "rows_per_s": rows_this_run / wall_time_s if rows_this_run and wall_time_s > 0 else None,
    }
    return Summary(job=job, counts=counts, complete=not missing and counts["duplicate_ids"] == 0,
                   errors_by_type=dict(Counter(t for t in error_types if t is not None)), run=run,
                   metrics=job_metrics(job, table))
