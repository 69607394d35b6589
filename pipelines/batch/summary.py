"""The end-of-job summary: counts, the exactly-once check, throughput and metrics, merged from shard stats.

The counts and metrics come from the committed shards' ``accounting.ShardStats`` (computed by the workers
from the rows they wrote), so a resumed job's summary covers all of its runs and the driver never reads
rows. ``complete``: every shard committed, no input missing, none twice.

``labels`` (jobs with a labels file): how its entries matched the inputs when the manifest was written
(``pipelines.readers.labels.LabelMapper.report``): inputs with a usable label, without one, and those whose
label the model does not know (a class name not in ``config.label2id``, an index outside
``0..num_labels-1``). Those count as unlabelled: they are left out of the accuracy, never counted wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipelines.batch.accounting import ShardStats, metrics
from pipelines.batch.work_plan import PlanInfo


@dataclass
class Summary:
    job: str
    counts: dict[str, int]
    complete: bool
    errors_by_type: dict[str, int]
    run: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def all_failed(self) -> bool:
        return self.complete and self.counts["inputs"] > 0 and self.counts["inputs_ok"] == 0

    def failure_reason(self) -> str:
        top = sorted(self.errors_by_type.items(), key=lambda kv: -kv[1])[:3]
        kinds = ", ".join(f"{k} x{v}" for k, v in top) or "no rows"
        return f"every one of the {self.counts['inputs']} inputs failed ({kinds})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"

    def table(self) -> str:
        """A plain two-column table for the terminal."""
        rows: list[tuple[str, str]] = [("job", self.job)]
        rows += [(k, str(v)) for k, v in self.counts.items()]
        rows.append(("complete (each input exactly once)", "yes" if self.complete else "NO"))
        rows += [(f"errors: {k}", str(v)) for k, v in sorted(self.errors_by_type.items())]
        for key in ("processed_this_run", "wall_time_s", "items_per_s"):
            if key in self.run:
                rows.append((key, _fmt(self.run[key])))
        rows += [(k, _fmt(v)) for k, v in self.metrics.items()]
        rows += [(f"labels: {k.replace('_', ' ')}", str(v)) for k, v in self.labels.get("counts", {}).items()]
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


def summarize(job: str, stats: ShardStats, *, plan: PlanInfo, committed_shards: int, items_are_inputs: bool,
              processed_shards: int, processed_inputs: int, wall_time_s: float,
              command: list[str] | None = None, compute: str = "",
              model: str = "", footers_read: int = 0, driver_bytes_received: int = 0,
              labels: dict[str, Any] | None = None) -> Summary:
    counts = dict(stats.counts)
    shards_missing = plan.num_shards - committed_shards
    if items_are_inputs:  # the inputs of shards not committed yet are missing
        missing_items = plan.num_items - counts["inputs"]
        counts["inputs"] = plan.num_items
        counts["inputs_missing"] += missing_items
    counts["shards"] = plan.num_shards
    counts["shards_missing"] = shards_missing
    complete = shards_missing == 0 and counts["inputs_missing"] == 0 and counts["duplicate_ids"] == 0
    run = {
        "command": command,
        "model": model,
        "compute": compute,
        "processed_this_run": processed_inputs,
        "shards_this_run": processed_shards,
        "wall_time_s": round(wall_time_s, 3),
        "items_per_s": processed_inputs / wall_time_s if processed_inputs and wall_time_s > 0 else None,
        "footers_read": footers_read,
        "driver_bytes_received": driver_bytes_received,
    }
    return Summary(job=job, counts=counts, complete=complete, errors_by_type=dict(stats.errors_by_type), run=run,
                   metrics=metrics(job, stats.sums), labels=dict(labels or {}))
