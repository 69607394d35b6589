"""Multimodal (video + audio + label) autoencoding on clips from the video reader.

Each step decodes a random subset of output points per clip (``output_points`` video pixels, optionally
``audio_output_points`` audio patches, the label), the Perceiver IO training recipe; the loss weights default
to the paper's (0.03 video, 1.0 audio, 1e-4 label). Evaluation reconstructs every point of held-out clips and
reports PSNR beside the PSNR of predicting each clip's mean colour (and mean audio level).
"""

from __future__ import annotations

import csv
import io
import posixpath
from pathlib import Path

import numpy as np
import torch

from perceiver_core import PerceiverForMultimodalAutoencoding
from pipelines import storage
from pipelines.metrics import psnr_from_mse
from pipelines.readers.video_decode import ClipSpec, VideoDecodeError, iter_clips
from pipelines.training import data
from pipelines.training.tasks.base import StepOutput, Task, as_tensor, model_device

LABELS_CSV = "labels.csv"  # optional, beside the videos: file,<label column> (a class name or id)


def clip_spec(model_config, stride: int | None = None, max_clips: int | None = None) -> ClipSpec:
    """Clips the model takes: T frames of S x S at 25 fps, T * A audio samples at 25 * A Hz."""
    return ClipSpec(num_frames=model_config.num_frames, height=model_config.image_size,
                    width=model_config.image_size, audio_samples_per_frame=model_config.audio_samples_per_frame,
                    clip_stride_frames=stride, max_clips=max_clips)


def decode_clips_of(path: str, label: int, spec: dict, holdout_fraction: float = 0.0, split: str = "all"
                    ) -> list[dict]:
    """One video -> its full clips as rows: video (T, S, S, 3) uint8, audio (T*A,) float32, label int (-1 =
    unlabelled), clip "<file>#<index>". An undecodable file gives no rows (and a message); padded tail clips are
    dropped.

    ``holdout_fraction`` > 0 splits the video in time at (1 - fraction) of its clipped length: ``split="train"``
    keeps the clips that end before the boundary, ``split="holdout"`` non-overlapping clips after it.
    """
    clip_spec_ = ClipSpec(**spec)
    t, stride = clip_spec_.num_frames, clip_spec_.stride
    try:
        clips = [c for c in iter_clips(str(path), clip_spec_) if not c.partial]
    except VideoDecodeError as exc:
        print(f"skipping undecodable video {path}: {exc}")
        return []
    if holdout_fraction and split != "all" and clips:
        boundary = int((1 - holdout_fraction) * ((len(clips) - 1) * stride + t))  # in output frames
        if split == "train":
            clips = [c for c in clips if c.clip_index * stride + t <= boundary]
        else:
            clips = [c for c in clips if c.clip_index * stride >= boundary
                     and (c.clip_index * stride - boundary) % t < stride]
    return [{"video": c.frames, "audio": c.audio.astype(np.float32), "label": int(label),
             "clip": f"{Path(str(path)).name}#{c.clip_index}"} for c in clips]


def decode_row(row: dict, spec: dict, holdout_fraction: float = 0.0, split: str = "all") -> list[dict]:
    """``flat_map`` form of ``decode_clips_of`` (a file may give no clips: no empty tensor batches)."""
    return decode_clips_of(row["path"], row["label"], spec, holdout_fraction, split)


def decode_batch(batch: dict[str, np.ndarray], spec: dict, holdout_fraction: float = 0.0,
                 split: str = "all") -> dict[str, np.ndarray]:
    """``decode_clips_of`` over a batch of (path, label) rows, stacked into arrays (n may be 0)."""
    rows = [r for path, label in zip(batch["path"], batch["label"])
            for r in decode_clips_of(path, label, spec, holdout_fraction, split)]
    c = ClipSpec(**spec)
    empty = {"video": np.zeros((0, c.num_frames, c.height, c.width, 3), np.uint8),
             "audio": np.zeros((0, c.audio_samples_per_clip), np.float32)}
    return {"video": np.stack([r["video"] for r in rows]) if rows else empty["video"],
            "audio": np.stack([r["audio"] for r in rows]) if rows else empty["audio"],
            "label": np.array([r["label"] for r in rows], dtype=np.int64),
            "clip": np.array([r["clip"] for r in rows], dtype=object)}


def video_rows(paths, label2id: dict[str, int]) -> list[dict]:
    """(path, label id) rows (paths: absolute local paths or URIs); labels come from a labels.csv beside the
    videos (first column the file name, second the label), unlabelled files get -1."""
    files = data.find_files(paths, data.VIDEO_SUFFIXES)
    labels: dict[str, str] = {}
    folders = {f.uri.rsplit("/", 1)[0]: f for f in files}
    for folder_uri, sample in sorted(folders.items()):
        csv_loc = storage.Location(sample.fs, posixpath.dirname(sample.path) + "/" + LABELS_CSV,
                                   f"{folder_uri}/{LABELS_CSV}")
        if csv_loc.is_file():
            for rec in csv.reader(io.StringIO(csv_loc.read_text(), newline="")):
                if len(rec) >= 2:
                    labels[f"{folder_uri}/{rec[0]}"] = rec[1]
    return [{"path": f.uri, "label": label2id.get(labels.get(f.uri, ""), -1)} for f in files]


class MultimodalAutoencoding(Task):
    name = "multimodal-autoencoding"
    find_unused_parameters = True  # the label head gets no gradient when no clip is labelled

    def head_class(self, config, model_config):
        return PerceiverForMultimodalAutoencoding

    def prepare_model_config(self, config, model_config):
        names = data.read_label_names(config.label_names)
        changes = {}
        if names is not None:
            changes["id2label"] = dict(enumerate(names))
        if "output_shape" not in config.model_config:  # follow num_frames / image_size overrides
            changes["output_shape"] = (1, model_config.num_frames, model_config.image_size, model_config.image_size)
        return model_config.replace(**changes) if changes else model_config

    def _label2id(self, model_config) -> dict[str, int]:
        vocab = {name: i for i, name in model_config.labels.items()}
        vocab.update({str(i): i for i in model_config.labels})
        return vocab

    def build_datasets(self, config, model_config):
        """train: clips of --data (the part before the hold-out boundary); val: the held-out part of those
        videos (--holdout-fraction) and every clip (non-overlapping) of --eval-data."""
        import ray.data

        vocab = self._label2id(model_config)

        def clips(paths, stride, split):
            spec = clip_spec(model_config, stride, config.video.max_clips_per_video)
            kwargs = {"spec": {f: getattr(spec, f) for f in spec.__dataclass_fields__},
                      "holdout_fraction": config.video.holdout_fraction, "split": split}
            return ray.data.from_items(video_rows(paths, vocab)).flat_map(decode_row, fn_kwargs=kwargs)

        out = {}
        stride, holdout = config.video.clip_stride, config.video.holdout_fraction
        if config.data and config.max_steps:
            out["train"] = clips(config.data, stride, "train" if holdout else "all")
        val = ([clips(config.data, stride, "holdout")] if holdout else []) + \
              ([clips(config.eval_data, None, "all")] if config.eval_data else [])
        if val:
            out["val"] = val[0] if len(val) == 1 else val[0].union(*val[1:])
        return out

    def metric_names(self, config):
        return ["loss", "image_loss", "audio_loss", "label_loss", "psnr", "clip_mean_psnr", "audio_psnr",
                "audio_mean_psnr", "label_accuracy"]

    def collate(self, batch):
        return {"video": as_tensor(batch["video"]), "audio": as_tensor(batch["audio"]),
                "label": as_tensor(batch["label"])}

    def prepare_batch(self, batch, rng, config, model_config, train, device):
        video = batch["video"].permute(0, 1, 4, 2, 3).float().div(255.0)  # (B, T, 3, S, S) in [0, 1]
        audio = batch["audio"].float().unsqueeze(-1)  # (B, T*A, 1)
        b = video.shape[0]
        if train and config.augment:
            video, audio = augment_clips(video, audio, rng)
        out = {"video": video.to(device), "audio": audio.to(device), "label": batch["label"].long().to(device)}
        if train:
            n_image = int(np.prod(model_config.output_shape[1:]))
            n_audio = audio.shape[1] // model_config.samples_per_patch
            out["image_points"] = _sample_points(rng, b, n_image, config.video.output_points).to(device)
            if config.video.audio_output_points and config.video.audio_output_points < n_audio:
                out["audio_points"] = _sample_points(rng, b, n_audio, config.video.audio_output_points).to(device)
        return out

    def forward(self, model, batch, config):
        """Training step: decode the sampled points of each clip; weighted per-modality losses."""
        video, audio, label = batch["video"], batch["audio"], batch["label"]
        b = video.shape[0]
        inputs = {"image": video, "audio": audio,
                  "label": torch.zeros(b, model.config.num_labels, device=video.device)}  # masked by the model
        points = {"image": batch.get("image_points"), "audio": batch.get("audio_points"), "label": None}
        targets = {"image": video, "audio": audio}
        labelled = label >= 0
        if bool(labelled.any()):
            targets["label"] = torch.where(labelled, label, torch.full_like(label, -100))
        out = model(inputs=inputs, subsampled_output_points=points, labels=targets,
                    loss_weights=config.video.loss_weights)
        stats = {"loss_sum": float(out.loss.detach()) * b, "count": b}
        for name in ("image", "audio", "label"):
            value = out.losses.get(name)
            stats[f"{name}_loss_sum"] = float(value.detach()) * b if value is not None else 0.0
        stats["labelled"] = float(labelled.sum()) if "label" in targets else 0.0
        return StepOutput(out.loss, stats)

    eval_stat_keys = ("clips", "psnr_sum", "clip_mean_psnr_sum", "audio_psnr_sum", "audio_mean_psnr_sum",
                      "labelled", "label_correct")

    def eval_stats(self, model, batch, config):
        """Full reconstruction of a held-out clip batch (label input masked): PSNR vs the clip-mean baseline."""
        return reconstruction_stats(model, batch)

    def summarize(self, stats):
        out = {}
        if "count" in stats:  # training sums
            n = max(stats["count"], 1.0)
            out["loss"] = stats["loss_sum"] / n
            for name in ("image", "audio", "label"):
                out[f"{name}_loss"] = stats.get(f"{name}_loss_sum", 0.0) / n
        if "clips" in stats:
            n = max(stats["clips"], 1.0)
            for name in ("psnr", "clip_mean_psnr", "audio_psnr", "audio_mean_psnr"):
                out[name] = stats[f"{name}_sum"] / n
            if stats["labelled"]:
                out["label_accuracy"] = stats["label_correct"] / stats["labelled"]
        return out

    def probe(self, model, model_config):
        g = torch.Generator().manual_seed(0)
        t, s = model_config.num_frames, model_config.image_size
        n_audio = t * model_config.audio_samples_per_frame
        inputs = {"image": torch.rand(1, t, 3, s, s, generator=g),
                  "audio": torch.rand(1, n_audio, 1, generator=g) * 2 - 1,
                  "label": torch.zeros(1, model_config.num_labels)}
        inputs = {k: v.to(model_device(model)) for k, v in inputs.items()}
        points = {"image": torch.arange(0, t * s * s, 97, device=model_device(model)),
                  "audio": torch.arange(0, n_audio // model_config.samples_per_patch, 3, device=model_device(model)),
                  "label": None}
        logits = model(inputs=inputs, subsampled_output_points=points).logits
        return torch.cat([logits[k].reshape(-1) for k in sorted(logits)])


def augment_clips(video: torch.Tensor, audio: torch.Tensor, rng: np.random.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per clip: horizontal flip, time reversal (video and audio together), and a random colour transform
    (channel permutation, per-channel gain and offset, sometimes inversion). An autoencoder trained on few
    videos otherwise memorises their colours instead of passing its input through the latents."""
    video, audio = video.clone(), audio.clone()
    for i in range(video.shape[0]):
        if rng.random() < 0.5:
            video[i] = video[i].flip(-1)
        if rng.random() < 0.5:
            video[i], audio[i] = video[i].flip(0), audio[i].flip(0)
        if rng.random() < 0.8:
            clip = video[i][:, torch.from_numpy(rng.permutation(3))]
            gain = torch.from_numpy(rng.uniform(0.6, 1.4, 3)).float().view(1, 3, 1, 1)
            offset = torch.from_numpy(rng.uniform(-0.2, 0.2, 3)).float().view(1, 3, 1, 1)
            clip = clip * gain + offset
            video[i] = (1 - clip if rng.random() < 0.2 else clip).clamp(0, 1)
    return video, audio


def _sample_points(rng: np.random.Generator, batch: int, total: int, n: int) -> torch.Tensor:
    """(B, n) distinct random indices into ``total`` points, per example."""
    n = min(n, total)
    return torch.from_numpy(np.argsort(rng.random((batch, total)), axis=1)[:, :n].copy())


def _psnr_sum(mse: torch.Tensor) -> float:
    """Summed PSNR (dB, range 1) of per-clip MSEs; the floor keeps a perfect clip from making the mean +inf."""
    return float(psnr_from_mse(mse.clamp_min(1e-12)).sum())


def reconstruction_stats(model, batch: dict[str, torch.Tensor], chunk_size: int = 16384) -> dict[str, float]:
    """Per-clip PSNR sums of the full reconstruction and of the clip-mean baseline (video in [0, 1], audio
    in [-1, 1], both with peak 1), plus label accuracy on labelled clips."""
    video, audio, label = batch["video"], batch["audio"], batch["label"]
    b = video.shape[0]
    inputs = {"image": video, "audio": audio, "label": torch.zeros(b, model.config.num_labels, device=video.device)}
    rec = model.autoencode(inputs, chunk_size=chunk_size)
    target = video.permute(0, 1, 3, 4, 2)  # (B, T, S, S, 3), the layout of rec["image"]
    mse = (rec["image"].float().clamp(0, 1) - target).pow(2).flatten(1).mean(1)
    mean_colour = target.mean(dim=(1, 2, 3), keepdim=True)  # per-clip, per-channel mean
    mse_mean = (target - mean_colour).pow(2).flatten(1).mean(1)
    a = audio.reshape(b, -1)
    mse_audio = (rec["audio"].float().reshape(b, -1) - a).pow(2).mean(1)
    mse_audio_mean = (a - a.mean(1, keepdim=True)).pow(2).mean(1)
    labelled = label >= 0
    correct = (rec["label"].argmax(-1) == label) & labelled
    return {"clips": float(b), "psnr_sum": _psnr_sum(mse), "clip_mean_psnr_sum": _psnr_sum(mse_mean),
            "audio_psnr_sum": _psnr_sum(mse_audio), "audio_mean_psnr_sum": _psnr_sum(mse_audio_mean),
            "labelled": float(labelled.sum()), "label_correct": float(correct.sum())}
