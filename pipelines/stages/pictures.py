"""PNG pictures for people to look at: flow colour maps, original | reconstruction pairs, clip strips.

Images are (H, W, 3) uint8, numpy arrays or tensors. File names come from input ids through
``safe_filename``, which cannot leave the output folder whatever the id contains.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import torch
from torchvision.io import encode_png
from torchvision.utils import flow_to_image

MAX_STEM_CHARS = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(id: object, max_chars: int = MAX_STEM_CHARS) -> str:
    """A file-name stem derived from ``id`` that is safe to join onto an output folder.

    Only ``[A-Za-z0-9._-]`` survive (other runs become ``_``), dot runs collapse to one dot,
    leading dots, dashes and underscores go, the readable part is cut to ``max_chars``, and a
    short hash of the full id is appended, so distinct ids stay distinct (``a/b`` vs ``a_b``) and
    the name is never empty, ``.`` or ``..``. Add the extension yourself.
    """
    text = id if isinstance(id, str) else str(id)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    readable = re.sub(r"\.{2,}", ".", _UNSAFE.sub("_", text)).lstrip("._-")[:max_chars]
    return f"{readable}-{digest}" if readable else digest


def _tensor(x) -> torch.Tensor:
    """``x`` as a tensor; a read-only array (Arrow buffers) is copied, or torch warns on every job run."""
    if isinstance(x, torch.Tensor):
        return x
    array = np.asarray(x)
    return torch.as_tensor(array if array.flags.writeable else array.copy())


def _as_hwc_uint8(image, name: str) -> torch.Tensor:
    image = _tensor(image)
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be (H, W, 3) uint8, got {tuple(image.shape)} {image.dtype}")
    return image.cpu()


def png_bytes(image_hwc: torch.Tensor) -> bytes:
    """(H, W, 3) uint8 -> PNG file bytes (for sidecars written through ``pipelines.storage``)."""
    return encode_png(image_hwc.permute(2, 0, 1).contiguous()).numpy().tobytes()


def flow_image(flow, valid=None) -> torch.Tensor:
    """(H, W, 2) flow in pixels -> (H, W, 3) uint8 colour wheel picture (torchvision's colouring,
    saturation scaled by the largest vector). Invalid or non-finite vectors are drawn as zero."""
    flow = _tensor(flow)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {tuple(flow.shape)}")
    flow = flow.detach().cpu().float()
    keep = torch.isfinite(flow).all(dim=-1)
    if valid is not None:
        keep &= _tensor(valid).to(torch.bool)
    flow = torch.where(keep[..., None], flow, torch.zeros(()))
    return flow_to_image(flow.permute(2, 0, 1)).permute(1, 2, 0)  # (H, W, 3)


def strip_frame_indices(num_frames: int, max_frames: int) -> list[int]:
    """Up to ``max_frames`` frame indices spread evenly over the clip, first and last included."""
    if num_frames < 1 or max_frames < 1:
        raise ValueError(f"need at least one frame, got num_frames={num_frames} max_frames={max_frames}")
    if num_frames <= max_frames:
        return list(range(num_frames))
    return np.linspace(0, num_frames - 1, max_frames).round().astype(int).tolist()


def clip_strip(frames_orig, frames_rec, max_frames: int = 4) -> torch.Tensor:
    """A two-row (2H, k*W, 3) uint8 picture: sampled original frames on top, the same reconstructed frames
    below. ``frames_orig`` and ``frames_rec`` are (T, H, W, 3) uint8 of the same shape.
    """
    orig, rec = _tensor(frames_orig), _tensor(frames_rec)
    if orig.shape != rec.shape or orig.ndim != 4:
        raise ValueError(f"expected equal (T, H, W, 3) clips, got {tuple(orig.shape)} and {tuple(rec.shape)}")
    idx = strip_frame_indices(orig.shape[0], max_frames)
    top = torch.cat([_as_hwc_uint8(orig[i], "frames_orig") for i in idx], dim=1)  # (H, k*W, 3)
    bottom = torch.cat([_as_hwc_uint8(rec[i], "frames_rec") for i in idx], dim=1)
    return torch.cat([top, bottom], dim=0)  # (2H, k*W, 3)
