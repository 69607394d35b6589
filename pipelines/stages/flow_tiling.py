"""Optical flow on frames of any size with a fixed-size model: overlapping tiles, blended.

The Perceiver IO flow model was trained on 368x496 crops and takes exactly that size. Larger frames
are covered by overlapping tiles whose predictions are averaged with weights that fall off towards
the tile border (the procedure of DeepMind's Perceiver IO flow colab); frames smaller than a tile
are edge-padded up to the tile and the result cropped back.

Shapes: B frame pairs, H x W frame size, (th, tw) tile size, N tiles in one model call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

# predict(tiles1, tiles2) -> flow: (N, 3, th, tw) twice -> (N, th, tw, 2) in pixels, (u, v) = (x, y).
FlowPredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PERCEIVER_FLOW_TILE = (368, 496)


def tile_starts(size: int, tile: int, min_overlap: int) -> list[int]:
    """Evenly spread start offsets of tiles covering ``range(size)``, neighbours overlapping by
    at least ``min_overlap``. The first tile starts at 0 and the last one ends at ``size``."""
    if size < tile:
        raise ValueError(f"size {size} is smaller than the tile {tile}; pad first")
    if not 0 <= min_overlap < tile:
        raise ValueError(f"min_overlap must be in [0, {tile}), got {min_overlap}")
    if size == tile:
        return [0]
    n = math.ceil((size - tile) / (tile - min_overlap)) + 1
    # Rounding an even spread keeps every step <= tile - min_overlap, since the exact step is.
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def tile_weights(tile_size: tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """(th, tw) blending weight: distance to the nearest tile border, counted from 1.

    The pyramid ``min(tent_y, tent_x)`` used by DeepMind's flow colab. It is >= 1 everywhere, so
    every pixel of every tile contributes and the summed weights never vanish.
    """
    th, tw = tile_size
    y = torch.arange(th, device=device, dtype=dtype)
    x = torch.arange(tw, device=device, dtype=dtype)
    tent_y = torch.minimum(y + 1, th - y)  # (th,)
    tent_x = torch.minimum(x + 1, tw - x)  # (tw,)
    return torch.minimum(tent_y[:, None], tent_x[None, :])  # (th, tw)


def tiled_flow(
    frame1: torch.Tensor,
    frame2: torch.Tensor,
    predict: FlowPredictor,
    tile_size: tuple[int, int] = PERCEIVER_FLOW_TILE,
    min_overlap: int = 20,
    batch_size: int = 8,
) -> torch.Tensor:
    """Flow from ``frame1`` to ``frame2`` for frames of any size, from a fixed-size predictor.

    Args:
        frame1, frame2: (B, 3, H, W) float frames, in whatever range ``predict`` expects (this
            function only cuts them; see ``flow_model_inputs`` for the Perceiver recipe).
        predict: called with two (N, 3, th, tw) tile batches, N <= ``batch_size``; returns
            (N, th, tw, 2) flow in pixels. Run this function under ``torch.inference_mode()``.
        tile_size: (th, tw) the predictor accepts.
        min_overlap: least overlap in pixels between neighbouring tiles.
        batch_size: tiles per ``predict`` call (tiles of all B pairs are pooled).

    Returns:
        (B, H, W, 2) flow: the weighted mean of every tile's prediction at each pixel.
    """
    if frame1.shape != frame2.shape or frame1.ndim != 4:
        raise ValueError(f"expected two equal (B, 3, H, W) frames, got {tuple(frame1.shape)} "
                         f"and {tuple(frame2.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    B, _, H, W = frame1.shape
    th, tw = tile_size

    # Edge padding (bottom/right) up to one tile; reflect padding cannot grow a side by more
    # than its own length, and these frames can be far smaller than the tile.
    pad_h, pad_w = max(th - H, 0), max(tw - W, 0)
    if pad_h or pad_w:
        frame1 = F.pad(frame1, (0, pad_w, 0, pad_h), mode="replicate")
        frame2 = F.pad(frame2, (0, pad_w, 0, pad_h), mode="replicate")
    Hp, Wp = H + pad_h, W + pad_w

    tiles = [(b, y, x)
             for b in range(B)
             for y in tile_starts(Hp, th, min_overlap)
             for x in tile_starts(Wp, tw, min_overlap)]
    weight = tile_weights(tile_size, device=frame1.device)[..., None]  # (th, tw, 1)
    flow_sum = torch.zeros(B, Hp, Wp, 2, device=frame1.device)
    weight_sum = torch.zeros(B, Hp, Wp, 1, device=frame1.device)

    for start in range(0, len(tiles), batch_size):
        chunk = tiles[start:start + batch_size]
        tiles1 = torch.stack([frame1[b, :, y:y + th, x:x + tw] for b, y, x in chunk])  # (N, 3, th, tw)
        tiles2 = torch.stack([frame2[b, :, y:y + th, x:x + tw] for b, y, x in chunk])
        flow = predict(tiles1, tiles2)
        if flow.shape != (len(chunk), th, tw, 2):
            raise ValueError(f"predict returned {tuple(flow.shape)}, expected {(len(chunk), th, tw, 2)}")
        flow = flow.to(flow_sum.dtype)
        for (b, y, x), tile_flow in zip(chunk, flow):
            flow_sum[b, y:y + th, x:x + tw] += tile_flow * weight
            weight_sum[b, y:y + th, x:x + tw] += weight

    return (flow_sum / weight_sum)[:, :H, :W]  # (B, H, W, 2)


def flow_model_inputs(frame1: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
    """Perceiver IO optical-flow input: (B, 3, H, W) frames in [0, 255] -> (B, 2, 27, H, W).

    Each frame is scaled to [-1, 1], then every pixel gets its 3x3 neighbourhood (zero padding of
    1, i.e. padding with the mid grey of the scaled image) as 27 features ordered (kernel row,
    kernel column, colour), colour fastest: the order of ``tf.image.extract_patches`` used by
    DeepMind's ``patches_for_flow``, which transformers' ``PerceiverForOpticalFlow`` expects.
    """
    if frame1.shape != frame2.shape or frame1.ndim != 4 or frame1.shape[1] != 3:
        raise ValueError(f"expected two equal (B, 3, H, W) frames, got {tuple(frame1.shape)} "
                         f"and {tuple(frame2.shape)}")
    B, C, H, W = frame1.shape
    frames = torch.stack([frame1, frame2], dim=1).flatten(0, 1).float()  # (B*2, 3, H, W)
    frames = frames / 255 * 2 - 1
    patches = F.unfold(frames, kernel_size=3, padding=1)  # (B*2, 3*3*3, H*W), order (colour, row, col)
    patches = patches.view(B * 2, C, 3, 3, H, W).permute(0, 2, 3, 1, 4, 5)  # (B*2, row, col, colour, H, W)
    return patches.reshape(B, 2, 9 * C, H, W)
