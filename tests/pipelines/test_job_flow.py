"""End to end: ``perceiver-jobs flow`` on local Ray with the tiny flow preset.

Sintel frames (1024x436, tests/data/flow/sintel) in the MPI-Sintel layout with a synthetic ``.flo`` ground
truth (FlyingChairs/KITTI/Middlebury are not redistributable), a pair with a truncated frame, and
consecutive frames of a video plus an empty video.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from _job_helpers import (
    DATA,
    TINY,
    check_output,
    check_rerun_adds_nothing,
    manifest_ids,
    run_cli,
    summary,
)

from pipelines import schemas
from pipelines.flow_data import read_flo, write_flo

H, W = 436, 1024
GT_FLOW = (1.5, -0.5)
UNKNOWN = (slice(0, 10), slice(0, 20))  # Middlebury's unknown marker (1.67e9): masked, never scored


@pytest.fixture(scope="module")
def flow_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flow")
    clean = tmp / "sintel" / "training" / "clean" / "alley_1"
    clean.mkdir(parents=True)
    for name in ("frame_0016.png", "frame_0017.png"):
        shutil.copy(DATA / "flow" / "sintel" / name, clean / name)
    gt = np.broadcast_to(np.float32(GT_FLOW), (H, W, 2)).copy()
    gt[UNKNOWN] = 1.67e9
    (tmp / "sintel" / "training" / "flow" / "alley_1").mkdir(parents=True)
    write_flo(tmp / "sintel" / "training" / "flow" / "alley_1" / "frame_0016.flo", gt)
    bad = tmp / "sintel" / "training" / "clean" / "broken_1"
    bad.mkdir()
    shutil.copy(DATA / "images" / "edge_cases" / "hopper.jpg", bad / "frame_0001.png")
    shutil.copy(DATA / "images" / "edge_cases" / "truncated_image.png", bad / "frame_0002.png")
    out = tmp / "out"
    args = ["flow", "--input", tmp / "sintel" / "training", DATA / "videos" / "torchcodec__h265_video.mp4",
            DATA / "videos" / "broken" / "moviepy__result_empty.webm", "--output", out, "--model", "optical-flow",
            *TINY, "--max-pairs", "2", "--tiles-per-call", "64", "--pictures"]
    assert run_cli(*args) == 0
    return out, args


def test_every_pair_accounted_once(flow_run):
    out, _ = flow_run
    check_output(out, schemas.FLOW, manifest_ids(out), "input_id")
    assert len(manifest_ids(out)) == 4  # Sintel pair, broken pair, video, empty video


def test_rows(flow_run):
    out, _ = flow_run
    rows = check_output(out, schemas.FLOW, manifest_ids(out), "input_id").to_pylist()
    sintel = [r for r in rows if r["layout"] == "sintel" and r["error"] is None]
    video = sorted((r for r in rows if r["layout"] == "video" and r["error"] is None), key=lambda r: r["pair_index"])
    errors = {r["error_type"]: r for r in rows if r["error"] is not None}
    assert set(errors) == {"truncated", "empty_file"}
    assert errors["truncated"]["source2"].endswith("frame_0002.png")
    (pair,) = sintel
    assert (pair["height"], pair["width"]) == (H, W) and pair["source2"].endswith("frame_0017.png")
    flow = read_flo(out / pair["flow_path"])  # the sidecar: full-size flow in pixels
    assert flow.shape == (H, W, 2) and np.isfinite(flow).all()
    assert pair["has_gt"] and pair["num_valid_px"] == H * W - 10 * 20
    expected_epe = np.linalg.norm(flow - np.float32(GT_FLOW), axis=-1)
    expected_epe[UNKNOWN] = np.nan
    assert math.isclose(pair["epe"], np.nanmean(expected_epe), rel_tol=1e-4)
    assert 0 <= pair["acc_1px"] <= pair["acc_3px"] <= pair["acc_5px"] <= 1 and pair["fl_all"] is not None
    assert math.isclose(pair["flow_mean_px"], np.linalg.norm(flow, axis=-1).mean(), rel_tol=1e-4)
    assert (out / pair["picture"]).is_file()
    assert [r["pair_index"] for r in video] == [0, 1]
    for r in video:
        assert r["id"] == f"{r['input_id']}:{r['pair_index']}" and not r["has_gt"] and r["epe"] is None
        assert read_flo(out / r["flow_path"]).shape == (r["height"], r["width"], 2) == (128, 128, 2)
    metrics = summary(out)["metrics"]
    assert metrics["pairs_with_gt"] == 1 and math.isclose(metrics["epe"], pair["epe"], rel_tol=1e-5)


def test_rerun_adds_nothing(flow_run):
    check_rerun_adds_nothing(*flow_run)
