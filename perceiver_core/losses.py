"""Losses for every head, including the two transformers refuses to train (optical flow, autoencoding)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_AUTOENCODING_WEIGHTS = {"image": 0.03, "audio": 1.0, "label": 1e-4}  # Perceiver IO paper, Kinetics


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over (B, O, V) logits; labels (B, L) with -100 = ignore. L < O is padded with -100."""
    if labels.shape[1] < logits.shape[1]:
        labels = F.pad(labels, (0, logits.shape[1] - labels.shape[1]), value=-100)
    elif labels.shape[1] > logits.shape[1]:
        raise ValueError(f"labels have length {labels.shape[1]} but the model outputs {logits.shape[1]} positions")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


def infer_problem_type(num_labels: int, labels: torch.Tensor) -> str:
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """transformers' problem types: regression (MSE), single-label (CE), multi-label (BCE with logits)."""
    logits = logits.float()
    if problem_type == "regression":
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(-1), labels.squeeze(-1).float())
        return F.mse_loss(logits, labels.float())
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    raise ValueError(f"unknown problem_type {problem_type!r}")


def endpoint_error(flow: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean endpoint error ||flow - target||_2 over valid pixels. flow, target (B, H, W, 2); valid (B, H, W)."""
    if flow.shape != target.shape:
        raise ValueError(f"flow {tuple(flow.shape)} and target {tuple(target.shape)} differ in shape")
    epe = torch.linalg.vector_norm(flow.float() - target.float(), dim=-1)
    if valid is None:
        return epe.mean()
    valid = valid.to(epe.dtype)
    return (epe * valid).sum() / valid.sum().clamp_min(1.0)


@dataclass
class AutoencodingLoss:
    total: torch.Tensor
    per_modality: dict[str, torch.Tensor]


def autoencoding_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                      weights: dict[str, float] | None = None) -> AutoencodingLoss:
    """Weighted sum of per-modality losses: MSE for image/audio reconstructions, CE for the label.

    ``targets`` must already be aligned with ``logits``: image (B, n, 3), audio (B, n_samples), label (B,) ids
    or (B, num_labels) one-hot / soft targets. Missing targets are skipped.
    """
    weights = {**DEFAULT_AUTOENCODING_WEIGHTS, **(weights or {})}
    per = {}
    for name, target in targets.items():
        if name not in logits:
            continue
        pred = logits[name].float()
        if name == "label":
            per[name] = (F.cross_entropy(pred, target) if target.ndim == 1
                         else F.cross_entropy(pred, target.float()))
        else:
            per[name] = F.mse_loss(pred, target.float().reshape(pred.shape))
    if not per:
        raise ValueError("no targets matched the model outputs")
    total = sum(weights.get(name, 1.0) * loss for name, loss in per.items())
    return AutoencodingLoss(total, per)


def gather_video_targets(video: torch.Tensor, points: torch.Tensor | None) -> torch.Tensor:
    """Video (B, T, C, H, W) -> per-point targets (B, n, C) at flat (T, H, W) indices (n,) or (B, n)."""
    b, t, c, h, w = video.shape
    flat = video.permute(0, 1, 3, 4, 2).reshape(b, t * h * w, c)
    if points is None:
        return flat
    if points.ndim == 1:
        return flat[:, points]
    return torch.gather(flat, 1, points[..., None].expand(-1, -1, c))


def gather_audio_targets(audio: torch.Tensor, patch_points: torch.Tensor | None,
                         samples_per_patch: int) -> torch.Tensor:
    """Audio (B, S[, 1]) -> samples of the selected patches (B, n * samples_per_patch)."""
    b = audio.shape[0]
    patches = audio.reshape(b, -1, samples_per_patch)
    if patch_points is None:
        return patches.reshape(b, -1)
    if patch_points.ndim == 1:
        return patches[:, patch_points].reshape(b, -1)
    idx = patch_points[..., None].expand(-1, -1, samples_per_patch)
    return torch.gather(patches, 1, idx).reshape(b, -1)
