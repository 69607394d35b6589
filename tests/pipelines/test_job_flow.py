"""End to end: ``perceiver-jobs flow`` on local Ray with the tiny flow preset.

Sintel frames (1024x436, tests/data/flow/sintel) in the MPI-Sintel layout with a synthetic ``.flo`` ground
truth (FlyingChairs/KITTI/Middlebury are not redistributable), a pair with a truncated frame, and
consecutive frames of a video plus an empty video. Metrics are checked against numpy on the flow sidecars;
a second run has ground truth without a single valid pixel (KITTI and ``.flo``).
"""

from __future__ import annotations

import functools
import math
import shutil

import numpy as np
import pytest
import torch
from _job_helpers import (
    DATA,
    TINY,
    check_output,
    check_rerun_adds_nothing,
    manifest_ids,
    part_names,
    read_output,
    run_cli,
    run_killed_and_rerun,
    summary,
)
from PIL import Image

from pipelines.batch import schemas
from pipelines.readers.flow_data import read_flo, write_flo, write_kitti_flow_png

H, W = 436, 1024
GT_FLOW = (1.5, -0.5)
UNKNOWN = (slice(0, 10), slice(0, 20))  # Middlebury's unknown marker (1.67e9): masked, never scored
REDONE = 2  # parts deleted to simulate a killed run
MODEL = ["--model", "optical-flow", *TINY]


def build_sintel_tree(tmp, crop: tuple[int, int] | None = None):
    """training/clean/alley_1 (+ GT in training/flow/alley_1) and training/clean/broken_1 (truncated frame 2).
    ``crop``: (h, w) of the top-left corner of the Sintel frames to use (small runs)."""
    clean = tmp / "sintel" / "training" / "clean" / "alley_1"
    clean.mkdir(parents=True)
    h, w = crop or (H, W)
    for name in ("frame_0016.png", "frame_0017.png"):
        if crop is None:
            shutil.copy(DATA / "flow" / "sintel" / name, clean / name)
        else:
            Image.open(DATA / "flow" / "sintel" / name).crop((0, 0, w, h)).save(clean / name)
    gt = np.broadcast_to(np.float32(GT_FLOW), (h, w, 2)).copy()
    gt[UNKNOWN] = 1.67e9
    (tmp / "sintel" / "training" / "flow" / "alley_1").mkdir(parents=True)
    write_flo(tmp / "sintel" / "training" / "flow" / "alley_1" / "frame_0016.flo", gt)
    bad = tmp / "sintel" / "training" / "clean" / "broken_1"
    bad.mkdir()
    shutil.copy(DATA / "images" / "edge_cases" / "hopper.jpg", bad / "frame_0001.png")
    shutil.copy(DATA / "images" / "edge_cases" / "truncated_image.png", bad / "frame_0002.png")
    return tmp / "sintel" / "training"


@pytest.fixture(scope="module")
def flow_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flow")
    out = tmp / "out"
    args = ["flow", "--input", build_sintel_tree(tmp), DATA / "videos" / "torchcodec__h265_video.mp4",
            DATA / "videos" / "broken" / "moviepy__result_empty.webm", "--output", out, *MODEL,
            "--max-pairs", "2", "--tiles-per-call", "64", "--pictures"]
    kept = run_killed_and_rerun(args, out, REDONE)  # some shards committed, no _SUCCESS
    return out, args, kept


def test_every_pair_accounted_once(flow_run):
    out, _, _ = flow_run
    check_output(out, schemas.FLOW, manifest_ids(out), "input_id")
    assert len(manifest_ids(out)) == 4  # Sintel pair, broken pair, video, empty video


def test_resume_redoes_only_the_missing_parts(flow_run):
    out, _, kept = flow_run
    s = summary(out)
    assert s["run"]["processed_this_run"] == REDONE and s["counts"]["shards"] == 4
    assert len(part_names(out)) == 4 and set(kept) < part_names(out)
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # not rewritten


def expected_metrics(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """EPE, n-px accuracy and KITTI Fl-all over the valid pixels, straight from the definitions."""
    epe = np.linalg.norm(flow.astype(np.float64) - gt, axis=-1)[valid]
    norm = np.linalg.norm(gt.astype(np.float64), axis=-1)[valid]
    return {"epe": epe.mean(), "acc_1px": (epe < 1).mean(), "acc_3px": (epe < 3).mean(),
            "acc_5px": (epe < 5).mean(), "fl_all": ((epe > 3) & (epe > 0.05 * norm)).mean()}


def test_rows(flow_run):
    out, _, _ = flow_run
    rows = check_output(out, schemas.FLOW, manifest_ids(out), "input_id").to_pylist()
    sintel = [r for r in rows if r["layout"] == "sintel" and r["error"] is None]
    video = sorted((r for r in rows if r["layout"] == "video" and r["error"] is None),
                   key=lambda r: r["pair_index"])
    errors = {r["error_type"]: r for r in rows if r["error"] is not None}
    assert set(errors) == {"truncated", "empty_file"}
    assert errors["truncated"]["source2"].endswith("frame_0002.png")
    (pair,) = sintel
    assert (pair["height"], pair["width"]) == (H, W) and pair["source2"].endswith("frame_0017.png")
    flow = read_flo(out / pair["flow_path"])  # the sidecar: full-size flow in pixels
    assert flow.shape == (H, W, 2) and np.isfinite(flow).all()
    assert pair["has_gt"] and pair["num_valid_px"] == H * W - 10 * 20
    valid = np.ones((H, W), bool)
    valid[UNKNOWN] = False
    expected = expected_metrics(flow, np.broadcast_to(np.float32(GT_FLOW), (H, W, 2)), valid)
    for name, value in expected.items():
        assert math.isclose(pair[name], value, rel_tol=1e-4, abs_tol=1e-6), (name, pair[name], value)
    assert math.isclose(pair["flow_mean_px"], np.linalg.norm(flow, axis=-1).mean(), rel_tol=1e-4)
    assert math.isclose(pair["flow_max_px"], np.linalg.norm(flow, axis=-1).max(), rel_tol=1e-4)
    assert (out / pair["picture"]).is_file() and pair["picture"].startswith("_pictures/")
    assert [r["pair_index"] for r in video] == [0, 1]
    for r in video:
        assert r["id"] == f"{r['input_id']}:{r['pair_index']}" and not r["has_gt"] and r["epe"] is None
        assert read_flo(out / r["flow_path"]).shape == (r["height"], r["width"], 2) == (128, 128, 2)
    metrics = summary(out)["metrics"]
    assert metrics["pairs_with_gt"] == 1 and metrics["valid_px"] == H * W - 200
    for name in expected:  # one pair with GT: the pixel-weighted means are its own
        assert math.isclose(metrics[name], pair[name], rel_tol=1e-5), name
    assert math.isclose(metrics["epe_pair_mean"], pair["epe"], rel_tol=1e-5)


def test_rerun_adds_nothing(flow_run):
    out, args, _ = flow_run
    check_rerun_adds_nothing(out, args)


def test_ground_truth_without_valid_pixels(ray_local, tmp_path):
    """KITTI GT with every validity bit 0 and a .flo of Middlebury unknowns: the pairs are scored on no
    pixel, so their metrics (and the summary's) are null, with the counts beside them."""
    h, w = 32, 48  # the tiny model's tile
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name in ("kitti/training/image_2/000000_10.png", "kitti/training/image_2/000000_11.png",
                 "chairs/00001-img0.ppm", "chairs/00001-img1.ppm"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
    (root / "kitti/training/flow_occ").mkdir()
    write_kitti_flow_png(root / "kitti/training/flow_occ/000000_10.png", np.ones((h, w, 2)),
                         np.zeros((h, w), bool))  # every validity bit 0
    write_flo(root / "chairs/00001-gt.flo", np.full((h, w, 2), 1.67e9, np.float32))
    out = tmp_path / "out"
    assert run_cli("flow", "--input", root, "--output", out, *MODEL) == 0
    rows = check_output(out, schemas.FLOW, manifest_ids(out), "input_id").to_pylist()
    assert sorted(r["layout"] for r in rows) == ["flyingchairs", "kitti"]
    for r in rows:
        assert r["error"] is None and r["has_gt"] and r["num_valid_px"] == 0
        assert all(r[name] is None for name in ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all"))
        frames = [np.asarray(Image.open(root / name)) for name in
                  {"kitti": ("kitti/training/image_2/000000_10.png", "kitti/training/image_2/000000_11.png"),
                   "flyingchairs": ("chairs/00001-img0.ppm", "chairs/00001-img1.ppm")}[r["layout"]]]
        flow = flo_file(out / r["flow_path"])  # one tile: the model's output itself, not a blend
        np.testing.assert_allclose(flow, direct_flow(*frames), **FLOW_TOL)
        assert math.isclose(r["flow_mean_px"], float(np.linalg.norm(flow, axis=-1).mean()), rel_tol=1e-5)
    s = summary(out)
    assert s["complete"] and s["metrics"]["pairs_with_gt"] == 2 and s["metrics"]["valid_px"] == 0
    assert all(s["metrics"][name] is None for name in ("epe", "acc_1px", "fl_all", "epe_pair_mean"))
    assert math.isclose(s["metrics"]["flow_mean_px"], np.mean([r["flow_mean_px"] for r in rows]), rel_tol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Flow fields against the model: the .flo sidecars (read below, not with pipelines.readers.flow_data) compared
# with the same seeded tiny model run here on frames decoded with Pillow / PyAV and turned into the model's
# input by the few lines of ``patch_features`` (not pipelines.stages.flow_tiling).
TILE = (32, 48)  # the tiny preset's train_size: the model's input size
CORNER = (16, 24)  # the corner region of a frame that only its corner tile covers (see test_flow_sidecars_...)
# The random tiny model predicts flows of ~1e-4 px (its decoder divides by 100): compared relatively, to float32
# precision (1e-4); a swapped pair or a one-pixel shift changes them by 0.5 % and 1.4 %.
FLOW_TOL = {"rtol": 1e-4, "atol": 1e-9}


def flo_file(path) -> np.ndarray:
    """A Middlebury .flo file: b"PIEH", int32 width and height, then (H, W, 2) float32, little-endian."""
    data = np.fromfile(path, np.uint8)
    assert data[:4].tobytes() == b"PIEH"
    width, height = np.frombuffer(data[4:12].tobytes(), "<i4")
    return np.frombuffer(data[12:].tobytes(), "<f4").reshape(height, width, 2)


def patch_features(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (27, H, W): the frame scaled to [-1, 1], each pixel's 3 x 3 neighbourhood (zeros
    outside), features ordered (row, column, colour) as DeepMind's ``patches_for_flow``."""
    h, w, _ = frame.shape
    padded = np.pad(frame.astype(np.float32) / 255 * 2 - 1, ((1, 1), (1, 1), (0, 0)))
    return np.stack([padded[dy:dy + h, dx:dx + w, c] for dy in range(3) for dx in range(3) for c in range(3)])


@functools.lru_cache(maxsize=1)
def tiny_flow_model():
    from pipelines.batch.model_workers import ModelSpec

    return ModelSpec("optical-flow", random_init=True, tiny=True).load()  # seed 0: the job's weights


def direct_flow(frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
    """(H, W, 2) flow of one model-sized pair, in this process."""
    inputs = torch.from_numpy(np.stack([patch_features(frame1), patch_features(frame2)]))[None]
    with torch.inference_mode():
        return tiny_flow_model()(inputs=inputs).logits[0].numpy()


def assert_corners_match(flow: np.ndarray, frame1: np.ndarray, frame2: np.ndarray) -> None:
    """The top-left and bottom-right corner regions of a tiled flow equal the model on the corner tiles."""
    (th, tw), (ch, cw) = TILE, CORNER
    top_left = direct_flow(frame1[:th, :tw], frame2[:th, :tw])
    np.testing.assert_allclose(flow[:ch, :cw], top_left[:ch, :cw], **FLOW_TOL)
    bottom_right = direct_flow(frame1[-th:, -tw:], frame2[-th:, -tw:])
    np.testing.assert_allclose(flow[-ch:, -cw:], bottom_right[-ch:, -cw:], **FLOW_TOL)


def test_flow_sidecars_equal_the_model_on_decoded_frames(flow_run):
    """Tiles of 32 x 48 with at least 8 px overlap start at rows 0, 24, ... and columns 0, 39, ... of a 436 x 1024
    Sintel frame (0, 24, ...; 0, 40, 80 of a 128 x 128 video frame), and the last ones end at the frame's edge
    at least 24 rows / 39 columns after the previous ones: the corner 16 x 24 pixels are the corner tile's
    prediction alone, whatever the blending. A swapped pair, channel order, colour scale or frame index in the
    stage or the worker changes them."""
    import av

    out, _, _ = flow_run
    rows = read_output(out).to_pylist()
    (pair,) = [r for r in rows if r["layout"] == "sintel" and r["error"] is None]
    frames = [np.asarray(Image.open(DATA / "flow" / "sintel" / n).convert("RGB"))
              for n in ("frame_0016.png", "frame_0017.png")]
    flow = flo_file(out / pair["flow_path"])
    assert flow.shape == (H, W, 2)
    assert_corners_match(flow, *frames)
    assert math.isclose(pair["flow_mean_px"], float(np.linalg.norm(flow, axis=-1).mean()), rel_tol=1e-5)
    with av.open(str(DATA / "videos" / "torchcodec__h265_video.mp4")) as container:
        video = [f.to_ndarray(format="rgb24") for _, f in zip(range(3), container.decode(video=0))]
    pairs = sorted((r for r in rows if r["layout"] == "video" and r["error"] is None), key=lambda r: r["pair_index"])
    assert [r["pair_index"] for r in pairs] == [0, 1]
    for r in pairs:  # pair i: frames i and i + 1
        assert_corners_match(flo_file(out / r["flow_path"]), video[r["pair_index"]], video[r["pair_index"] + 1])
