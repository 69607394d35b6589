"""Every task end to end in Ray Train's local mode (in-process, real Ray Data), a few steps each."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _training_helpers import write_flow_pairs

from perceiver_core import load_pretrained
from pipelines.training.checkpointing import is_complete
from pipelines.training.config import TrainConfig
from pipelines.training.data import LabelWarning
from pipelines.training.reporting import read_metrics_csv
from pipelines.training.tasks import get_task
from pipelines.training.tasks.images import load_images_batch
from pipelines.training.trainer import fit

DATA = Path(__file__).resolve().parents[1] / "data"
UDHR = DATA / "text" / "udhr"


def run(tmp_path, task, **kw):
    defaults = {"max_steps": 3, "batch_size": 2, "log_every": 1, "checkpoint_every": 2, "warmup_steps": 1,
                "num_workers": 0,
                    "tiny": True, "output_dir": str(tmp_path / "runs"), "name": task}
    return fit(TrainConfig(task=task, **{**defaults, **kw}))


def check(result, steps, eval_metrics):
    assert result.step == steps
    assert result.final_dir is not None and load_pretrained(result.final_dir) is not None
    assert result.checkpoint_dir is not None and is_complete(result.checkpoint_dir)
    rows = read_metrics_csv(Path(result.run_dir) / "metrics.csv")
    assert [r["step"] for r in rows if r["split"] == "train"] == [str(s) for s in range(1, steps + 1)]
    evals = [r for r in rows if r["split"] == "eval"]
    assert evals and all(evals[-1][m] != "" for m in eval_metrics), evals
    return evals[-1]


def test_mlm_and_resume(ray_session, tmp_path):
    kw = {"data": (str(UDHR / "eng.txt"), str(UDHR / "fra.txt")), "eval_data": (str(UDHR / "deu_1996.txt"),),
              "max_steps": 4}
    first = run(tmp_path, "mlm", **kw)
    row = check(first, 4, ["bits_per_byte", "unigram_bits_per_byte", "accuracy"])
    assert 3.0 < float(row["unigram_bits_per_byte"]) < 6.0
    assert (Path(first.run_dir) / "final" / "tokenizer_config.json").is_file()
    again = run(tmp_path, "mlm", **{**kw, "max_steps": 6, "resume": True})  # continues from checkpoint 4
    assert again.start_step == 4 and again.step == 6
    rows = read_metrics_csv(Path(again.run_dir) / "metrics.csv")
    assert [r["attempt"] for r in rows if r["step"] == "5"] == ["2"]
    with pytest.raises(FileExistsError):
        run(tmp_path, "mlm", **kw)  # the same name without --resume never silently continues


def test_text_classification_from_an_mlm_checkpoint(ray_session, tmp_path):
    """String class names in both formats: ``<label> <text>`` lines for training, JSON lines for evaluation."""
    mlm = run(tmp_path, "mlm", data=(str(UDHR / "eng.txt"),), max_steps=2)
    lines = [line for line in (UDHR / "eng.txt").read_text().splitlines()[:40] if line]
    names = ["negative", "positive"]
    (tmp_path / "train.txt").write_text("".join(f"{names[i % 2]} {line}\n" for i, line in enumerate(lines)))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"text": line, "label": names[i % 2]}) + "\n"
                                                for i, line in enumerate(lines[:10])))
    result = run(tmp_path, "text-classification", data=(str(tmp_path / "train.txt"),),
                 eval_data=(str(tmp_path / "dev.jsonl"),), init_from=str(mlm.final_dir), text={"seq_len": 64},
                 name="clf")
    check(result, 3, ["accuracy", "majority_accuracy"])
    model = load_pretrained(result.final_dir)
    assert type(model).__name__ == "PerceiverForSequenceClassification" and model.config.num_labels == 2
    saved = json.loads((Path(result.final_dir) / "config.json").read_text())
    assert saved["id2label"] == {"0": "negative", "1": "positive"}
    assert saved["label2id"] == {"negative": 0, "positive": 1}


def test_image_classification_with_string_labels(ray_session, tmp_path):
    """Class names from labels.csv become id2label / label2id; a held-out label the model has no class for is
    warned about and left out of the metrics (not counted as some other class)."""
    src = DATA / "images" / "natural"
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "labels.csv").write_text(
        "file,label\n" + "".join(f"{src / n}.png,{c}\n" for n, c in (("astronaut", "person"), ("chelsea", "cat"),
                                                                     ("coffee", "cup"))))
    (tmp_path / "heldout").mkdir()
    (tmp_path / "heldout" / "labels.csv").write_text(f"file,label\n{src / 'astronaut.png'},person\n"
                                                     f"{src / 'chelsea.png'},zebra\n")
    with pytest.warns(LabelWarning, match="'zebra'"):
        result = run(tmp_path, "image-classification", data=(str(tmp_path / "imgs"),),
                     eval_data=(str(tmp_path / "heldout"),), image={"size": 32})
    row = check(result, 3, ["accuracy"])
    saved = json.loads((Path(result.final_dir) / "config.json").read_text())
    assert saved["id2label"] == {"0": "cat", "1": "cup", "2": "person"}
    assert saved["label2id"] == {"cat": 0, "cup": 1, "person": 2}
    # the held-out metrics are those of the astronaut alone (centre crop at 32 of the 37-pixel resize)
    model = load_pretrained(result.final_dir).eval()
    task = get_task("image-classification")
    images = load_images_batch({"path": np.array([str(src / "astronaut.png")]), "label": np.array(["person"])},
                               size=37, label2id={"person": 2})
    batch = task.prepare_batch(task.collate(images), np.random.default_rng(0), result_config(result), model.config,
                               train=False, device=torch.device("cpu"))
    with torch.inference_mode():
        logits = model(inputs=batch["inputs"]).logits
    assert float(row["loss"]) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, batch["labels"])),
                                               rel=1e-4)
    assert float(row["accuracy"]) == float(logits.argmax(-1).item() == 2)


def result_config(result) -> TrainConfig:
    return TrainConfig.from_dict(json.loads((Path(result.run_dir) / "run.json").read_text())["train_config"])


def test_optical_flow_synthetic_training_real_layout_eval(ray_session, tmp_path):
    pairs = write_flow_pairs(tmp_path / "chairs", n=2, size=(40, 56))
    result = run(tmp_path, "optical-flow", eval_data=(str(pairs),), flow={"synthetic_pairs": 8, "output_points": 64},
                 model_config={"train_size": [24, 32]})
    row = check(result, 3, ["epe", "zero_flow_epe", "epe_chairs", "zero_flow_epe_chairs"])
    # The zero-flow baseline, from the .flo files directly: mean GT length over the valid pixels of both pairs.
    lengths = []
    for path in sorted(pairs.glob("*.flo")):
        data = np.fromfile(path, np.uint8)
        w, h = np.frombuffer(data[4:12].tobytes(), "<i4")
        gt = np.frombuffer(data[12:].tobytes(), "<f4").reshape(h, w, 2).astype(np.float64)
        lengths.append(np.linalg.norm(gt, axis=-1)[np.abs(gt).max(-1) < 1e9])  # 1.7e9: unknown
    expected = np.concatenate(lengths).mean()
    assert float(row["zero_flow_epe"]) == pytest.approx(expected, rel=2e-5)
    assert float(row["zero_flow_epe_chairs"]) == pytest.approx(expected, rel=2e-5)


def test_multimodal_autoencoding(ray_session, tmp_path):
    clip = str(DATA / "videos" / "torchcodec__h265_video.mp4")
    result = run(tmp_path, "multimodal-autoencoding", data=(clip,), eval_data=(clip,),
                 video={"max_clips_per_video": 2, "output_points": 32},
                 model_config={"num_frames": 4, "image_size": 16, "audio_samples_per_frame": 16})
    row = check(result, 3, ["psnr", "clip_mean_psnr", "audio_psnr"])
    assert load_pretrained(result.final_dir).config.output_shape == (1, 4, 16, 16)
    # The clip-mean baseline of the two eval clips (frames 0-3 and 4-7 on the 25 fps grid), decoded with PyAV.
    frames = _pyav_clip_frames(clip, 8, 16)
    assert float(row["clip_mean_psnr"]) == pytest.approx(np.mean([_mean_colour_psnr(frames[:4]),
                                                                 _mean_colour_psnr(frames[4:])]), rel=2e-5)
    # evaluate-only (--max-steps 0) on the time hold-out of the same video
    evaluation = run(tmp_path, "multimodal-autoencoding", data=(clip,),
                     video={"holdout_fraction": 0.3, "clip_stride": 2}, init_from=str(result.final_dir), max_steps=0,
                     name="eval-only")
    rows = read_metrics_csv(Path(evaluation.run_dir) / "metrics.csv")
    assert [r["split"] for r in rows] == ["eval"]
    # 11 clips at stride 2 span 24 grid frames; the hold-out starts at int(0.7 * 24) = 16: clips at 16 and 20.
    frames = _pyav_clip_frames(clip, 24, 16)
    assert float(rows[0]["clip_mean_psnr"]) == pytest.approx(np.mean([_mean_colour_psnr(frames[16:20]),
                                                                     _mean_colour_psnr(frames[20:24])]), rel=2e-5)
    assert evaluation.metrics["eval_psnr"] == pytest.approx(float(rows[0]["psnr"]), rel=1e-4)


def _pyav_clip_frames(path: str, n: int, side: int) -> np.ndarray:
    """(n, side, side, 3) float in [0, 1]: the video on a 25 fps grid from its first frame (sample-and-hold),
    shorter side scaled to ``side`` (swscale bilinear), centre crop; decoded here with PyAV."""
    import av

    with av.open(path) as container:
        decoded = [(float(f.pts * f.time_base), f) for f in container.decode(video=0)]
    out = []
    for i in range(n):
        held = [f for t, f in decoded if t <= decoded[0][0] + i / 25 + 1e-6][-1]
        scale = side / min(held.height, held.width)
        h, w = max(side, round(held.height * scale)), max(side, round(held.width * scale))
        rgb = held.reformat(width=w, height=h, interpolation="BILINEAR").to_ndarray(format="rgb24")
        out.append(rgb[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side])
    return np.stack(out) / 255.0


def _mean_colour_psnr(clip: np.ndarray) -> float:
    """PSNR (peak 1) of predicting every pixel of a clip by the clip's mean colour."""
    return float(10 * np.log10(1 / ((clip - clip.mean(axis=(0, 1, 2))) ** 2).mean()))
