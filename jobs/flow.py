"""``perceiver-jobs flow``: optical flow with the Perceiver over frame-pair datasets or consecutive video frames.

    perceiver-jobs flow --input Sintel/training/clean --output out/flow --model optical-flow-perceiver/
    perceiver-jobs flow --input clips/*.mp4 --output out/vflow --max-pairs 10 --pictures ...

Folders are searched for frame pairs in the Sintel, KITTI, Middlebury and FlyingChairs layouts (else any
folder of images gives consecutive pairs), with ground truth when present (``.flo``, KITTI 16-bit PNG with
its validity channel; Middlebury's unknown-flow marker is masked). Video files give pairs of consecutive
frames. Frames of any size work: the model runs on overlapping tiles of its training size, blended.
Output: one row per pair (``pipelines.schemas.FLOW``); the flow itself is a sidecar ``.flo`` file under
``<output>/_flow/`` (Middlebury format: float32 (u, v) in pixels), named in ``flow_path``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from jobs.common import (
    CommonConfig,
    UsageError,
    add_common_arguments,
    apply_limit,
    check_output,
    common_config,
    execute,
)

MANIFEST_SCHEMA = pa.schema([("id", pa.string()), ("kind", pa.string()), ("path", pa.string()),
                             ("path2", pa.string()), ("flow_path", pa.string()), ("flow_format", pa.string()),
                             ("layout", pa.string())])


@dataclass(frozen=True)
class FlowConfig:
    common: CommonConfig
    max_pairs: int | None
    stride: int
    gap: int
    video_stream: int
    tile_overlap: int | None
    tiles_per_call: int
    pictures: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, default_model=None, default_batch_size=1)
    g = parser.add_argument_group("flow")
    g.add_argument("--max-pairs", type=int, default=16, help="videos: pairs per video (0 = all)")
    g.add_argument("--stride", type=int, default=1, help="videos: frames between pair starts")
    g.add_argument("--gap", type=int, default=1, help="videos: frames between a pair's two frames")
    g.add_argument("--video-stream", type=int, default=0, help="videos: index among the video streams")
    g.add_argument("--tile-overlap", type=int, default=None,
                   help="least overlap of neighbouring tiles in px (default: 20, less for small tiles)")
    g.add_argument("--tiles-per-call", type=int, default=8, help="tiles per model call")
    g.add_argument("--pictures", action="store_true", help="save flow colour pictures (PNG)")


def config_from_args(args: argparse.Namespace) -> FlowConfig:
    for name in ("stride", "gap", "tiles_per_call"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_pairs < 0:
        raise UsageError("--max-pairs must be >= 0")
    return FlowConfig(common=common_config(args), max_pairs=args.max_pairs or None, stride=args.stride,
                      gap=args.gap, video_stream=args.video_stream, tile_overlap=args.tile_overlap,
                      tiles_per_call=args.tiles_per_call, pictures=args.pictures)


def build_manifest(inputs: list[str]) -> pa.Table:
    """Video files become one row each (kind "video"); folders are searched for frame pairs (kind "pair")."""
    from pipelines import manifest as manifests

    rows: list[dict] = []
    for item in inputs:
        path = Path(item)
        is_video = path.is_file() and path.suffix.lower() in manifests.VIDEO_EXTENSIONS
        if is_video or manifests.glob.has_magic(item):
            videos = manifests.video_manifest(item)
            rows += [{"id": r["id"], "kind": "video", "path": r["path"], "path2": None, "flow_path": None,
                      "flow_format": None, "layout": "video"} for r in videos.to_pylist()]
        elif path.is_dir():
            pairs = manifests.flow_manifest(path)
            rows += [{"id": r["id"], "kind": "pair", "path": r["frame1_path"], "path2": r["frame2_path"],
                      "flow_path": r["flow_path"], "flow_format": r["flow_format"], "layout": r["layout"]}
                     for r in pairs.to_pylist()]
        elif path.exists():
            raise UsageError(f"{item}: give a folder of frames or a video file")
        else:
            raise FileNotFoundError(f"input path does not exist: {item}")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise UsageError("two inputs give the same pair id; pass each dataset folder once")
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def build_job(config: FlowConfig):
    from perceiver_core import PerceiverForOpticalFlow
    from pipelines import schemas
    from pipelines.model_workers import validate_model
    from pipelines.runner import Job
    from pipelines.stages.flow import FlowWorker, read_flow_inputs

    c = config.common
    check_output(c.output)
    manifest = apply_limit(build_manifest(c.inputs), c.limit)
    validate_model(c.model, [PerceiverForOpticalFlow])
    options = {"model": c.model.describe(), "max_pairs": config.max_pairs, "stride": config.stride,
               "gap": config.gap, "video_stream": config.video_stream, "tile_overlap": config.tile_overlap}
    threads = max(1, int(c.read_cpus or c.cpus_per_worker))
    return Job(name="flow", schema=schemas.FLOW, manifest=manifest, read_fn=read_flow_inputs,
               read_kwargs={"max_pairs": config.max_pairs, "stride": config.stride, "gap": config.gap,
                            "video_stream": config.video_stream, "decode_threads": threads},
               worker_cls=FlowWorker, model=c.model, batch_size=c.batch_size, rows_per_read_task=1,
               worker_kwargs={"output_dir": os.fspath(c.output.resolve()), "tile_overlap": config.tile_overlap,
                              "tiles_per_call": config.tiles_per_call, "pictures": config.pictures},
               options=options)


def run(args: argparse.Namespace, argv: list[str] | None = None):
    config = config_from_args(args)
    return execute(build_job(config), config.common, argv)
