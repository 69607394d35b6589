"""Shared helpers for the training tests."""

from pathlib import Path

from pipelines.readers.flow_data import write_flo
from pipelines.training.synthetic_flow import SyntheticFlowSpec, make_pair


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
        write_flo(root / f"{i:05d}_flow.flo", flow)
    return root
