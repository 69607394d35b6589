"""Optical-flow stages: load frame pairs (CPU tasks), then tiled Perceiver flow (model actors).

Data flow::

    manifest row: a frame pair found on disk (kind "pair", + ground truth when present)
                  or a video (kind "video": consecutive frames)
      -> read_flow_inputs (CPU task, generator)  one row per pair: both frames as raw uint8 bytes (H, W vary
                                                  per pair), GT flow (H, W, 2) float32 + valid (H, W) bytes
      -> FlowWorker (actor pool)                  flow at the frames' own size: overlapping model-sized tiles,
                                                  blended (pipelines.stages.flow_tiling); EPE / accuracy vs GT;
                                                  the flow itself as a sidecar .flo file; optional PNG
      -> part file                                 schemas.FLOW

Flow is in pixels, (u, v) = (x right, y down), from frame 1 to frame 2.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipelines.batch import schemas
from pipelines.batch.model_workers import ModelWorker, save_picture
from pipelines.metrics import flow_error_sums
from pipelines.readers.flow_data import FlowPair, flo_bytes, load_pair, video_frame_pairs
from pipelines.readers.image_io import ImageDecodeError
from pipelines.readers.video_decode import VideoDecodeError
from pipelines.stages.flow_tiling import flow_model_inputs, tiled_flow
from pipelines.stages.pictures import flow_image, png_bytes

FLOW_DIR = "_flow"

PAIR_FIELDS = ["id", "input_id", "source", "source2", "layout", "pair_index", "height", "width", "has_gt",
               "warning", "error_type", "error"]
PAIR_SCHEMA = pa.schema(
    [schemas.FLOW.field(n) for n in PAIR_FIELDS]
    + [pa.field("frame1", pa.large_binary()), pa.field("frame2", pa.large_binary()),
       pa.field("gt_flow", pa.large_binary()), pa.field("gt_valid", pa.large_binary())]
    + list(schemas.BOOKKEEPING))


def _pair_row(unit: str, item_id: str, source: str, source2: str | None, layout: str, pair_index: int | None,
              img1: np.ndarray, img2: np.ndarray, flow: np.ndarray | None, valid: np.ndarray | None,
              part: int, final: bool, warning: str | None = None) -> pa.Table:
    h, w = img1.shape[:2]
    return schemas.build_table(PAIR_SCHEMA, {
        "id": [item_id], "input_id": [unit], "source": [source], "source2": [source2], "layout": [layout],
        "pair_index": [pair_index], "height": [h], "width": [w], "has_gt": [flow is not None],
        "warning": [warning], "frame1": [img1.tobytes()], "frame2": [img2.tobytes()],
        "gt_flow": [None if flow is None else np.ascontiguousarray(flow, np.float32).tobytes()],
        "gt_valid": [None if valid is None else np.ascontiguousarray(valid, np.bool_).tobytes()],
        schemas.UNIT: [unit], schemas.PART: [part], schemas.FINAL: [final]}, 1)


def _error(row: dict, reason: str, message: str) -> pa.Table:
    return schemas.error_rows(PAIR_SCHEMA, [row["id"]], [row["path"]], [reason], [message],
                              source2=[row.get("path2")], layout=[row.get("layout")])


def read_flow_inputs(batch: pa.Table, max_pairs: int | None = None, stride: int = 1, gap: int = 1,
                     video_stream: int = 0, decode_threads: int = 1) -> Iterator[pa.Table]:
    """The job's read function over a shard's manifest rows: one table per frame pair (bounded memory)."""
    for row in batch.to_pylist():
        if row["kind"] == "pair":
            try:
                pair = load_pair(FlowPair(row.get("relpath") or row["id"], row["path"], row["path2"],
                                          row.get("flow_path"), row.get("flow_format"), row["layout"]))
            except ImageDecodeError as e:
                yield _error(row, e.reason, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - bad GT file, size mismatch, ...: this pair's error
                yield _error(row, "load_failed", f"{type(e).__name__}: {e}")
                continue
            yield _pair_row(row["id"], row["id"], row["path"], row["path2"], row["layout"], None, pair.img1,
                            pair.img2, pair.flow, pair.valid, 0, True)
            continue
        yield from _video_pairs(row, max_pairs, stride, gap, video_stream, decode_threads)


def _video_pairs(row: dict, max_pairs, stride, gap, video_stream, decode_threads) -> Iterator[pa.Table]:
    unit = row["id"]
    pairs = video_frame_pairs(row["path"], stride, max_pairs, gap=gap, video_stream=video_stream,
                              decode_threads=decode_threads)
    try:
        held = next(pairs)
    except (VideoDecodeError, StopIteration) as e:
        reason = e.reason if isinstance(e, VideoDecodeError) else "no_frames"
        yield _error(row, reason, str(e) or "the video has fewer than two frames")
        return
    except Exception as e:  # noqa: BLE001
        yield _error(row, "decode_error", f"{type(e).__name__}: {e}")
        return
    while True:
        warning = None
        try:
            following = next(pairs, None)
        except Exception as e:  # noqa: BLE001 - keep the pairs decoded so far, flag the last one
            following, warning = None, f"decoding stopped early: {e}"
        yield _pair_row(unit, f"{unit}:{held.pair_index}", row["path"], None, "video", held.pair_index,
                        held.frame1, held.frame2, None, None, held.pair_index, following is None, warning)
        if following is None:
            return
        held = following


class FlowWorker(ModelWorker):
    """Perceiver optical flow at any frame size by overlapping tiles of the model's training size."""

    schema = schemas.FLOW

    def setup(self, output_dir: str = ".", tile_overlap: int | None = None, tiles_per_call: int = 8,
              pictures: bool = False) -> None:
        self.tile = tuple(self.model.config.train_size)
        self.overlap = tile_overlap if tile_overlap is not None else default_overlap(self.tile)
        self.tiles_per_call = tiles_per_call
        self.output_dir, self.pictures = output_dir, pictures
        self.warming_up = False

    def dummy_batch(self) -> pa.Table:
        h, w = self.tile
        frame = np.zeros((h, w, 3), np.uint8)
        return _pair_row("warm-up", "warm-up", "", None, "frames", None, frame, frame, None, None, 0, True)

    def warm_up(self) -> None:
        self.warming_up = True  # no files for the dummy pair
        try:
            super().warm_up()
        finally:
            self.warming_up = False

    def _predict_tiles(self, tiles1: torch.Tensor, tiles2: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model(inputs=flow_model_inputs(tiles1, tiles2)).logits.float()  # (N, th, tw, 2)

    def predict(self, batch: pa.Table) -> dict[str, Any]:
        rows = batch.select(["id", "height", "width", "has_gt", "frame1", "frame2", "gt_flow", "gt_valid"]
                            ).to_pylist()
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            by_size[(row["height"], row["width"])].append(i)
        flows: list[np.ndarray | None] = [None] * len(rows)
        for (h, w), indices in by_size.items():  # same-size pairs share model calls
            first, second = (self._frames([rows[i][key] for i in indices], h, w) for key in ("frame1", "frame2"))
            flow = tiled_flow(first, second, self._predict_tiles, tile_size=self.tile,
                              min_overlap=min(self.overlap, self.tile[0] - 1, self.tile[1] - 1),
                              batch_size=self.tiles_per_call)
            for j, i in enumerate(indices):
                flows[i] = flow[j].cpu().numpy()  # (H, W, 2)
        columns: dict[str, list] = defaultdict(list)
        for row, flow in zip(rows, flows):
            magnitude = np.linalg.norm(flow, axis=-1)
            columns["flow_mean_px"].append(float(magnitude.mean()))
            columns["flow_max_px"].append(float(magnitude.max()))
            metrics = self._metrics(row, flow)
            for name in ("num_valid_px", "epe", "acc_1px", "acc_3px", "acc_5px", "fl_all"):
                columns[name].append(metrics.get(name))
            if not self.warming_up:
                columns["flow_path"].append(self._save_flow(row["id"], flow))
                columns["picture"].append(
                    save_picture(self.output_dir, row["id"], lambda f=flow: png_bytes(flow_image(f)))
                    if self.pictures else None)
        return dict(columns)

    def _frames(self, buffers: list[bytes], h: int, w: int) -> torch.Tensor:
        """Raw (H, W, 3) uint8 frames -> (B, 3, H, W) float in 0..255 on the model's device."""
        arrays = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in buffers]
        return self.to_device(np.stack(arrays)).permute(0, 3, 1, 2).float()

    @staticmethod
    def _metrics(row: dict, flow: np.ndarray) -> dict[str, Any]:
        if not row["has_gt"]:
            return {}
        h, w = row["height"], row["width"]
        gt = np.frombuffer(row["gt_flow"], np.float32).reshape(h, w, 2)
        valid = np.frombuffer(row["gt_valid"], np.bool_).reshape(h, w)
        sums = flow_error_sums(flow, gt, valid)
        means = sums.means()
        return {"num_valid_px": sums.num_pixels, **{k: (None if np.isnan(v) else v) for k, v in means.items()}}

    def _save_flow(self, item_id: str, flow: np.ndarray) -> str:
        return save_picture(self.output_dir, item_id, lambda: flo_bytes(flow), folder=FLOW_DIR, suffix=".flo")


def default_overlap(tile: tuple[int, int]) -> int:
    """20 px (DeepMind's colab, for 368x496 tiles), less for small tiles (a quarter of the shorter side)."""
    return max(1, min(20, min(tile) // 4))
