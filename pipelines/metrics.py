"""Evaluation metrics shared by the batch jobs and training: optical flow (EPE, n-px accuracy, KITTI Fl-all),
PSNR, top-k accuracy and the byte-level language-model measures (bits per byte, the unigram baseline).

Flow fields are (..., H, W, 2) in pixels with (u, v) last; a validity mask is (..., H, W) bool.
Invalid ground truth (KITTI's B channel, Middlebury's "unknown" value u = v = 1.67e9) is for the
caller to turn into the mask; these functions never guess it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

METRIC_NAMES = ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all")


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    array = np.asarray(x)  # read-only (Arrow buffers, np.frombuffer): copied, or torch warns on every job run
    return torch.as_tensor(array if array.flags.writeable else array.copy())


def endpoint_error(pred, gt) -> torch.Tensor:
    """(..., H, W, 2) twice -> (..., H, W) Euclidean distance between the flow vectors (float64)."""
    pred, gt = _as_tensor(pred).double(), _as_tensor(gt).double()
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"expected equal (..., H, W, 2) flows, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    return torch.linalg.vector_norm(pred - gt, dim=-1)


@dataclass(frozen=True)
class FlowErrorSums:
    """Pixel counts behind the flow metrics of one or more pairs; add them to pool pairs."""

    num_pixels: int
    epe_sum: float
    within_1px: int
    within_3px: int
    within_5px: int
    outliers: int  # KITTI Fl: EPE > 3 px and EPE > 5 % of |gt|

    def __add__(self, other: FlowErrorSums) -> FlowErrorSums:
        return FlowErrorSums(
            self.num_pixels + other.num_pixels,
            self.epe_sum + other.epe_sum,
            self.within_1px + other.within_1px,
            self.within_3px + other.within_3px,
            self.within_5px + other.within_5px,
            self.outliers + other.outliers,
        )

    def means(self) -> dict[str, float]:
        """Pixel-weighted means: epe in px, the others as fractions in [0, 1]. NaN with no pixels."""
        n = self.num_pixels
        if n == 0:
            return {name: float("nan") for name in METRIC_NAMES}
        return {
            "epe": self.epe_sum / n,
            "acc_1px": self.within_1px / n,
            "acc_3px": self.within_3px / n,
            "acc_5px": self.within_5px / n,
            "fl_all": self.outliers / n,
        }


def flow_error_sums(pred, gt, valid=None) -> FlowErrorSums:
    """Sums and counts of the flow metrics over the valid pixels of (..., H, W, 2) flows."""
    epe = endpoint_error(pred, gt)  # (..., H, W)
    gt_norm = torch.linalg.vector_norm(_as_tensor(gt).double(), dim=-1)
    if valid is not None:
        valid = _as_tensor(valid).bool()
        if valid.shape != epe.shape:
            raise ValueError(f"valid mask {tuple(valid.shape)} does not match flow {tuple(epe.shape)}")
        epe, gt_norm = epe[valid], gt_norm[valid]
    return FlowErrorSums(
        num_pixels=epe.numel(),
        epe_sum=epe.sum().item(),
        within_1px=int((epe < 1).sum()),
        within_3px=int((epe < 3).sum()),
        within_5px=int((epe < 5).sum()),
        # Written without division so that |gt| = 0 counts as a relative error of infinity.
        outliers=int(((epe > 3) & (epe > 0.05 * gt_norm)).sum()),
    )


def epe(pred, gt, valid=None) -> float:
    """Mean endpoint error in pixels over the valid pixels (NaN if there are none)."""
    return flow_error_sums(pred, gt, valid).means()["epe"]


def accuracy(pred, gt, threshold: float, valid=None) -> float:
    """Share of valid pixels whose endpoint error is below ``threshold`` pixels."""
    err = endpoint_error(pred, gt)
    if valid is not None:
        err = err[_as_tensor(valid).bool()]
    return float("nan") if err.numel() == 0 else (err < threshold).double().mean().item()


def fl_all(pred, gt, valid=None) -> float:
    """KITTI Fl-all: share of valid pixels with EPE > 3 px and EPE > 5 % of the true flow length."""
    return flow_error_sums(pred, gt, valid).means()["fl_all"]


class FlowMetrics:
    """Accumulates flow metrics over a dataset, one ``update`` per pair (or batch of pairs).

    ``compute()`` reports pixel-weighted dataset means (every valid pixel counts once, as Sintel
    and KITTI Fl-all do) plus ``epe_pair_mean``, the mean of per-pair EPEs that RAFT reports as
    KITTI EPE. A pair with no valid pixel adds nothing.
    """

    def __init__(self) -> None:
        self.totals = FlowErrorSums(0, 0.0, 0, 0, 0, 0)
        self.pair_epes: list[float] = []

    def update(self, pred, gt, valid=None) -> FlowErrorSums:
        """Add one pair (H, W, 2), or a batch (B, H, W, 2) counted as B pairs; returns its sums."""
        pred, gt = _as_tensor(pred), _as_tensor(gt)
        if pred.ndim == 3:
            pred, gt = pred[None], gt[None]
            valid = None if valid is None else _as_tensor(valid)[None]
        pair_sums = FlowErrorSums(0, 0.0, 0, 0, 0, 0)
        for i in range(pred.shape[0]):
            sums = flow_error_sums(pred[i], gt[i], None if valid is None else valid[i])
            if sums.num_pixels:
                self.pair_epes.append(sums.epe_sum / sums.num_pixels)
            pair_sums = pair_sums + sums
        self.totals = self.totals + pair_sums
        return pair_sums

    def compute(self) -> dict[str, float]:
        means = self.totals.means()
        means["epe_pair_mean"] = float(np.mean(self.pair_epes)) if self.pair_epes else float("nan")
        means["num_pixels"] = float(self.totals.num_pixels)
        means["num_pairs"] = float(len(self.pair_epes))
        return means


def psnr_from_mse(mse: torch.Tensor | float, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of mean squared errors for signals spanning ``data_range``: 10 log10(range^2 / MSE).

    Computed in float64; an MSE of 0 gives +inf.
    """
    return 10 * torch.log10(data_range**2 / torch.as_tensor(mse, dtype=torch.float64))


def psnr(x, y, data_range: float) -> torch.Tensor:
    """Per-example PSNR in dB of (B, ...) reconstructions -> (B,); identical examples give +inf."""
    x, y = _as_tensor(x).double(), _as_tensor(y).double()
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"expected equal (B, ...) arrays, got {tuple(x.shape)} and {tuple(y.shape)}")
    return psnr_from_mse((x - y).square().flatten(1).mean(dim=1), data_range)


def topk_correct(logits_or_indices, labels, k: int) -> torch.Tensor:
    """(B,) bool: is the label among the top ``k`` predictions?

    Floating input is (B, num_classes) scores; integer input is (B, K) class indices already
    ranked best first (K >= k), e.g. the ``topk`` indices stored by an inference job.
    """
    preds, labels = _as_tensor(logits_or_indices), _as_tensor(labels)
    if preds.ndim != 2 or labels.shape != preds.shape[:1]:
        raise ValueError(f"expected (B, C) predictions and (B,) labels, got {tuple(preds.shape)} "
                         f"and {tuple(labels.shape)}")
    if preds.shape[1] < k:
        raise ValueError(f"k={k} but only {preds.shape[1]} predictions per example")
    top = preds.topk(k, dim=1).indices if preds.is_floating_point() else preds[:, :k]
    return (top == labels[:, None].to(top.dtype)).any(dim=1)


LN2 = math.log(2.0)


def bits_per_byte(nats_sum: float, num_bytes: float) -> float:
    """Mean cross-entropy in bits per predicted byte, from a sum of natural-log losses."""
    return nats_sum / max(num_bytes, 1.0) / LN2


def byte_histogram(ids: np.ndarray) -> np.ndarray:
    """Counts (256,) of the bytes in an id array (ids 0..5 are special and not counted)."""
    ids = np.asarray(ids).ravel().astype(np.int64) - 6
    return np.bincount(ids[ids >= 0], minlength=256)[:256].astype(np.float64)


def unigram_bits_per_byte(train_counts: np.ndarray, eval_counts: np.ndarray, alpha: float = 1.0) -> float:
    """Cross-entropy (bits per byte) of the eval bytes under the training byte-unigram distribution.

    The baseline an MLM must beat: a model that ignores context and predicts training byte frequencies
    (add-``alpha`` smoothed so that unseen bytes have finite cost).
    """
    train = np.asarray(train_counts, dtype=np.float64) + alpha
    probs = train / train.sum()
    eval_counts = np.asarray(eval_counts, dtype=np.float64)
    seen = eval_counts > 0
    with np.errstate(divide="ignore"):
        return float(-(eval_counts[seen] * np.log2(probs[seen])).sum() / max(eval_counts.sum(), 1.0))
