"""Tiny real jobs through the CLI: progress lines without a terminal, labels given as class names or as indices
the model does not have, and a run whose output carries none of Ray's or NumPy's known noise.

The in-process runs share the module's local Ray (``ray_local``); the noise check runs ``python -m jobs`` as
a subprocess with its own Ray, as a user would, and reads everything it printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"
IMAGES = ["natural/chelsea.png", "natural/coffee.png", "natural/astronaut.png", "edge_cases/hopper.jpg"]
TINY_IMAGES = ["--model", "vision-learned", "--random-init", "--tiny", "--num-workers", "1", "--batch-size", "2"]
PROGRESS = re.compile(r"^progress: (\d+)/(\d+) shards, (\d+)/(\d+) inputs(, [\d.]+ inputs/s)?, (eta|done in) \S+$",
                      re.MULTILINE)
NOISE = ("Token authentication is enabled", "constructor arguments in the object store", "not writable",
         "Progress bars disabled", "Total Progress", "Progress will be logged")


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in IMAGES:
        shutil.copy(DATA / "images" / name, folder)
    return folder


def run(*args) -> int:
    return main([str(a) for a in args])


def rows_by_name(out: Path) -> dict[str, dict]:
    return {r["source"].rsplit("/", 1)[-1]: r for r in pq.read_table(out).to_pylist()}


def summary(out: Path) -> dict:
    return json.loads((out / "_summary.json").read_text())


def test_label_names_and_progress_lines(ray_local, images, tmp_path, capsys, caplog):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nchelsea.png,LABEL_3\ncoffee.png,label 7\nastronaut.png,zebra\n")
    out = tmp_path / "out"
    assert run("images", "--input", images, "--output", out, *TINY_IMAGES, "--labels-file", labels,
               "--progress-interval", "0.2") == 0
    rows = rows_by_name(out)
    assert {n: r["label_index"] for n, r in rows.items()} == {"chelsea.png": 3, "coffee.png": 7,
                                                              "astronaut.png": None, "hopper.jpg": None}
    s = summary(out)
    assert s["labels"]["counts"] == {"labelled": 2, "without_label": 1, "unknown_name": 1, "out_of_range": 0}
    assert s["labels"]["kind"] == "name"
    labelled = [r for r in rows.values() if r["label_index"] is not None]
    assert s["metrics"]["labelled_items"] == 2
    assert s["metrics"]["top1_accuracy"] == sum(r["top_k_ids"][0] == r["label_index"] for r in labelled) / 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "labels file" in r.getMessage()]
    assert len(warnings) == 1 and "'zebra' (astronaut.png)" in warnings[0] and "LABEL_0" in warnings[0]

    captured = capsys.readouterr()
    plan = json.loads((out / "_meta" / "job.json").read_text())["plan"]
    shards = -(-plan["num_items"] // plan["shard_size"])
    lines = PROGRESS.findall(captured.err)
    assert lines, captured.err
    assert all((int(total_shards), int(total_inputs)) == (shards, len(IMAGES))
               for _, total_shards, _, total_inputs, _, _ in lines)
    assert lines[0][0] == "0" and lines[-1][0] == str(shards) and lines[-1][5] == "done in"
    assert "labels: unknown name" in captured.out  # the summary table says so too


def test_label_indices_outside_the_model_are_unlabelled(ray_local, images, tmp_path, caplog):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label_index\nchelsea.png,3\ncoffee.png,42\nastronaut.png,-1\n")  # 10 classes
    out = tmp_path / "out"
    args = ["images", "--input", images, "--output", out, *TINY_IMAGES, "--labels-file", labels, "--no-progress"]
    assert run(*args) == 0
    rows = rows_by_name(out)
    assert [rows[n]["label_index"] for n in ("chelsea.png", "coffee.png", "astronaut.png")] == [3, None, None]
    s = summary(out)
    counts = {"labelled": 1, "without_label": 1, "unknown_name": 0, "out_of_range": 2}
    assert s["labels"]["counts"] == counts
    assert s["metrics"]["labelled_items"] == 1  # 42 and -1 are not scored as wrong predictions
    assert s["metrics"]["top1_accuracy"] == float(rows["chelsea.png"]["top_k_ids"][0] == 3)
    assert any("class index outside 0..9" in r.getMessage() and "42 (coffee.png)" in r.getMessage()
               for r in caplog.records)
    assert run(*args) == 0  # a rerun (nothing to do) still reports them: they are recorded in job.json
    assert summary(out)["labels"]["counts"] == counts and summary(out)["run"]["processed_this_run"] == 0


def write_flo(path: Path, flow: np.ndarray) -> None:
    """Middlebury .flo, written here from the format (magic, width, height, float32 (u, v) rows)."""
    h, w, _ = flow.shape
    path.write_bytes(b"PIEH" + np.array([w, h], "<i4").tobytes() + flow.astype("<f4").tobytes())


def test_a_run_prints_no_known_noise(tmp_path):
    """A flow job with ground truth (its .flo fields reach torch as read-only buffers) and pictures, in a
    subprocess with its own local Ray and without a terminal: progress lines, and none of the noise."""
    rng = np.random.default_rng(0)
    clean, flow = tmp_path / "sintel" / "training" / "clean" / "scene_1", tmp_path / "sintel" / "training" / "flow"
    clean.mkdir(parents=True)
    (flow / "scene_1").mkdir(parents=True)
    for name in ("frame_0001.png", "frame_0002.png"):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(clean / name)
    write_flo(flow / "scene_1" / "frame_0001.flo", np.full((40, 56, 2), 0.5, np.float32))
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray's default, as users get it
    result = subprocess.run(
        [sys.executable, "-m", "jobs", "flow", "--input", str(tmp_path / "sintel" / "training"), "--output",
         str(out), "--model", "optical-flow", "--random-init", "--tiny", "--num-workers", "1", "--pictures",
         "--progress-interval", "0.5"],
        capture_output=True, text=True, timeout=600, check=False, env=env)
    printed = result.stdout + result.stderr
    assert result.returncode == 0, printed
    for noise in NOISE:
        assert noise not in printed, (noise, printed)
    assert summary(out)["counts"]["inputs_ok"] == 1 and summary(out)["metrics"]["pairs_with_gt"] == 1
    lines = PROGRESS.findall(result.stderr)
    assert lines and all(total_inputs == "1" for _, _, _, total_inputs, _, _ in lines), result.stderr


def test_read_only_arrays_reach_torch_without_warnings():
    """The numpy arrays the workers get from Arrow buffers and np.frombuffer are read-only; the metric and
    picture code must not hand them to torch as they are (torch warns once per process; hence a subprocess)."""
    code = """if True:
        import numpy as np
        from pipelines import metrics
        from pipelines.stages import pictures
        def read_only(a):
            return np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape)
        flow = read_only(np.ones((4, 5, 2), np.float32))
        valid = read_only(np.ones((4, 5), np.bool_))
        frames = read_only(np.zeros((2, 4, 5, 3), np.uint8))
        metrics.flow_error_sums(flow, flow, valid)
        pictures.flow_image(flow, valid)
        pictures.clip_strip(frames, frames)
        print("ok")
    """
    result = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
