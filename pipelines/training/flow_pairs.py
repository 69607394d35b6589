"""Optical-flow pairs with ground truth, as flat rows for Ray Data (an adapter over ``pipelines.flow_data``).

``discover_flow_pairs(root)`` keeps the pairs that have ground truth (FlyingChairs, Sintel, KITTI, Middlebury
layouts) and tags each with ``source``, the root folder's name, for per-dataset metrics. ``load_pair`` returns
frame1, frame2 (H, W, 3) uint8, flow (H, W, 2) float32 (u, v) px and valid (H, W) bool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines import flow_data, storage
from pipelines.flow_data import read_flo  # noqa: F401  (re-exported for callers of this module)


@dataclass(frozen=True)
class FlowPair:
    frame1: str
    frame2: str
    flow: str
    source: str  # a short name for per-dataset metrics, e.g. "flyingchairs"


def source_name(root: str | Path) -> str:
    name = storage.resolve(root).name if storage.is_uri(str(root)) else Path(root).resolve().name
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "flow"


def discover_flow_pairs(root: str | Path) -> list[FlowPair]:
    """Every pair with ground truth under ``root`` (a local folder or a URI), sorted."""
    source = source_name(root)
    return [FlowPair(p.frame1_path, p.frame2_path, p.flow_path, source)
            for p in flow_data.discover_flow_pairs(root) if p.flow_path is not None]


def load_pair(pair: FlowPair) -> dict[str, np.ndarray]:
    fmt = "kitti_png" if pair.flow.lower().endswith(".png") else "flo"
    loaded = flow_data.load_pair(flow_data.FlowPair(pair.frame1, pair.frame1, pair.frame2, pair.flow, fmt, pair.source))
    return {"frame1": loaded.img1, "frame2": loaded.img2, "flow": loaded.flow, "valid": loaded.valid}
