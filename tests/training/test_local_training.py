"""Every task end to end in Ray Train's local mode (in-process, real Ray Data), a few steps each."""

from pathlib import Path

import pytest
from _training_helpers import write_flow_pairs

from perceiver_core import load_pretrained
from pipelines.training.checkpointing import is_complete
from pipelines.training.config import TrainConfig
from pipelines.training.metrics import read_metrics_csv
from pipelines.training.trainer import fit

DATA = Path(__file__).resolve().parents[1] / "data"
UDHR = DATA / "text" / "udhr"


def run(tmp_path, task, **kw):
    defaults = {"max_steps": 3, "batch_size": 2, "log_every": 1, "checkpoint_every": 2, "warmup_steps": 1, "num_workers": 0,
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
    mlm = run(tmp_path, "mlm", data=(str(UDHR / "eng.txt"),), max_steps=2)
    lines = [f"{i % 2} " + line for i, line in enumerate((UDHR / "eng.txt").read_text().splitlines()[:40]) if line]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    result = run(tmp_path, "text-classification", data=(str(tmp_path / "train.txt"),),
                 eval_data=(str(tmp_path / "train.txt"),), init_from=str(mlm.final_dir), seq_len=64,
                 name="clf")
    check(result, 3, ["accuracy", "majority_accuracy"])
    model = load_pretrained(result.final_dir)
    assert type(model).__name__ == "PerceiverForSequenceClassification" and model.config.num_labels == 2


def test_image_classification(ray_session, tmp_path):
    src = DATA / "images" / "natural"
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "labels.csv").write_text(
        "file,label\n" + "".join(f"{src / n}.png,{c}\n" for n, c in (("astronaut", "a"), ("chelsea", "b"),
                                                                     ("coffee", "c"))))
    result = run(tmp_path, "image-classification", data=(str(tmp_path / "imgs"),),
                 eval_data=(str(tmp_path / "imgs"),), image_size=32)
    check(result, 3, ["accuracy"])
    assert load_pretrained(result.final_dir).config.id2label == {0: "a", 1: "b", 2: "c"}


def test_optical_flow_synthetic_training_real_layout_eval(ray_session, tmp_path):
    pairs = write_flow_pairs(tmp_path / "chairs", n=2, size=(40, 56))
    result = run(tmp_path, "optical-flow", synthetic_pairs=8, eval_data=(str(pairs),), flow_output_points=64,
                 model_config={"train_size": [24, 32]})
    row = check(result, 3, ["epe", "zero_flow_epe", "epe_chairs", "zero_flow_epe_chairs"])
    assert float(row["zero_flow_epe"]) > 0


def test_multimodal_autoencoding(ray_session, tmp_path):
    clip = str(DATA / "videos" / "torchcodec__h265_video.mp4")
    result = run(tmp_path, "multimodal-autoencoding", data=(clip,), eval_data=(clip,), max_clips_per_video=2,
                 output_points=32, model_config={"num_frames": 4, "image_size": 16, "audio_samples_per_frame": 16})
    check(result, 3, ["psnr", "clip_mean_psnr", "audio_psnr"])
    assert load_pretrained(result.final_dir).config.output_shape == (1, 4, 16, 16)
    # evaluate-only (--max-steps 0) on the time hold-out of the same video
    evaluation = run(tmp_path, "multimodal-autoencoding", data=(clip,), holdout_fraction=0.3, clip_stride=2,
                     init_from=str(result.final_dir), max_steps=0, name="eval-only")
    rows = read_metrics_csv(Path(evaluation.run_dir) / "metrics.csv")
    assert [r["split"] for r in rows] == ["eval"] and float(rows[0]["clip_mean_psnr"]) > 0
    assert evaluation.metrics["eval_psnr"] == pytest.approx(float(rows[0]["psnr"]), rel=1e-4)
