"""Shared helpers for the training tests."""

from pathlib import Path

import numpy as np

from pipelines.training.synthetic_flow import SyntheticFlowSpec, make_pair


def _write_flo(path, flow):
    h, w = flow.shape[:2]
    with open(path, "wb") as fh:
        np.array([202021.25], np.float32).tofile(fh)
        np.array([w, h], np.int32).tofile(fh)
        flow.astype(np.float32).tofile(fh)


def write_flow_pairs(root: Path, n: int = 2, size=(40, 56)) -> Path:
    """FlyingChairs-layout pairs from the synthetic generator: <i>_img1.ppm, <i>_img2.ppm, <i>_flow.flo."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pair = make_pair(SyntheticFlowSpec(height=size[0], width=size[1]), 100 + i)
        Image.fromarray(pair["frame1"]).save(root / f"{i:05d}_img1.ppm")
        Image.fromarray(pair["frame2"]).save(root / f"{i:05d}_img2.ppm")
        flow = pair["flow"].copy()
        flow[0, 0] = 1.7e9  # Middlebury's "unknown"
        _write_flo(root / f"{i:05d}_flow.flo", flow)
    return root
