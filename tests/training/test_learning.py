"""Learning, not only plumbing: every training task overfits a tiny fixed problem in a few seconds.

Each test runs the training step of ``pipelines.training.loop`` in this process (no Ray): the task's own model
building (``build_model`` with the task's fresh initialisation), ``prepare_batch`` (masking, crops, sampled
output points), ``forward`` (its loss), AdamW from ``build_optimizer`` (with the task's learning-rate
multipliers) and gradient clipping, on the same 8 examples every step. The loss must fall below half of its
first value, so a broken gradient path, optimizer, loss or masking fails the suite, which the other training
tests (a few steps through Ray, checking files and metrics) would not notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from perceiver_core import PerceiverConfig, presets
from pipelines.training.config import TrainConfig
from pipelines.training.models import build_model
from pipelines.training.optim import build_optimizer
from pipelines.training.synthetic_flow import SyntheticFlowSpec, make_batch
from pipelines.training.tasks import StepOutput, TrainingModule, get_task
from pipelines.training.tasks.text import encode_labelled_batch, windows_batch

N = 8  # examples of every fixed problem


@dataclass
class Fit:
    losses: list[float]
    outputs: list[StepOutput] = field(repr=False)
    model: torch.nn.Module = field(repr=False)

    @property
    def ratio(self) -> float:
        return self.losses[-1] / self.losses[0]


def overfit(task_name: str, batch: dict[str, np.ndarray], model_config: PerceiverConfig, steps: int, lr: float,
            **config: object) -> Fit:
    """``steps`` optimizer steps of the training loop on ``batch``; the random per-step work (masks, sampled
    points) is drawn from the same seed every step, so that the problem stays fixed."""
    torch.set_num_threads(1)
    task = get_task(task_name)
    train_config = TrainConfig(task=task_name, data=("unused",), tiny=True, lr=lr, warmup_steps=0, augment=False,
                               **config)
    head = task.head_class(train_config, model_config)
    model_config.architectures = [head.__name__]
    model = build_model(train_config, head, model_config, task)
    module = TrainingModule(model, task, train_config)
    optimizer = build_optimizer(model, train_config.lr, train_config.weight_decay,
                                task.param_lr_multipliers(model_config))
    tensors = task.collate(batch)
    fit = Fit([], [], model)
    for _ in range(steps):
        prepared = task.prepare_batch(tensors, np.random.default_rng(0), train_config, model_config, train=True,
                                      device=torch.device("cpu"))
        out = module(prepared)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), train_config.grad_clip)
        optimizer.step()
        fit.losses.append(float(out.loss.detach()))
        fit.outputs.append(out)
    assert all(np.isfinite(fit.losses)), fit.losses
    return fit


def test_mlm_learns_the_bytes_of_a_small_text():
    """Masked bytes of "the cat sat on the mat. " (8 windows of 64 bytes, 30 % masked): from ln(262) = 5.57
    nats (uniform over the vocabulary) to well below half."""
    text = "the cat sat on the mat. " * 24
    ids = windows_batch({"text": np.array([text], dtype=object)}, seq_len=64, packing="pack")["ids"][:N]
    assert ids.shape == (N, 64)
    fit = overfit("mlm", {"ids": ids}, presets.config("language", tiny=True), steps=40, lr=3e-3,
                  text={"seq_len": 64, "mask_prob": 0.3})
    assert fit.losses[0] == pytest.approx(np.log(262), abs=0.2)
    assert fit.ratio < 0.5, fit.losses
    first, last = fit.outputs[0].stats, fit.outputs[-1].stats
    assert first["bytes"] == last["bytes"] > 0  # the same masked positions every step
    assert last["correct"] > first["correct"]


def test_text_classification_learns_eight_labelled_texts():
    names = ["red apple", "blue sky", "green leaf", "gold coin"]
    texts = np.array([f"{names[i % 4]} {i}" for i in range(N)], dtype=object)
    labels = np.array([str(i % 4) for i in range(N)], dtype=object)
    enc = encode_labelled_batch({"text": texts, "label": labels}, seq_len=32, label2id={str(i): i for i in range(4)})
    # 100 steps: at 60 the loss is still ~0.5 and whether all 8 are right depends on float rounding order
    fit = overfit("text-classification", enc, presets.config("language", tiny=True, num_labels=4), steps=100,
                  lr=1e-3, text={"seq_len": 32})
    assert fit.losses[0] == pytest.approx(np.log(4), abs=0.1)
    assert fit.ratio < 0.5, fit.losses
    assert fit.outputs[-1].stats["correct"] == N


def test_image_classification_learns_the_dominant_colour():
    """Noise images whose class is the colour channel lifted by 160 (class 3: none): a Fourier-position
    classifier at 16 x 16 (centre crops of 18 x 18 images, as ``prepare_batch`` takes them) learns them."""
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 4
    lift = 160 * np.eye(4, 3, dtype=np.int64)[labels]  # (N, 3): channel `label` lifted, none for class 3
    images = (rng.integers(0, 96, (N, 18, 18, 3)) + lift[:, None, None, :]).astype(np.uint8)
    fit = overfit("image-classification", {"image": images, "label": labels},
                  presets.config("vision-fourier", tiny=True, num_labels=4), steps=40, lr=3e-3,
                  preset="vision-fourier", image={"size": 16})
    assert fit.losses[0] == pytest.approx(np.log(4), abs=0.1)
    assert fit.ratio < 0.5, fit.losses
    assert fit.outputs[-1].stats["correct"] == N


def test_optical_flow_learns_synthetic_pairs():
    """8 synthetic pairs of 12 x 16 (known flow), 48 sampled output pixels per pair: the end-point error falls
    below half of the fresh model's (which predicts ~zero flow: its first EPE is the mean motion)."""
    model_config = presets.config("optical-flow", tiny=True, train_size=(12, 16))
    batch = make_batch(SyntheticFlowSpec(height=12, width=16), list(range(N)))
    fit = overfit("optical-flow", batch, model_config, steps=60, lr=3e-3, flow={"output_points": 48})
    first = fit.outputs[0].stats
    assert fit.losses[0] == pytest.approx(first["zero_sum"] / first["pixels"], rel=0.2)
    assert fit.ratio < 0.5, fit.losses


def test_multimodal_autoencoding_learns_clips_through_the_latents():
    """8 clips of one solid colour each (and a constant audio level): the reconstruction error falls below half
    of the first, and the video error below half of the best clip-independent prediction (the colour mean over
    clips), so each clip's colour is carried from the input through the latents to the decoder."""
    rng = np.random.default_rng(0)
    model_config = presets.config("multimodal", tiny=True, num_frames=2, image_size=8, output_shape=(1, 2, 8, 8),
                                  audio_samples_per_frame=16)
    t, s = model_config.num_frames, model_config.image_size
    colours = rng.integers(0, 256, (N, 1, 1, 1, 3))
    video = np.broadcast_to(colours, (N, t, s, s, 3)).astype(np.uint8)
    audio = np.full((N, t * model_config.audio_samples_per_frame), 0.3, np.float32)
    fit = overfit("multimodal-autoencoding", {"video": video, "audio": audio, "label": np.arange(N) % 5},
                  model_config, steps=60, lr=3e-3,
                  video={"output_points": 64, "loss_weights": {"image": 1.0, "audio": 1.0, "label": 1e-4}})
    assert fit.ratio < 0.5, fit.losses
    image_loss = fit.outputs[-1].stats["image_loss_sum"] / N
    colour_variance = float((colours / 255.0).var(axis=0).mean())  # MSE of the mean colour over the clips
    assert image_loss < 0.5 * colour_variance, (image_loss, colour_variance)
