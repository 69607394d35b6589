"""``perceiver-jobs``: bad flags, inputs, checkpoints and outputs fail with a clear message before any work.

None of these start Ray (they would take seconds, and a mistake should cost none).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import build_parser, main

DATA = Path(__file__).resolve().parents[1] / "data"
VIDEO = DATA / "videos" / "torchcodec__h265_video.mp4"
TINY_VIDEO = ["--model", "multimodal", "--random-init", "--tiny", "--no-progress"]


def fails(capsys, *args) -> str:
    import ray

    assert main([str(a) for a in args]) == 2
    assert not ray.is_initialized()
    return capsys.readouterr().err


def test_subcommands_are_registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"video", "flow", "images", "text"} <= set(sub.choices)


def test_python_dash_m_jobs_help():
    result = subprocess.run([sys.executable, "-m", "jobs", "video", "--help"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and "--clips-per-video" in result.stdout and "--address" in result.stdout


def test_missing_input(capsys, tmp_path):
    err = fails(capsys, "video", "--input", tmp_path / "nope", "--output", tmp_path / "out", *TINY_VIDEO)
    assert "does not exist" in err and not (tmp_path / "out").exists()


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    err = fails(capsys, "images", "--input", tmp_path / "empty", "--output", tmp_path / "out", "--model",
                "vision-learned", "--random-init", "--tiny")
    assert "no inputs found" in err


def test_missing_and_corrupt_checkpoints(capsys, tmp_path):
    err = fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "out", "--model", tmp_path / "nope")
    assert "model directory not found" in err
    from perceiver_core import presets

    ckpt = tmp_path / "ckpt"
    presets.config("multimodal", tiny=True).save_pretrained(ckpt)
    (ckpt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    err = fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "out", "--model", ckpt)
    assert "cannot load" in err and "corrupt" in err
    (ckpt / "config.json").write_text("{not json")
    assert "cannot load" in fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "out", "--model", ckpt)


def test_wrong_head(capsys, tmp_path):
    from perceiver_core import presets

    presets.build("optical-flow", tiny=True).save_pretrained(tmp_path / "flow_ckpt")
    err = fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "out", "--model", tmp_path / "flow_ckpt")
    assert "PerceiverForOpticalFlow" in err and "PerceiverForMultimodalAutoencoding" in err


def test_preset_without_random_init_hints(capsys, tmp_path):
    err = fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "out", "--model", "multimodal")
    assert "--random-init" in err


def test_unusable_output(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    err = fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "file", *TINY_VIDEO)
    assert "not a folder" in err
    err = fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "file" / "sub", *TINY_VIDEO)
    assert "not writable" in err or "not a folder" in err


def test_output_of_another_job(capsys, tmp_path):
    out = tmp_path / "out"
    (out / "_meta").mkdir(parents=True)
    (out / "_meta" / "job.json").write_text(json.dumps({"job": "images", "options": {}}))
    assert "another run" in fails(capsys, "video", "--input", VIDEO, "--output", out, *TINY_VIDEO)
    old = tmp_path / "old"  # the layout of earlier versions (_job.json beside the parts)
    old.mkdir()
    (old / "_job.json").write_text(json.dumps({"job": "video", "options": {}}))
    assert "older perceiver-jobs" in fails(capsys, "video", "--input", VIDEO, "--output", old, *TINY_VIDEO)
    parts = tmp_path / "parts"  # someone else's Parquet folder
    parts.mkdir()
    (parts / "part-00000000.parquet").write_bytes(b"")
    assert "no _meta/job.json" in fails(capsys, "video", "--input", VIDEO, "--output", parts, *TINY_VIDEO)


def test_flag_errors(capsys, tmp_path):
    assert "--random-init" in fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "o", "--model",
                                    "multimodal", "--tiny")
    assert "--batch-size" in fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "o", *TINY_VIDEO,
                                   "--batch-size", "0")
    labels = fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "o", *TINY_VIDEO, "--labels-file",
                   tmp_path / "labels.csv")
    assert "labels file not found" in labels


def test_more_gpus_than_the_machine_has(capsys, tmp_path):
    import torch

    if torch.cuda.device_count() >= 8:
        pytest.skip("this machine has 8 GPUs")
    err = fails(capsys, "video", "--input", VIDEO, "--output", tmp_path / "out", *TINY_VIDEO, "--num-gpus", "8")
    assert "asked for 8 GPU(s)" in err


def test_crafted_ids_stay_inside_the_output(tmp_path):
    from pipelines.batch.model_workers import save_picture

    out = tmp_path / "out"
    for item_id in ("../../escape", "/etc/passwd", "..", "a/../../b\x00c"):
        rel = save_picture(str(out), item_id, lambda: b"png")
        path = (out / rel).resolve()
        assert path.is_file() and path.is_relative_to(out.resolve() / "_pictures")
    assert not (tmp_path / "escape.png").exists()
