"""Optical-flow inputs: .flo and KITTI PNG ground truth, frame-pair discovery, video frame pairs.

Shapes: images (H, W, 3) uint8 RGB; flow (H, W, 2) float32 with [..., 0] = u (x, right) and
[..., 1] = v (y, down) in pixels, mapping frame 1 onto frame 2; valid (H, W) bool.

Ground-truth formats:
    .flo (Middlebury/Sintel/FlyingChairs): float32 202021.25, int32 width, int32 height, then
        H*W*2 float32 (u, v interleaved), little-endian. Middlebury marks unknown flow with
        |u| or |v| > 1e9 (`UNKNOWN_FLOW_THRESH`).
    KITTI PNG: 16-bit RGB; u = (R - 2**15) / 64, v = (G - 2**15) / 64, B > 0 where valid. Pillow
        silently reads 16-bit RGB PNGs as 8 bits, so it is decoded with torchvision's `decode_png`.

Layouts found by `discover_flow_pairs` (one `FlowPair` per image pair, `layout` says which):
    "sintel"       <scene>/frame_0001.png, frame_0002.png ... (consecutive numbers); GT, when
                   present, in ../../flow/<scene>/frame_0001.flo (MPI-Sintel training/clean|final)
                   or ../flow/<scene>/frame_0001.flo
    "kitti"        image_2/000000_10.png + 000000_11.png, GT ../flow_occ/000000_10.png (else
                   ../flow_noc/); also a flat folder with frame1.png, frame2.png, flow_gt.png
    "middlebury"   frame10.png, frame11.png ... (consecutive numbers); GT flow10.flo beside them or
                   in ../../other-gt-flow/<scene>/flow10.flo
    "flyingchairs" 00001-img0.ppm + 00001-img1.ppm (+ 00001-gt.flo), or the mmflow variant
                   00001_img1.ppm + 00001_img2.ppm (+ 00001_flow.flo)
    "frames"       any other folder of >= 2 images: consecutive pairs in natural sort order, no GT
Folders holding masks or GT images (occlusions, invalid, flow_occ, ...) are not searched for frames.

Every path may be local or a URI (``s3://...``): discovery walks through ``pipelines.storage``
(``iter_flow_pairs`` streams the pairs folder by folder) and the readers fetch bytes through it.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import re
import struct
import unicodedata
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_png

from pipelines import storage
from pipelines.readers.image_io import load_image
from pipelines.readers.video_decode import VideoDecodeError, VideoSource, open_video, select_streams

FLO_MAGIC = 202021.25
UNKNOWN_FLOW_THRESH = 1e9
KITTI_OFFSET = 2**15
KITTI_SCALE = 64.0
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".webp", ".tif", ".tiff"})
#: Sub-folders of a flow dataset that hold masks, disparities or GT images, never input frames.
NON_FRAME_DIRS = frozenset(
    {"occlusions", "invalid", "flow", "flow_occ", "flow_noc", "obj_map", "flow_viz", "other-gt-flow",
     "disp_occ", "disp_noc", "disp_occ_0", "disp_occ_1", "disp_noc_0", "disp_noc_1",
     "viz_flow_occ", "viz_flow_occ_dilate_1"}
)


class FlowFormatError(ValueError):
    """A flow file is not what its format says (bad magic, size mismatch, wrong PNG depth)."""


# ----------------------------------------------------------------------------- readers / writers


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a .flo file (local path or URI) -> (H, W, 2) float32, values as stored (unknown markers kept, see
    `flo_valid`)."""
    data = storage.resolve(path).read_bytes()
    if len(data) < 12:
        raise FlowFormatError(f"{path}: {len(data)} bytes, too short for a .flo header (12 bytes)")
    magic = struct.unpack("<f", data[:4])[0]
    if magic != FLO_MAGIC:
        raise FlowFormatError(f"{path}: bad .flo magic {magic!r}, expected {FLO_MAGIC}")
    width, height = struct.unpack("<ii", data[4:12])
    if width <= 0 or height <= 0 or width * height > 2**30:
        raise FlowFormatError(f"{path}: implausible .flo size {width}x{height}")
    expected = 12 + 8 * width * height
    if len(data) != expected:
        raise FlowFormatError(f"{path}: {len(data)} bytes, expected {expected} for {width}x{height} flow")
    return np.frombuffer(data, dtype="<f4", offset=12).reshape(height, width, 2).astype(np.float32)


def flo_bytes(flow: np.ndarray) -> bytes:
    """(H, W, 2) flow -> the bytes of a .flo file (Middlebury: magic, width, height, float32 little-endian)."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got {flow.shape}")
    height, width = flow.shape[:2]
    return struct.pack("<fii", FLO_MAGIC, width, height) + np.ascontiguousarray(flow, dtype="<f4").tobytes()


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write (H, W, 2) flow as a .flo file (float32 little-endian)."""
    Path(path).write_bytes(flo_bytes(flow))


def flo_valid(flow: np.ndarray) -> np.ndarray:
    """(H, W) bool: finite flow not marked unknown (|u| or |v| > 1e9, the Middlebury convention)."""
    return np.isfinite(flow).all(axis=-1) & (np.abs(flow) <= UNKNOWN_FLOW_THRESH).all(axis=-1)


def read_kitti_flow_png(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read KITTI flow GT (local path or URI) -> (flow (H, W, 2) float32, valid (H, W) bool); flow is as
    decoded ((0 - 2**15) / 64 = -512 where invalid)."""
    data = storage.resolve(path).read_bytes()
    try:
        image = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.UNCHANGED)
    except RuntimeError as e:
        raise FlowFormatError(f"{path}: not a readable PNG: {e}") from e
    if image.dtype != torch.uint16 or image.shape[0] != 3:
        raise FlowFormatError(f"{path}: KITTI flow must be a 16-bit RGB PNG, got {image.dtype} {tuple(image.shape)}")
    rgb = image.permute(1, 2, 0).numpy().astype(np.float32)  # (H, W, 3)
    flow = (rgb[..., :2] - KITTI_OFFSET) / KITTI_SCALE
    return flow, rgb[..., 2] > 0


def encode_png_rgb16(image: np.ndarray) -> bytes:
    """(H, W, 3) uint16 -> 16-bit RGB PNG bytes (a minimal encoder: Pillow cannot write this mode)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3), got {image.shape}")
    height, width = image.shape[:2]
    rows = np.ascontiguousarray(image, dtype=">u2").view(np.uint8).reshape(height, width * 6)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16-bit, colour type 2 (RGB)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_kitti_flow_png(path: str | os.PathLike, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
    """Write (H, W, 2) flow (+ (H, W) valid mask, default all valid) in the KITTI 16-bit PNG format."""
    flow = np.asarray(flow, dtype=np.float64)
    valid = np.ones(flow.shape[:2], bool) if valid is None else np.asarray(valid, bool)
    encoded = np.clip(np.rint(flow * KITTI_SCALE + KITTI_OFFSET), 0, 2**16 - 1)
    image = np.concatenate([encoded, valid[..., None]], axis=-1).astype(np.uint16)
    image[~valid, :2] = 0
    Path(path).write_bytes(encode_png_rgb16(image))


# ----------------------------------------------------------------------------- pair discovery


@dataclass(frozen=True)
class FlowPair:
    """Two frames (and optional GT) found on some filesystem. pair_id: frame 1's path relative to the searched
    root, without extension (stable across runs and mounts). Paths are absolute local paths or URIs (what
    ``storage.resolve`` takes). flow_format: "flo", "kitti_png" or None."""

    pair_id: str
    frame1_path: str
    frame2_path: str
    flow_path: str | None
    flow_format: str | None
    layout: str


class LoadedPair(NamedTuple):
    """img1, img2: (H, W, 3) uint8; flow: (H, W, 2) float32 or None; valid: (H, W) bool or None."""

    img1: np.ndarray
    img2: np.ndarray
    flow: np.ndarray | None
    valid: np.ndarray | None


_CHAIRS = re.compile(r"^(\d+)-img0\.ppm$")
_CHAIRS_MMFLOW = re.compile(r"^(\d+)_img1\.ppm$")
_KITTI = re.compile(r"^(\d{6})_10\.png$")
_SINTEL = re.compile(r"^frame_(\d+)\.png$")
_MIDDLEBURY = re.compile(r"^frame(\d+)\.png$")
_DIGITS = re.compile(r"(\d+)")
_LISTINGS_KEPT = 64  # folder listings cached for GT look-ups on object stores


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def _flow_format(loc: storage.Location | None) -> str | None:
    if loc is None:
        return None
    return "kitti_png" if loc.path.lower().endswith(".png") else "flo"


def _parent(loc: storage.Location | None) -> storage.Location | None:
    """The folder holding ``loc``; None above a filesystem's or bucket's root (no GT is looked up there)."""
    if loc is None:
        return None
    if loc.is_local:
        parent = os.path.dirname(loc.path)
        return None if parent == loc.path else storage.Location(loc.fs, parent, parent)
    path = loc.path.rstrip("/")
    parent = posixpath.dirname(path)
    if not parent or parent == path:
        return None
    return storage.Location(loc.fs, parent, loc.uri.rstrip("/").rsplit("/", 1)[0])


def _inside(path: str, folder: str) -> bool:
    folder = folder.rstrip("/" + os.sep)
    return path == folder or path.startswith((folder + "/", folder + os.sep))


def _relpath(loc: storage.Location, root: storage.Location) -> str:
    """``loc`` relative to ``root``, "/"-separated, NFC, undecodable bytes escaped (as ``listing`` ids)."""
    if loc.is_local:
        rel = os.path.relpath(loc.path, root.path).replace(os.sep, "/")
    else:
        rel = posixpath.relpath(loc.path, root.path)
    rel = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return unicodedata.normalize("NFC", rel)


class _FileProbe:
    """Is there a file at this location? Locally a stat; on object stores a lookup in the folder's listing,
    fetched once and cached (GT folders such as Sintel's ``flow/<scene>`` serve a whole scene's pairs), so
    discovery costs one listing per folder instead of one request per candidate file."""

    def __init__(self) -> None:
        self._listings: OrderedDict[str, frozenset[str]] = OrderedDict()

    def remember(self, folder: storage.Location, names: list[str]) -> None:
        if not folder.is_local:
            self._keep(folder.path, frozenset(names))

    def _keep(self, key: str, names: frozenset[str]) -> frozenset[str]:
        self._listings[key] = names
        self._listings.move_to_end(key)
        while len(self._listings) > _LISTINGS_KEPT:
            self._listings.popitem(last=False)
        return names

    def is_file(self, loc: storage.Location) -> bool:
        if loc.is_local:
            return os.path.isfile(loc.path)
        folder = _parent(loc)
        if folder is None:
            return False
        names = self._listings.get(folder.path)
        if names is None:
            names = self._keep(folder.path, frozenset(name for name, _ in storage.list_names(folder)))
        return loc.name in names

    def first(self, *candidates: storage.Location | None) -> storage.Location | None:
        return next((c for c in candidates if c is not None and self.is_file(c)), None)


def _join(folder: storage.Location | None, *parts: str) -> storage.Location | None:
    return None if folder is None else folder.join(*parts)


class _PairCollector:
    def __init__(self, root: storage.Location) -> None:
        self.root = root
        self.pairs: list[FlowPair] = []

    def add(self, frame1: storage.Location, frame2: storage.Location, flow: storage.Location | None,
            layout: str) -> None:
        pair_id = posixpath.splitext(_relpath(frame1, self.root))[0]
        self.pairs.append(FlowPair(pair_id, frame1.uri, frame2.uri, None if flow is None else flow.uri,
                                   _flow_format(flow), layout))


def _scan_dir(folder: storage.Location, names: list[str], out: _PairCollector, probe: _FileProbe) -> None:
    """Add every pair found among the files ``names`` (sorted) of one folder."""
    remaining = set(names)
    probe.remember(folder, names)

    def take(*files: str) -> None:
        remaining.difference_update(files)

    for name in names:  # FlyingChairs, both naming schemes
        if m := _CHAIRS.match(name):
            second, gt = f"{m[1]}-img1.ppm", f"{m[1]}-gt.flo"
        elif m := _CHAIRS_MMFLOW.match(name):
            second, gt = f"{m[1]}_img2.ppm", f"{m[1]}_flow.flo"
        else:
            continue
        if second in remaining:
            out.add(folder.join(name), folder.join(second), probe.first(folder.join(gt)), "flyingchairs")
            take(name, second)
    for name in names:  # KITTI image_2 / colored_0
        if (m := _KITTI.match(name)) and f"{m[1]}_11.png" in remaining:
            gt = None
            if folder.name in ("image_2", "colored_0"):
                parent = _parent(folder)
                gt = probe.first(_join(parent, "flow_occ", name), _join(parent, "flow_noc", name))
            out.add(folder.join(name), folder.join(f"{m[1]}_11.png"), gt, "kitti")
            take(name, f"{m[1]}_11.png")
    flat = {n.lower(): n for n in sorted(remaining)}
    if "flow_gt.png" in flat or "flow_gt.flo" in flat:  # flat sample: frame1 / frame2 / flow_gt
        firsts = [n for low, n in flat.items() if low.startswith("frame1.")]
        seconds = [n for low, n in flat.items() if low.startswith("frame2.")]
        if firsts and seconds:
            gt_name = flat.get("flow_gt.png") or flat["flow_gt.flo"]
            layout = "kitti" if gt_name.lower().endswith(".png") else "frames"
            out.add(folder.join(firsts[0]), folder.join(seconds[0]), folder.join(gt_name), layout)
            take(firsts[0], seconds[0], gt_name)
    images = sorted((n for n in remaining if posixpath.splitext(n)[1].lower() in IMAGE_EXTENSIONS),
                    key=_natural_key)
    if len(images) < 2:
        return
    for pattern, layout in ((_SINTEL, "sintel"), (_MIDDLEBURY, "middlebury")):
        numbered = {int(m[1]): n for n in images if (m := pattern.match(n))}
        if len(numbered) == len(images):
            for k in sorted(numbered):
                if k + 1 in numbered:
                    gt = _gt_for(folder, numbered[k], layout, probe)
                    out.add(folder.join(numbered[k]), folder.join(numbered[k + 1]), gt, layout)
            return
    for first, second in itertools.pairwise(images):
        out.add(folder.join(first), folder.join(second), None, "frames")


def _gt_for(folder: storage.Location, frame_name: str, layout: str,
            probe: _FileProbe) -> storage.Location | None:
    parent = _parent(folder)
    if layout == "sintel":
        flo = posixpath.splitext(frame_name)[0] + ".flo"
        return probe.first(_join(_parent(parent), "flow", folder.name, flo),
                           _join(parent, "flow", folder.name, flo))
    flo = "flow" + _MIDDLEBURY.match(frame_name)[1] + ".flo"
    return probe.first(folder.join(flo), _join(_parent(parent), "other-gt-flow", folder.name, flo))


def iter_flow_pairs(root: str | os.PathLike | storage.Location,
                    exclude: str | storage.Location | None = None) -> Iterator[FlowPair]:
    """Every frame pair under ``root`` (a local path, a URI or a ``Location``), streamed folder by folder.

    Files come from ``storage.walk_files`` (sorted, hidden names skipped); a folder is scanned once the walk
    has left it, so memory holds the file names of the folders on the current path, never the whole tree.
    Folders named in ``NON_FRAME_DIRS`` below the root (masks, GT images) and everything under ``exclude``
    (the job's output) are never scanned for frames. Pairs of one folder come sorted by pair_id; the
    folder order is the walk's (deterministic).

    Raises FileNotFoundError if ``root`` does not exist and NotADirectoryError if it is a file.
    """
    root = root if isinstance(root, storage.Location) else storage.resolve(root)
    kind = root.info().type
    if kind == storage.pafs.FileType.NotFound:
        raise FileNotFoundError(f"flow data root does not exist: {root.uri}")
    if kind != storage.pafs.FileType.Directory:
        raise NotADirectoryError(f"flow data root is not a folder: {root.uri}")
    if isinstance(exclude, str):
        exclude = storage.resolve(exclude)
    skip = exclude.path if exclude is not None and exclude.fs.type_name == root.fs.type_name else None
    probe = _FileProbe()
    open_folders: dict[str, tuple[storage.Location, list[str]]] = {}  # on the walk's path, outermost first

    def scan(folder: storage.Location, names: list[str]) -> list[FlowPair]:
        out = _PairCollector(root)
        _scan_dir(folder, names, out, probe)
        return sorted(out.pairs, key=lambda p: p.pair_id)

    for entry in storage.walk_files(root):
        loc = entry.location
        if skip is not None and _inside(loc.path, skip):
            continue
        if any(part in NON_FRAME_DIRS for part in _relpath(loc, root).split("/")[:-1]):
            continue
        folder = _parent(loc)
        for key in [k for k in open_folders if not _inside(folder.path, k)]:  # the walk has left these
            yield from scan(*open_folders.pop(key))
        open_folders.setdefault(folder.path, (folder, []))[1].append(loc.name)
    for key in reversed(list(open_folders)):
        yield from scan(*open_folders.pop(key))


def discover_flow_pairs(root: str | os.PathLike | storage.Location) -> list[FlowPair]:
    """Find every frame pair under `root` (recursively, any filesystem), sorted by pair_id; see the module
    docstring and ``iter_flow_pairs`` (which streams them).

    Raises FileNotFoundError if `root` does not exist and NotADirectoryError if it is a file.
    Returns an empty list when nothing is found (the manifest builder turns that into an error).
    """
    return sorted(iter_flow_pairs(root), key=lambda p: p.pair_id)


def load_pair(pair: FlowPair) -> LoadedPair:
    """Decode a pair (paths local or URIs). Unknown / invalid GT pixels get flow 0 and valid False.

    Raises `image_io.ImageDecodeError` for bad images and `FlowFormatError` for bad GT or when
    the GT or the second frame does not match frame 1's size.
    """
    img1, img2 = load_image(pair.frame1_path), load_image(pair.frame2_path)
    if img1.shape != img2.shape:
        raise FlowFormatError(f"{pair.pair_id}: frame sizes differ: {img1.shape} vs {img2.shape}")
    if pair.flow_path is None:
        return LoadedPair(img1, img2, None, None)
    if pair.flow_format == "kitti_png":
        flow, valid = read_kitti_flow_png(pair.flow_path)
    else:
        flow = read_flo(pair.flow_path)
        valid = flo_valid(flow)
    if flow.shape[:2] != img1.shape[:2]:
        raise FlowFormatError(f"{pair.pair_id}: flow {flow.shape[:2]} does not match frames {img1.shape[:2]}")
    flow[~valid] = 0.0
    return LoadedPair(img1, img2, flow, valid)


# ----------------------------------------------------------------------------- video frame pairs


@dataclass
class VideoFramePair:
    """Frames `frame1_index` and `frame1_index + gap` of a video (decode order = display order).
    frame1, frame2: (H, W, 3) uint8 at the video's own resolution."""

    pair_index: int
    frame1_index: int
    time1_s: float
    time2_s: float
    frame1: np.ndarray
    frame2: np.ndarray


def video_frame_pairs(
    source: VideoSource,
    stride: int = 1,
    max_pairs: int | None = None,
    *,
    gap: int = 1,
    video_stream: int = 0,
    decode_threads: int = 0,
) -> Iterator[VideoFramePair]:
    """Yield (frame i, frame i + gap) for i = 0, stride, 2*stride, ... of one video stream.

    stride=1, gap=1 gives every consecutive pair. Only the frames a pair uses are converted to RGB.
    Raises `VideoDecodeError` when the file cannot be opened or has no frame; after a decoder
    error or a truncated packet it raises `VideoDecodeError("decode_error")` *after* yielding the
    pairs decoded before it, so collect first if a job needs all-or-nothing.
    """
    if stride <= 0 or gap <= 0 or (max_pairs is not None and max_pairs <= 0):
        raise ValueError("stride, gap and max_pairs must be > 0")
    container = open_video(source)
    try:
        stream, _ = select_streams(container, video_stream, None)
        stream.thread_type = "AUTO"
        stream.thread_count = decode_threads
        held: dict[int, tuple[float, np.ndarray]] = {}  # frame index -> (time, rgb)
        index, pairs = -1, 0
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    raise VideoDecodeError("decode_error", "corrupt video packet (truncated or damaged file)")
                for frame in packet.decode():
                    index += 1
                    if index % stride == 0 or (index - gap >= 0 and (index - gap) % stride == 0):
                        t = float(frame.pts * stream.time_base) if frame.pts is not None else float("nan")
                        held[index] = (t, frame.to_ndarray(format="rgb24"))
                    first = index - gap
                    if first >= 0 and first % stride == 0:
                        (t1, f1), (t2, f2) = held.pop(first), held[index]
                        yield VideoFramePair(pairs, first, t1, t2, f1, f2)
                        pairs += 1
                        if max_pairs is not None and pairs >= max_pairs:
                            return
                    if index % stride != 0:
                        held.pop(index, None)
        except av.FFmpegError as e:
            raise VideoDecodeError("decode_error", f"after frame {index}: {type(e).__name__}: {e}") from e
        if index < 0:
            raise VideoDecodeError("no_frames", "video stream yielded no frames")
    finally:
        container.close()
