"""Synthetic optical-flow pairs: textured layers moved by known smooth flow fields (FlyingChairs-style).

A pair is rendered backwards from the second frame, so the ground truth is exact by construction:

    frame2 = composite of layers (a textured background and a few textured objects with soft masks)
    frame1(x) = frame2 layer L sampled at x + flow_L(x)  for the top-most layer L visible at x in frame 1
    flow(x) = flow_L(x)  (brightness constancy: frame1(x) == frame2(x + flow(x)) wherever x is not occluded)

Each layer's flow is an affine motion (translation, rotation, scale about a random centre) plus a smooth
non-rigid deformation (a coarse random grid upsampled bicubically). Flow is (u, v) = (x, y) in pixels, the
convention of ``.flo`` files and of ``PerceiverForOpticalFlow``. Pairs are a pure function of
(spec, seed), so a dataset of ``range(n)`` seeds is reproducible on every worker and every epoch.

Shapes: frames (H, W, 3) uint8, flow (H, W, 2) float32, valid / occluded (H, W) bool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SyntheticFlowSpec:
    """What the generator draws. Magnitudes are in pixels of the generated frames.

    max_translation: largest per-layer translation; radii are drawn as ``max * u**2`` (mostly small motions).
    max_rotation_deg / max_scale: per-layer rotation and relative scale change.
    deform: amplitude of the smooth non-rigid component; deform_grid: its coarse grid (rows, cols).
    max_objects: foreground objects per pair (0..max_objects), each with its own motion.
    noise: std of Gaussian pixel noise added to both frames (0-255 scale).
    """

    height: int = 48
    width: int = 64
    max_translation: float = 3.0
    max_rotation_deg: float = 4.0
    max_scale: float = 0.04
    deform: float = 0.75
    deform_grid: tuple[int, int] = (3, 4)
    max_objects: int = 3
    noise: float = 1.0

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"frames must be at least 8x8, got {self.height}x{self.width}")
        if min(self.max_translation, self.max_rotation_deg, self.max_scale, self.deform, self.noise) < 0:
            raise ValueError("SyntheticFlowSpec magnitudes must be >= 0")
        if self.max_objects < 0:
            raise ValueError("max_objects must be >= 0")


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    return xs, ys


def _upsample(coarse: np.ndarray, h: int, w: int) -> np.ndarray:
    """(c, gh, gw) -> (c, h, w) bicubic, corners aligned (a smooth field over the whole frame)."""
    t = torch.from_numpy(coarse).double()[None]
    return F.interpolate(t, size=(h, w), mode="bicubic", align_corners=True)[0].numpy()


def texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float in [0, 255]: multi-octave coloured noise (a texture that local patches can track)
    plus a few hard-edged shapes."""
    img = np.zeros((3, h, w))
    slope = rng.uniform(0.7, 1.6)  # > 1: coarse structure dominates (natural images); < 1: fine grain does
    for octave in range(6):  # cells from ~1.5 px (octave 5) up to the whole frame
        cells = (max(2, int(1.5 * h / 2 ** (5 - octave))), max(2, int(1.5 * w / 2 ** (5 - octave))))
        img += _upsample(rng.normal(0.0, 1.0, (3, *cells)), h, w) * slope ** (5 - octave)
    img = img.transpose(1, 2, 0)
    img = (img - img.mean()) / (img.std() + 1e-6) * rng.uniform(25, 60) + rng.uniform(60, 190, 3)
    xs, ys = _grid(h, w)
    for _ in range(rng.integers(2, 7)):  # edges: rectangles and discs of flat colour
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(2, w / 3), rng.uniform(2, h / 3)
        inside = ((np.abs(xs - cx) < rx) & (np.abs(ys - cy) < ry) if rng.random() < 0.5
                  else ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1)
        img[inside] = 0.5 * img[inside] + 0.5 * rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255)


def _layer_flow(rng: np.random.Generator, spec: SyntheticFlowSpec, h: int, w: int,
                deform_scale: float) -> np.ndarray:
    """(h, w, 2) smooth flow on the frame-1 grid: affine about a random centre + bicubic deformation."""
    xs, ys = _grid(h, w)
    radius = spec.max_translation * rng.random() ** 2
    angle = rng.uniform(0, 2 * np.pi)
    tx, ty = radius * np.cos(angle), radius * np.sin(angle)
    theta = np.deg2rad(rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg))
    scale = 1.0 + rng.uniform(-spec.max_scale, spec.max_scale)
    a = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) - np.eye(2)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    dx, dy = xs - cx, ys - cy
    u = a[0, 0] * dx + a[0, 1] * dy + tx
    v = a[1, 0] * dx + a[1, 1] * dy + ty
    flow = np.stack([u, v], axis=-1)
    if spec.deform > 0 and deform_scale > 0:
        coarse = rng.normal(0.0, spec.deform * deform_scale, (2, *spec.deform_grid))
        flow += _upsample(coarse, h, w).transpose(1, 2, 0)
    return flow


def _object_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) float mask in [0, 1]: an ellipse or a rotated rectangle with a one-pixel soft edge."""
    xs, ys = _grid(h, w)
    cx, cy = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.15 * h, 0.85 * h)
    rx, ry = rng.uniform(0.08, 0.3) * w, rng.uniform(0.08, 0.3) * h
    phi = rng.uniform(0, np.pi)
    px = (xs - cx) * np.cos(phi) + (ys - cy) * np.sin(phi)
    py = -(xs - cx) * np.sin(phi) + (ys - cy) * np.cos(phi)
    if rng.random() < 0.5:
        dist = (np.sqrt((px / rx) ** 2 + (py / ry) ** 2) - 1.0) * min(rx, ry)  # ~signed distance, px
    else:
        dist = np.maximum(np.abs(px) - rx, np.abs(py) - ry)
    return np.clip(0.5 - dist, 0.0, 1.0)


def bilinear_sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample (h, w[, c]) ``image`` at float coordinates (x, y) of any shape; edges are clamped."""
    h, w = image.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2)
    fx, fy = x - x0, y - y0
    if image.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def make_pair(spec: SyntheticFlowSpec, seed: int) -> dict[str, np.ndarray]:
    """One pair: frame1, frame2 (H, W, 3) uint8; flow (H, W, 2) float32; valid, occluded (H, W) bool.

    ``valid`` is all True (the flow is defined everywhere, as in FlyingChairs); ``occluded`` marks frame-1
    pixels whose match is hidden by a higher layer in frame 2 or leaves the frame.
    """
    rng = np.random.default_rng(seed)
    h, w = spec.height, spec.width
    # Layers live on a canvas with a margin so that every sampled frame-1 position has texture.
    m = int(np.ceil(spec.max_translation + spec.deform * 3 + (spec.max_scale + np.deg2rad(spec.max_rotation_deg))
                    * max(h, w))) + 2
    ch, cw = h + 2 * m, w + 2 * m
    xs, ys = _grid(h, w)

    layers = [(texture(rng, ch, cw), np.ones((ch, cw)), _layer_flow(rng, spec, h, w, 1.0))]
    for _ in range(rng.integers(0, spec.max_objects + 1)):
        mask = np.zeros((ch, cw))
        mask[m:m + h, m:m + w] = _object_mask(rng, h, w)
        layers.append((texture(rng, ch, cw), mask, _layer_flow(rng, spec, h, w, 0.5)))

    # frame 2: the layers composited on the canvas' centre crop
    frame2 = np.zeros((h, w, 3))
    for tex, mask, _ in layers:
        a = mask[m:m + h, m:m + w, None]
        frame2 = frame2 * (1 - a) + tex[m:m + h, m:m + w] * a

    # frame 1: every layer sampled backwards along its own flow, composited in the same order
    frame1 = np.zeros((h, w, 3))
    flow = np.zeros((h, w, 2))
    top = np.zeros((h, w), dtype=np.int64)
    for index, (tex, mask, lflow) in enumerate(layers):
        sx, sy = xs + lflow[..., 0] + m, ys + lflow[..., 1] + m
        a = bilinear_sample(mask, sx, sy)
        frame1 = frame1 * (1 - a[..., None]) + bilinear_sample(tex, sx, sy) * a[..., None]
        visible = a > 0.5
        flow[visible] = lflow[visible]
        top[visible] = index

    # occlusion: the match x + flow(x) in frame 2 is covered by a layer above the visible one, or outside
    tx, ty = xs + flow[..., 0], ys + flow[..., 1]
    occluded = (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
    for index, (_, mask, _) in enumerate(layers[1:], start=1):
        covered = bilinear_sample(mask, tx + m, ty + m) > 0.02
        occluded |= covered & (index > top)

    if spec.noise > 0:
        frame1 = frame1 + rng.normal(0.0, spec.noise, frame1.shape)
        frame2 = frame2 + rng.normal(0.0, spec.noise, frame2.shape)
    return {
        "frame1": np.clip(np.rint(frame1), 0, 255).astype(np.uint8),
        "frame2": np.clip(np.rint(frame2), 0, 255).astype(np.uint8),
        "flow": flow.astype(np.float32),
        "valid": np.ones((h, w), dtype=bool),
        "occluded": occluded,
    }


def make_batch(spec: SyntheticFlowSpec, seeds) -> dict[str, np.ndarray]:
    """Pairs for each seed, stacked: frame1/frame2 (B, H, W, 3), flow (B, H, W, 2), valid (B, H, W)."""
    pairs = [make_pair(spec, int(s)) for s in seeds]
    return {key: np.stack([p[key] for p in pairs]) for key in ("frame1", "frame2", "flow", "valid")}
