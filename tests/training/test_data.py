"""Per-batch data functions and task steps, single-process (no Ray)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from _training_helpers import write_flow_pairs

from perceiver_core import presets
from pipelines.readers.flow_data import read_flo
from pipelines.training import data
from pipelines.training.config import TrainConfig
from pipelines.training.synthetic_flow import SyntheticFlowSpec, make_pair
from pipelines.training.tasks import get_task
from pipelines.training.tasks.flow import labelled_pairs, load_row, real_pairs_batch
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


def test_labels_the_model_has_no_class_for_are_skipped_with_a_warning():
    names = {0: "1", 1: "5", 2: "9"}  # integer class names (labels 1, 5, 9 numbered in sorted order)
    lookup = data.label_lookup(names)
    assert lookup == {"1": 0, "5": 1, "9": 2}
    with pytest.warns(data.LabelWarning, match="'2'"):  # "2" is no class: never id 2 (which is class "9")
        assert data.encode_labels(["9", "2", "1"], lookup).tolist() == [2, -1, 0]
    unnamed = {i: f"LABEL_{i}" for i in range(3)}  # a checkpoint without names: the labels are the ids
    assert data.has_default_names(unnamed) and not data.has_default_names(names)
    ids = data.label_lookup(unnamed, ids_too=True)
    with pytest.warns(data.LabelWarning, match="'7'.*3 classes"):  # an id outside the model's range
        enc = encode_labelled_batch({"text": np.array(["a", "b", "c"], dtype=object),
                                     "label": np.array(["2", "7", "0"], dtype=object)}, seq_len=8, label2id=ids)
    assert enc["label"].tolist() == [2, 0] and enc["ids"].shape == (2, 8)
    assert enc["ids"][1, 1] == ord("c") + 6  # the rows kept are the texts of the kept labels
    src = DATA / "images" / "natural"
    with pytest.warns(data.LabelWarning, match="'zebra'"):
        batch = load_images_batch({"path": np.array([str(src / "chelsea.png"), str(src / "coffee.png")]),
                                   "label": np.array(["zebra", "cup"])}, size=16, label2id={"cat": 0, "cup": 1})
    assert batch["label"].tolist() == [1] and batch["image"].shape == (1, 16, 16, 3)


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
    pairs = labelled_pairs(str(root))
    assert len(pairs) == 2 and pairs[0]["source"] == "chairs"
    pair = load_row(pairs[0])
    assert pair["frame1"].shape == (40, 56, 3) and not pair["valid"][0, 0] and pair["valid"].sum() == 40 * 56 - 1
    assert read_flo(pairs[0]["flow_path"]).shape == (40, 56, 2)
    cols = {k: np.array([p[k] for p in pairs]) for k in pairs[0]}
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
    """One training step's forward and backward; returns (summary, step output, prepared batch). Dropout draws
    are seeded, so that ``_again`` repeats the very same forward for an independent loss."""
    task = get_task(task_name)
    config = _config(task_name, **config_kw)
    prepared = task.prepare_batch(task.collate(batch), np.random.default_rng(0), config, model_config, train=True,
                                  device=torch.device("cpu"))
    torch.manual_seed(0)
    out = task.forward(model.train(), prepared, config)
    out.loss.backward()
    return task.summarize(out.stats), out, prepared


def _again(model, **kwargs):
    """The model's forward again, with the step's dropout draws, without labels: the logits to recompute from."""
    torch.manual_seed(0)
    with torch.no_grad():
        return model.train()(**kwargs).logits


def test_mlm_step(tiny_models):
    model = tiny_models["language"]
    ids = windows_batch({"text": np.array(["The quick brown fox jumps over the lazy dog. " * 8], dtype=object)},
                        seq_len=model.config.max_position_embeddings, packing="pack")["ids"]
    summary, out, batch = _step("mlm", model, {"ids": ids}, model.config)
    labels, inputs = batch["labels"], batch["inputs"]
    masked = labels != -100
    # Labels hold the original byte where masked, inputs are the ids elsewhere and mostly [MASK] where masked.
    assert torch.equal(labels[masked], torch.from_numpy(ids.astype(np.int64))[masked])
    assert torch.equal(inputs[~masked], torch.from_numpy(ids.astype(np.int64))[~masked])
    assert 0.6 < float((inputs[masked] == 3).float().mean()) < 0.95  # BERT's 80 % [MASK]
    eligible = (ids >= 6).sum(1)  # bytes, not [PAD]: mask_prob 0.15 of each row's bytes
    assert masked.sum(1).tolist() == [round(0.15 * n) for n in eligible]
    logits = _again(model, inputs=inputs, attention_mask=batch["attention_mask"])[:, :labels.shape[1]]
    expected = torch.nn.functional.cross_entropy(logits[masked], labels[masked])
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert summary["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert summary["bits_per_byte"] == pytest.approx(float(expected) / np.log(2), rel=1e-5)
    assert summary["accuracy"] == pytest.approx(float((logits.argmax(-1)[masked] == labels[masked]).float().mean()))


def test_text_classification_step():
    from perceiver_core import PerceiverForSequenceClassification

    cfg = presets.config("language", tiny=True, num_labels=3)
    enc = encode_labelled_batch({"text": np.array(["a", "b", "c", "dd"], dtype=object),
                                 "label": np.array(["0", "1", "2", "2"], dtype=object)}, seq_len=16,
                                label2id={"0": 0, "1": 1, "2": 2})
    model = PerceiverForSequenceClassification(cfg)
    summary, out, batch = _step("text-classification", model, enc, cfg)
    assert batch["attention_mask"].sum(1).tolist() == [3, 3, 3, 4]  # [CLS] text [SEP], the rest [PAD]
    logits = _again(model, inputs=batch["inputs"], attention_mask=batch["attention_mask"])
    labels = torch.tensor([0, 1, 2, 2])
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert summary["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert summary["accuracy"] == float((logits.argmax(-1) == labels).float().mean())


def _normalised(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) ImageNet-normalised, written out here."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(((images / 255.0 - mean) / std).transpose(0, 3, 1, 2)).float()


def test_image_classification_step(tiny_models):
    model = tiny_models["vision-fourier"]
    images = np.random.default_rng(0).integers(0, 255, (2, 36, 36, 3), dtype=np.uint8)
    batch = {"image": images, "label": np.array([1, 7])}
    summary, out, prepared = _step("image-classification", model, batch, model.config, image={"size": 32},
                                   augment=False)
    torch.testing.assert_close(prepared["inputs"], _normalised(images[:, 2:34, 2:34]))  # the centre crop
    logits = _again(model, inputs=prepared["inputs"])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 7]))
    assert summary["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert summary["accuracy"] == float((logits.argmax(-1) == torch.tensor([1, 7])).float().mean())
    # With augmentation every example is some 32 x 32 crop of its image, mirrored or not.
    _, _, augmented = _step("image-classification", model, batch, model.config, image={"size": 32}, augment=True)
    for i in range(2):
        crops = [images[i, top:top + 32, left:left + 32] for top in range(5) for left in range(5)]
        candidates = _normalised(np.stack(crops + [c[:, ::-1] for c in crops]))
        assert float((augmented["inputs"][i] - candidates).abs().flatten(1).max(1).values.min()) < 1e-5


@pytest.mark.parametrize("points", [None, 100])
def test_flow_step(tiny_models, points):
    model = tiny_models["optical-flow"]
    h, w = model.config.train_size
    pair = make_pair(SyntheticFlowSpec(height=h, width=w), 0)
    batch = {k: pair[k][None] for k in ("frame1", "frame2", "flow", "valid")}
    summary, out, prepared = _step("optical-flow", model, batch, model.config, flow={"output_points": points},
                                   augment=False)
    magnitude = np.linalg.norm(pair["flow"], axis=-1)  # (H, W)
    if points is None:  # every pixel decoded: EPE of the model's flow, the zero-flow baseline over all pixels
        flow = _again(model, inputs=prepared["inputs"])[0].numpy()
        valid = pair["valid"]
        assert summary["epe"] == pytest.approx(np.linalg.norm(flow - pair["flow"], axis=-1)[valid].mean(), rel=1e-5)
        assert summary["zero_flow_epe"] == pytest.approx(magnitude[valid].mean(), rel=1e-5)
    else:  # 100 distinct sampled pixels: the baseline over exactly those
        sampled = prepared["points"][0].numpy()
        assert len(set(sampled.tolist())) == 100
        valid = pair["valid"].reshape(-1)[sampled]
        assert summary["zero_flow_epe"] == pytest.approx(magnitude.reshape(-1)[sampled][valid].mean(), rel=1e-5)


def test_multimodal_step(tiny_models):
    model = tiny_models["multimodal"]
    c = model.config
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (2, c.num_frames, c.image_size, c.image_size, 3), dtype=np.uint8)
    audio = rng.uniform(-1, 1, (2, c.num_frames * c.audio_samples_per_frame)).astype(np.float32)
    summary, out, prepared = _step("multimodal-autoencoding", model, {"video": video, "audio": audio,
                                                                        "label": np.array([2, -1])},
                                   c, video={"output_points": 64}, augment=False)
    points = prepared["image_points"].numpy()  # (2, 64) flat (T, H, W) indices per clip
    inputs = {"image": prepared["video"], "audio": prepared["audio"], "label": torch.zeros(2, c.num_labels)}
    logits = _again(model, inputs=inputs, subsampled_output_points={"image": prepared["image_points"],
                                                                     "audio": None, "label": None})
    targets = np.stack([video[i].reshape(-1, 3)[points[i]] for i in range(2)]) / 255.0  # (2, 64, 3)
    image_loss = float(((logits["image"].double().numpy() - targets) ** 2).mean())
    audio_loss = float(((logits["audio"].double().numpy().reshape(2, -1) - audio) ** 2).mean())
    label_loss = float(torch.nn.functional.cross_entropy(logits["label"][:1], torch.tensor([2])))  # labelled clip
    assert summary["image_loss"] == pytest.approx(image_loss, rel=1e-5)
    assert summary["audio_loss"] == pytest.approx(audio_loss, rel=1e-5)
    assert summary["label_loss"] == pytest.approx(label_loss, rel=1e-5)
    assert summary["loss"] == pytest.approx(0.03 * image_loss + audio_loss + 1e-4 * label_loss, rel=1e-5)


def test_video_time_holdout_split_does_not_overlap():
    spec = {"num_frames": 4, "height": 16, "width": 16, "audio_samples_per_frame": 16, "clip_stride_frames": 2}
    batch = {"path": np.array([str(DATA / "videos" / "torchcodec__h265_video.mp4")]), "label": np.array([-1])}
    everything = decode_batch(batch, spec=spec)
    train = decode_batch(batch, spec=spec, holdout_fraction=0.25, split="train")
    held = decode_batch(batch, spec=spec, holdout_fraction=0.25, split="holdout")
    def starts(out):
        return [int(c.split("#")[1]) * 2 for c in out["clip"]]
    assert len(train["clip"]) + len(held["clip"]) < len(everything["clip"])
    assert held["clip"].size >= 1 and train["clip"].size >= 1
    assert max(starts(train)) + 4 <= min(starts(held))  # training clips end before the held-out ones start
    assert all(b - a >= 4 for a, b in zip(starts(held), starts(held)[1:]))  # held-out clips do not overlap


def _mlm_gradients(precision: str, checkpointing: bool) -> tuple[float, dict[str, torch.Tensor]]:
    from perceiver_core import PerceiverForMaskedLM

    torch.manual_seed(0)
    model = PerceiverForMaskedLM(presets.config("language", tiny=True)).eval()  # no dropout: comparable runs
    if checkpointing:
        model.gradient_checkpointing_enable()
    ids = windows_batch({"text": np.array(["bf16 " * 40], dtype=object)}, seq_len=64, packing="pack")["ids"]
    task = get_task("mlm")
    config = _config("mlm", precision=precision, gradient_checkpointing=checkpointing)
    batch = task.prepare_batch(task.collate({"ids": ids}), np.random.default_rng(0), config, model.config,
                               train=True, device=torch.device("cpu"))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = task.forward(model, batch, config)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    return float(out.loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_bf16_autocast_and_gradient_checkpointing_step():
    """Checkpointing recomputes the forward in the backward pass: the same loss and gradients as without it;
    bf16 autocast: close to fp32 (the loss to 1 %, the whole gradient to 5 % in norm)."""
    loss, grads = _mlm_gradients("fp32", checkpointing=False)
    loss_ckpt, grads_ckpt = _mlm_gradients("fp32", checkpointing=True)
    loss_bf16, grads_bf16 = _mlm_gradients("bf16", checkpointing=True)
    assert grads.keys() == grads_ckpt.keys() == grads_bf16.keys() and len(grads) > 10
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    assert loss_bf16 == pytest.approx(loss, rel=1e-2)
    flat, flat_bf16 = (torch.cat([g[n].flatten() for n in sorted(grads)]) for g in (grads, grads_bf16))
    assert float((flat_bf16 - flat).norm() / flat.norm()) < 0.05


def test_step_gradient_matches_finite_differences():
    """The training loss's gradient (backward through the whole model) against a central difference of the loss
    along a random direction, in float64: a detached or zeroed path anywhere in the model breaks it."""
    from perceiver_core import PerceiverForSequenceClassification

    torch.manual_seed(0)
    model = PerceiverForSequenceClassification(presets.config("language", tiny=True, num_labels=3)).double().eval()
    enc = encode_labelled_batch({"text": np.array(["abc", "hello there"], dtype=object),
                                 "label": np.array(["0", "2"], dtype=object)}, seq_len=16,
                                label2id={"0": 0, "1": 1, "2": 2})
    task = get_task("text-classification")
    config = _config("text-classification")
    batch = task.prepare_batch(task.collate(enc), np.random.default_rng(0), config, model.config, train=True,
                               device=torch.device("cpu"))
    labels = batch["labels"]

    def loss_now() -> torch.Tensor:  # the task's forward; the cross-entropy in float64 (the task's is float32)
        logits = model(inputs=batch["inputs"], attention_mask=batch["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(logits, labels)

    with torch.no_grad():
        assert float(task.forward(model, batch, config).loss) == pytest.approx(float(loss_now()), rel=1e-6)
    loss_now().backward()
    params = [p for p in model.parameters() if p.grad is not None]
    direction = [torch.randn_like(p) for p in params]
    analytic = sum(float((p.grad * d).sum()) for p, d in zip(params, direction))

    def loss_at(eps: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(d, alpha=eps)
            value = float(loss_now())
            for p, d in zip(params, direction):
                p.sub_(d, alpha=eps)
        return value

    numeric = (loss_at(1e-6) - loss_at(-1e-6)) / 2e-6
    assert analytic == pytest.approx(numeric, rel=1e-4), (analytic, numeric)
    # and per block: the encoder's cross-attention alone, so that a zero gradient there is not averaged away
    encoder = [p for n, p in model.named_parameters() if n.startswith("perceiver.encoder.cross_attn")]
    assert encoder and all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in encoder)
