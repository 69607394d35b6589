"""What ``--resume`` may change, checked against the run's ``run.json`` before any work.

A resumed run continues the recorded model, optimizer and schedule from its checkpoint: the optimizer state
carries the learning rate, the model config comes from ``run.json``. A changed ``--lr``, ``--preset``,
``--batch-size``, data or any other flag that shapes the model or the optimisation would therefore be half
applied at best (recorded in ``run.json``, ignored by the restored state), so it is refused, with every
differing flag named. What may change:

* ``--max-steps``, upwards only: the warm-up + cosine schedule is recomputed over the new total from the
  current step (the schedule is a function of ``max_steps``; its position comes from the checkpoint);
* flags that do not touch the maths: logging, evaluation cadence, checkpoints, export, cluster and device
  (``RUNTIME_FIELDS``).

The run's new configuration is then written to ``run.json``, so it always says what the run does.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.training.config import TrainConfig, flag_of

IDENTITY_FIELDS = frozenset({"name", "output_dir", "resume"})  # how the run is found
RUNTIME_FIELDS = frozenset({"eval_every", "eval_batches", "log_every", "checkpoint_every", "keep_checkpoints",
                            "export_dir", "use_gpu", "cpus_per_worker", "address", "max_failures",
                            "cache_data", "gradient_checkpointing"})
RAISABLE_FIELDS = frozenset({"max_steps"})


class ResumeConflict(ValueError):
    """``--resume`` with flags the run cannot take over (a usage error: exit 2, nothing written)."""


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"lr": 1e-3, "flow": {"size": [8, 8]}}`` -> ``{"lr": 1e-3, "flow.size": [8, 8]}`` (the options
    groups one level deep; ``model_config`` and ``loss_weights`` stay whole values)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and not prefix and key in ("text", "image", "flow", "video"):
            out.update(flatten(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


def _plain(value: Any) -> Any:
    """A JSON-comparable form (tuples as lists), as run.json stores it."""
    return json.loads(json.dumps(value, default=str))


def changed_fields(recorded: TrainConfig, now: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Field path -> (recorded value, new value) for every field that differs, identity fields left out."""
    before, after = flatten(_plain(recorded.to_dict())), flatten(_plain(now.to_dict()))
    return {path: (before.get(path), after.get(path)) for path in sorted(set(before) | set(after))
            if path not in IDENTITY_FIELDS and before.get(path) != after.get(path)}


def _show(value: Any, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def check_resume(recorded: TrainConfig, now: TrainConfig) -> list[str]:
    """Raise ``ResumeConflict`` naming every flag that a resume cannot apply; else the flags that change."""
    changes = changed_fields(recorded, now)
    refused = {p: v for p, v in changes.items() if p not in RUNTIME_FIELDS | RAISABLE_FIELDS}
    if "max_steps" in changes and now.max_steps < recorded.max_steps:
        refused["max_steps"] = changes["max_steps"]
    if refused:
        listed = "; ".join(f"{flag_of(p)} {_show(old)} -> {_show(new)}" for p, (old, new) in refused.items())
        raise ResumeConflict(
            f"--resume of {now.run_dir}: {listed} (run.json has the first value). A resumed run continues its "
            f"recorded model, optimizer and schedule, so only --max-steps (raised) and the logging, checkpoint "
            f"and cluster flags may change; repeat the run's other flags, or train with a new --name")
    return [flag_of(p) for p in changes]
