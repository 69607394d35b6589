"""``perceiver-jobs train`` through ``jobs.cli.main``: usage errors are one line on stderr and exit 2 before a run
folder exists, a failed start leaves no folder in the way of the corrected command, ``--resume`` applies what
the run can take over and refuses the rest, and a trained image classifier carries its input size to the
``images`` batch job.

The runs are tiny models in Ray Train's local mode (``--num-workers 0``), a step or two each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from jobs.cli import main
from pipelines.training.config import option_flags
from pipelines.training.reporting import read_metrics_csv

DATA = Path(__file__).resolve().parents[1] / "data"
ENG = DATA / "text" / "udhr" / "eng.txt"
NATURAL = DATA / "images" / "natural"


def train(*args) -> int:
    return main(["train", *(str(a) for a in args)])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("perceiver-jobs train: error: "), err
    return err


def mlm_flags(runs: Path, *extra) -> list:
    return ["--task", "mlm", "--tiny", "--data", ENG, "--output-dir", runs, "--name", "r", "--num-workers", "0",
            "--batch-size", "2", "--warmup-steps", "1", "--log-every", "1", "--checkpoint-every", "2", *extra]


@pytest.mark.parametrize("flags, message", [
    (["--task", "mlm", "--preset", "nope"], "unknown --preset 'nope'; choose from language, "),
    (["--task", "image-classification", "--preset", "language"],
     "--preset language (PerceiverForMaskedLM) does not fit --task image-classification; choose from "
     "vision-fourier, vision-learned, vision-conv"),
    (["--task", "mlm", "--text-column", "body", "--packing", "pack", "--mask-prob", "1.5"], "mask_prob"),
])
def test_usage_errors_are_one_line_before_any_run_folder(capsys, tmp_path, flags, message):
    runs = tmp_path / "runs"
    assert train(*flags, "--data", ENG, "--output-dir", runs, "--name", "r") == 2
    assert message in one_line_error(capsys)
    assert not runs.exists()


def test_a_failed_start_leaves_no_folder_in_the_way(ray_session, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert train(*mlm_flags(runs, "--max-steps", "1"), "--data", tmp_path / "missing.txt") == 2
    assert "missing.txt" in one_line_error(capsys) and not (runs / "r").exists()
    # a batch larger than the corpus fails in the worker, after run.json was written: the folder goes again
    with pytest.raises(Exception, match="no full batch"):
        train(*mlm_flags(runs, "--max-steps", "1", "--batch-size", "100000"))
    assert not (runs / "r").exists()
    assert train(*mlm_flags(runs, "--max-steps", "1")) == 0  # the corrected command is not refused
    assert (runs / "r" / "final" / "config.json").is_file()


def test_resume_raises_max_steps_and_refuses_other_changes(ray_session, tmp_path, capsys):
    runs = tmp_path / "runs"
    run = runs / "r"
    assert train(*mlm_flags(runs, "--max-steps", "2")) == 0
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}

    # hyperparameters that shape the optimisation: refused, every one named, nothing written
    assert train(*mlm_flags(runs, "--max-steps", "4", "--lr", "0.001", "--batch-size", "4"), "--resume") == 2
    err = one_line_error(capsys)
    assert "--lr 0.0005 -> 0.001" in err and "--batch-size 2 -> 4" in err and "--max-steps 2" not in err
    assert train(*mlm_flags(runs, "--max-steps", "1"), "--resume") == 2  # max-steps may only rise
    assert "--max-steps 2 -> 1" in one_line_error(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before

    # a run folder of an earlier version (flat train_config in run.json) resumes too
    record = json.loads((run / "run.json").read_text())
    nested = record["train_config"]
    flat = {k: v for k, v in nested.items() if k not in ("text", "image", "flow", "video")}
    for (group, option), flag in option_flags().items():
        flat[flag[2:].replace("-", "_")] = nested[group][option]
    (run / "run.json").write_text(json.dumps({**record, "train_config": {**flat, "fail_at_step": None,
                                                                         "fail_mode": "raise"}}))

    # a raised --max-steps (and another log cadence) is applied and recorded
    assert train(*mlm_flags(runs, "--max-steps", "3"), "--resume") == 0
    record = json.loads((run / "run.json").read_text())
    assert record["train_config"]["max_steps"] == 3 and record["train_config"]["text"]["column"] == "text"
    rows = [r for r in read_metrics_csv(run / "metrics.csv") if r["split"] == "train"]
    assert [(r["attempt"], r["step"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "3")]
    state = json.loads((run / "checkpoint_00000003" / "trainer_state.json").read_text())
    assert (state["step"], state["attempt"]) == (3, 2)


def im_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def test_images_job_takes_the_trained_image_size(ray_session, tmp_path):
    """Training writes preprocessor_config.json at --image-size; the images job, given no --image-size, runs the
    model on 64-pixel inputs: its scores equal a direct model call on the image processed at 64 pixels."""
    from perceiver_core import PerceiverImageProcessor, load_pretrained
    from pipelines.stages.images import processor_config_for

    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        shutil.copy(NATURAL / f"{name}.png", images / f"{name}.png")
    (images / "labels.csv").write_text("file,label\nastronaut.png,person\nchelsea.png,cat\ncoffee.png,cup\n")
    runs = tmp_path / "runs"
    assert train("--task", "image-classification", "--tiny", "--data", images, "--image-size", "64",
                 "--max-steps", "1", "--batch-size", "2", "--warmup-steps", "0", "--num-workers", "0",
                 "--output-dir", runs, "--name", "img") == 0
    final = runs / "img" / "final"
    saved = json.loads((final / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": 64, "width": 64} and saved["crop_size"] == {"height": 73, "width": 73}

    out = tmp_path / "out"
    assert main(["images", "--input", str(images), "--output", str(out), "--model", str(final), "--batch-size", "2",
                 "--num-workers", "1"]) == 0
    assert json.loads((out / "_meta" / "job.json").read_text())["options"]["image_size"] == [64, 64]
    model = load_pretrained(final).eval()
    processor = PerceiverImageProcessor.from_pretrained(final)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 3
    moved = []
    for row in rows:
        pixels = processor(im_rgb(images / Path(row["source"]).name), return_tensors="pt")["pixel_values"]
        assert pixels.shape[-2:] == (64, 64)
        with torch.inference_mode():
            scores, ids = model(inputs=pixels).logits.double().softmax(-1)[0].topk(3)
        assert row["top_k_ids"] == ids.tolist()
        assert row["top_k_scores"] == pytest.approx(scores.tolist(), abs=1e-6)
        assert row["top_k_labels"] == [model.config.id2label[i] for i in ids.tolist()]
        with torch.inference_mode():  # the reference can tell the sizes apart: at 224 pixels the scores differ
            at_224 = model(inputs=PerceiverImageProcessor()(im_rgb(images / Path(row["source"]).name),
                                                            return_tensors="pt")["pixel_values"])
        moved.append(float((at_224.logits.double().softmax(-1)[0][ids] - scores).abs().max()))
    assert min(moved) > 1e-5, moved  # (about 3e-4, against the 1e-6 tolerance above)
    assert processor_config_for(str(final), model.config, 48).size == (48, 48)  # an explicit --image-size wins
