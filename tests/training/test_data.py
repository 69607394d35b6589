"""Per-batch data functions and task steps, single-process (no Ray)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from _training_helpers import write_flow_pairs

from perceiver_core import presets
from pipelines.training import data
from pipelines.training.config import TrainConfig
from pipelines.training.flow_pairs import discover_flow_pairs, load_pair, read_flo
from pipelines.training.synthetic_flow import SyntheticFlowSpec, make_pair
from pipelines.training.tasks import get_task
from pipelines.training.tasks.flow import real_pairs_batch
from pipelines.training.tasks.images import load_images_batch
from pipelines.training.tasks.text import encode_labelled_batch, windows_batch
from pipelines.training.tasks.video import decode_batch

DATA = Path(__file__).resolve().parents[1] / "data"


def _config(task, **kw):
    return TrainConfig(task=task, data=kw.pop("data", ("x",)), **kw)


def test_labelled_lines_and_vocabulary():
    batch = data.split_labelled_lines({"text": np.array(["1 a fine film .", "0 dull", "  ", "3"], dtype=object)})
    assert batch["label"].tolist() == ["1", "0", "3"] and batch["text"].tolist() == ["a fine film .", "dull", ""]
    assert data.label_vocabulary(["10", "2", "1"]) == {"1": 0, "2": 1, "10": 2}  # numeric order
    assert data.label_vocabulary(["neg", "pos"]) == {"neg": 0, "pos": 1}
    named = data.label_vocabulary(["arm wrestling", "2"], names=["abseiling", "air drumming", "arm wrestling"])
    assert named["arm wrestling"] == 2 and named["2"] == 2
    with pytest.raises(ValueError):
        data.label_vocabulary(["zumba"], names=["abseiling"])


def test_text_windows_and_labelled_encoding():
    out = windows_batch({"text": np.array(["hello", "world"], dtype=object)}, seq_len=4, packing="pack")
    assert out["ids"].shape == (3, 4)  # "hello\nworld" = 11 bytes -> 2 full windows + a 3-byte tail (kept)
    enc = encode_labelled_batch({"text": np.array(["ab", "x" * 50], dtype=object),
                                 "label": np.array(["pos", "neg"], dtype=object)},
                                seq_len=8, label2id={"neg": 0, "pos": 1})
    assert enc["ids"].shape == (2, 8) and enc["label"].tolist() == [1, 0]
    assert enc["ids"][0, :4].tolist() == [4, ord("a") + 6, ord("b") + 6, 5]  # [CLS] a b [SEP]
    assert enc["ids"][0, 4:].tolist() == [0] * 4


def test_image_rows_from_labels_csv_and_folders(tmp_path):
    src = DATA / "images" / "natural"
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(
        f"{src / n},{c}\n" for n, c in (("astronaut.png", "person"), ("chelsea.png", "cat"))))
    rows = data.image_label_rows([str(tmp_path)])
    assert [r["label"] for r in rows] == ["person", "cat"]
    (tmp_path / "classes" / "cat").mkdir(parents=True)
    (tmp_path / "classes" / "cat" / "c.png").write_bytes((src / "chelsea.png").read_bytes())
    assert data.image_label_rows([str(tmp_path / "classes")]) == [
        {"path": str(tmp_path / "classes" / "cat" / "c.png"), "label": "cat"}]
    batch = load_images_batch({"path": np.array([rows[0]["path"], str(DATA / "images/edge_cases/broken.png")]),
                               "label": np.array(["person", "cat"])}, size=36, label2id={"cat": 0, "person": 1})
    assert batch["image"].shape == (1, 36, 36, 3) and batch["label"].tolist() == [1]  # the broken file is skipped


def test_video_clips_for_training():
    spec = {"num_frames": 4, "height": 32, "width": 32, "audio_samples_per_frame": 16}
    out = decode_batch({"path": np.array([str(DATA / "videos" / "torchcodec__h265_video.mp4"), "/nonexistent.mp4"]),
                        "label": np.array([3, -1])}, spec=spec)
    n = out["video"].shape[0]
    assert n >= 5 and out["video"].shape[1:] == (4, 32, 32, 3) and out["video"].dtype == np.uint8
    assert out["audio"].shape == (n, 64) and out["label"].tolist() == [3] * n


def test_flow_pairs_discovery_loading_and_crops(tmp_path):
    root = write_flow_pairs(tmp_path / "chairs")
    pairs = discover_flow_pairs(root)
    assert len(pairs) == 2 and pairs[0].source == "chairs"
    pair = load_pair(pairs[0])
    assert pair["frame1"].shape == (40, 56, 3) and not pair["valid"][0, 0] and pair["valid"].sum() == 40 * 56 - 1
    assert read_flo(pairs[0].flow).shape == (40, 56, 2)
    cols = {k: np.array([getattr(p, k) for p in pairs]) for k in ("frame1", "frame2", "flow", "source")}
    crops = real_pairs_batch(cols, size=(24, 32), seed=0)
    assert crops["frame1"].shape == (2, 24, 32, 3) and crops["flow"].shape == (2, 24, 32, 2)
    again = real_pairs_batch(cols, size=(24, 32), seed=0)
    assert np.array_equal(crops["flow"], again["flow"])  # crops are seeded, the same on every epoch
    big = real_pairs_batch(cols, size=(64, 64), seed=0)  # smaller pairs are resized up
    assert big["frame1"].shape == (2, 64, 64, 3)


@pytest.fixture(scope="module")
def tiny_models():
    return {name: presets.build(name, tiny=True) for name in ("language", "vision-fourier", "optical-flow",
                                                                 "multimodal")}


def _step(task_name, model, batch, model_config, **config_kw):
    task = get_task(task_name)
    config = _config(task_name, **config_kw)
    batch = task.prepare_batch(task.collate(batch), np.random.default_rng(0), config, model_config, train=True,
                               device=torch.device("cpu"))
    out = task.forward(model.train(), batch, config)
    out.loss.backward()
    summary = task.summarize(out.stats)
    assert torch.isfinite(out.loss) and all(np.isfinite(v) for v in summary.values())
    return summary


def test_mlm_step(tiny_models):
    model = tiny_models["language"]
    ids = windows_batch({"text": np.array(["The quick brown fox jumps over the lazy dog. " * 8], dtype=object)},
                        seq_len=model.config.max_position_embeddings, packing="pack")["ids"]
    summary = _step("mlm", model, {"ids": ids}, model.config)
    assert summary["bits_per_byte"] == pytest.approx(summary["loss"] / np.log(2))


def test_text_classification_step():
    from perceiver_core import PerceiverForSequenceClassification

    cfg = presets.config("language", tiny=True, num_labels=3)
    enc = encode_labelled_batch({"text": np.array(["a", "b", "c"], dtype=object),
                                 "label": np.array(["0", "1", "2"], dtype=object)}, seq_len=16,
                                label2id={"0": 0, "1": 1, "2": 2})
    summary = _step("text-classification", PerceiverForSequenceClassification(cfg), enc, cfg)
    assert 0 <= summary["accuracy"] <= 1


def test_image_classification_step(tiny_models):
    model = tiny_models["vision-fourier"]
    batch = {"image": np.random.default_rng(0).integers(0, 255, (2, 36, 36, 3), dtype=np.uint8),
             "label": np.array([1, 7])}
    _step("image-classification", model, batch, model.config, image_size=32)


@pytest.mark.parametrize("points", [None, 100])
def test_flow_step(tiny_models, points):
    model = tiny_models["optical-flow"]
    h, w = model.config.train_size
    pair = make_pair(SyntheticFlowSpec(height=h, width=w), 0)
    batch = {k: pair[k][None] for k in ("frame1", "frame2", "flow", "valid")}
    summary = _step("optical-flow", model, batch, model.config, flow_output_points=points)
    mean_motion = np.linalg.norm(pair["flow"], axis=-1).mean()
    # the zero-flow baseline over the decoded pixels: all of them, or a random subset
    assert summary["zero_flow_epe"] == pytest.approx(mean_motion, rel=1e-4 if points is None else 0.3)


def test_multimodal_step(tiny_models):
    model = tiny_models["multimodal"]
    c = model.config
    rng = np.random.default_rng(0)
    batch = {"video": rng.integers(0, 255, (2, c.num_frames, c.image_size, c.image_size, 3), dtype=np.uint8),
             "audio": rng.uniform(-1, 1, (2, c.num_frames * c.audio_samples_per_frame)).astype(np.float32),
             "label": np.array([2, -1])}
    summary = _step("multimodal-autoencoding", model, batch, c, output_points=64)
    assert summary["label_loss"] > 0 and summary["image_loss"] > 0


def test_video_time_holdout_split_does_not_overlap():
    spec = {"num_frames": 4, "height": 16, "width": 16, "audio_samples_per_frame": 16, "clip_stride_frames": 2}
    batch = {"path": np.array([str(DATA / "videos" / "torchcodec__h265_video.mp4")]), "label": np.array([-1])}
    everything = decode_batch(batch, spec=spec)
    train = decode_batch(batch, spec=spec, holdout_fraction=0.25, split="train")
    held = decode_batch(batch, spec=spec, holdout_fraction=0.25, split="holdout")
    starts = lambda out: [int(c.split("#")[1]) * 2 for c in out["clip"]]
    assert len(train["clip"]) + len(held["clip"]) < len(everything["clip"])
    assert held["clip"].size >= 1 and train["clip"].size >= 1
    assert max(starts(train)) + 4 <= min(starts(held))  # training clips end before the held-out ones start
    assert all(b - a >= 4 for a, b in zip(starts(held), starts(held)[1:]))  # held-out clips do not overlap


def test_bf16_autocast_and_gradient_checkpointing_step():
    from perceiver_core import PerceiverForMaskedLM

    model = PerceiverForMaskedLM(presets.config("language", tiny=True))
    model.gradient_checkpointing_enable()
    ids = windows_batch({"text": np.array(["bf16 " * 40], dtype=object)}, seq_len=64, packing="pack")["ids"]
    task = get_task("mlm")
    config = _config("mlm", precision="bf16", gradient_checkpointing=True)
    batch = task.prepare_batch(task.collate({"ids": ids}), np.random.default_rng(0), config, model.config,
                               train=True, device=torch.device("cpu"))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = task.forward(model.train(), batch, config)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
