"""Per-shard accounting and metrics, computed by the worker that writes the shard, merged on the driver.

A worker that commits a shard also returns (and stores in the part's footer) a small JSON ``ShardStats``:
how many inputs the shard had, how many got a success row, how many exactly one error row, how many are
missing, row counts, error types, and *sums* of the job's metrics (never means, so that shards merge
exactly). The driver's summary is the merge of the committed shards' stats: it reads O(shards) small
records, never the rows.

Accounting rule (every job): an input is *ok* with at least one success row and no error row, *failed*
with exactly one error row and no success row; anything else (no row, two error rows, a mix) is
*missing* or *duplicated*. ``complete`` means every shard is committed and nothing is missing or twice.
Metrics over an empty set are null, reported beside the count they are over.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COUNT_KEYS = ("inputs", "inputs_ok", "inputs_failed", "inputs_missing", "rows", "rows_ok", "rows_error",
              "rows_with_warning", "duplicate_ids", "outputs_not_in_manifest")


@dataclass
class ShardStats:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    errors_by_type: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)  # metric sums and the counts they are over

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShardStats:
        data = json.loads(text)
        return cls(counts={**dict.fromkeys(COUNT_KEYS, 0), **data["counts"]},
                   errors_by_type=dict(data["errors_by_type"]), sums=dict(data["sums"]))

    def merge(self, other: ShardStats) -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        for k, v in other.errors_by_type.items():
            self.errors_by_type[k] = self.errors_by_type.get(k, 0) + v
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + v


def shard_stats(job: str, table: pa.Table, unit_column: str, expected_units: Iterable[str] | None) -> ShardStats:
    """Stats of one shard's output rows. ``expected_units``: the shard's manifest ids (None when the reader
    discovers the inputs itself, as text shards do: then every unit it emitted is expected)."""
    units = table.column(unit_column).to_pylist()
    ids = table.column("id").to_pylist()
    ok = pc.is_null(table.column("error")).to_pylist()
    ok_units = Counter(u for u, good in zip(units, ok) if good)
    error_units = Counter(u for u, good in zip(units, ok) if not good)
    expected = set(units) if expected_units is None else set(expected_units)
    seen = set(ok_units) | set(error_units)
    good = {u for u in ok_units if u not in error_units}
    failed = {u for u, n in error_units.items() if n == 1 and u not in ok_units}
    mixed = (set(ok_units) & set(error_units)) | {u for u, n in error_units.items() if n > 1 and u not in ok_units}
    stats = ShardStats()
    stats.counts.update(
        inputs=len(expected), inputs_ok=len(good & expected), inputs_failed=len(failed & expected),
        inputs_missing=len(expected - seen), rows=len(ids), rows_ok=sum(ok), rows_error=len(ok) - sum(ok),
        rows_with_warning=int(pc.sum(pc.is_valid(table.column("warning"))).as_py() or 0),
        duplicate_ids=len(ids) - len(set(ids)) + len(mixed & expected),
        outputs_not_in_manifest=len(seen - expected))
    stats.errors_by_type = dict(Counter(t for t in table.column("error_type").to_pylist() if t is not None))
    stats.sums = metric_sums(job, table.filter(pc.is_null(table.column("error"))))
    return stats


def _add(sums: dict[str, float], name: str, values: list) -> None:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    sums[f"{name}.sum"] = sums.get(f"{name}.sum", 0.0) + float(sum(finite))
    sums[f"{name}.n"] = sums.get(f"{name}.n", 0.0) + len(finite)


def _topk(sums: dict[str, float], ok: pa.Table) -> None:
    if "label_index" not in ok.column_names or "top_k_ids" not in ok.column_names:
        return
    labels = ok.column("label_index").to_pylist()
    tops = ok.column("top_k_ids").to_pylist()
    pairs = [(t, y) for t, y in zip(tops, labels) if y is not None and t is not None]
    sums["labelled.n"] = float(len(pairs))
    sums["top1.sum"] = float(sum(t[:1] == [y] for t, y in pairs))
    sums["top5.sum"] = float(sum(y in t[:5] for t, y in pairs))


def metric_sums(job: str, ok: pa.Table) -> dict[str, float]:
    """Sums over the shard's success rows, per job (see ``metrics`` for what they become)."""
    sums: dict[str, float] = {}
    if job == "video":
        _add(sums, "psnr_video", ok.column("psnr_video").to_pylist())
        _add(sums, "psnr_audio", ok.column("psnr_audio").to_pylist())
        _topk(sums, ok)
    elif job in ("images", "text-classify"):
        _topk(sums, ok)
    elif job == "text-fill-mask":
        sums["masks_filled.sum"] = float(sum(v or 0 for v in ok.column("num_masks").to_pylist()))
    elif job == "flow":
        _add(sums, "flow_mean_px", ok.column("flow_mean_px").to_pylist())
        gt = ok.filter(pc.equal(ok.column("has_gt"), True))
        n = np.asarray([v or 0 for v in gt.column("num_valid_px").to_pylist()], np.float64)
        sums["pairs_with_gt.n"] = float(gt.num_rows)
        sums["valid_px.n"] = float(n.sum())
        for name in ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all"):
            values = gt.column(name).to_pylist()
            sums[f"{name}.wsum"] = float(sum(v * k for v, k in zip(values, n) if v is not None and k > 0))
        _add(sums, "epe_pair", [v for v, k in zip(gt.column("epe").to_pylist(), n) if k > 0])
    return sums


def _ratio(sums: dict[str, float], num: str, den: str) -> float | None:
    d = sums.get(den, 0.0)
    return sums.get(num, 0.0) / d if d else None


def metrics(job: str, sums: dict[str, float]) -> dict[str, Any]:
    """The summary's metrics from merged sums; a metric over an empty set is None, its count beside it."""
    out: dict[str, Any] = {}
    if job == "video":
        out["psnr_video_db"] = _ratio(sums, "psnr_video.sum", "psnr_video.n")
        out["psnr_audio_db"] = _ratio(sums, "psnr_audio.sum", "psnr_audio.n")
    if job in ("video", "images", "text-classify") and sums.get("labelled.n"):
        out["labelled_items"] = int(sums["labelled.n"])
        out["top1_accuracy"] = _ratio(sums, "top1.sum", "labelled.n")
        out["top5_accuracy"] = _ratio(sums, "top5.sum", "labelled.n")
    if job == "text-fill-mask":
        out["masks_filled"] = int(sums.get("masks_filled.sum", 0))
    if job == "flow":
        out["flow_mean_px"] = _ratio(sums, "flow_mean_px.sum", "flow_mean_px.n")
        if sums.get("pairs_with_gt.n"):
            out["pairs_with_gt"] = int(sums["pairs_with_gt.n"])
            out["valid_px"] = int(sums.get("valid_px.n", 0))
            for name in ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all"):  # pixel-weighted, as Sintel/KITTI
                out[name] = _ratio(sums, f"{name}.wsum", "valid_px.n")
            out["epe_pair_mean"] = _ratio(sums, "epe_pair.sum", "epe_pair.n")
    return out
