"""``perceiver-jobs flow``: optical flow with the Perceiver over frame-pair datasets or consecutive video
frames.

    perceiver-jobs flow --input Sintel/training/clean --output out/flow --model optical-flow-perceiver/
    perceiver-jobs flow --input clips/*.mp4 --output out/vflow --max-pairs 10 --pictures ...
    perceiver-jobs flow --input s3://bucket/Sintel/training --output s3://bucket/out/flow ...

Folders are searched for frame pairs in the Sintel, KITTI, Middlebury and FlyingChairs layouts (else any
folder of images gives consecutive pairs), with ground truth when present (``.flo``, KITTI 16-bit PNG with
its validity channel; Middlebury's unknown-flow marker is masked). Video files (and globs of them) give pairs
of consecutive frames. Inputs and output may be local or URIs. Frames of any size work: the model runs on
overlapping tiles of its training size, blended. Output: one row per pair (``pipelines.batch.schemas.FLOW``); the
flow itself is a sidecar ``.flo`` file under ``<output>/_flow/`` (Middlebury format: float32 (u, v) in
pixels), named in ``flow_path``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from jobs.common import (
    CommonConfig,
    UsageError,
    add_common_arguments,
    check_output,
    common_config,
    execute,
)

ITEM_SCHEMA = pa.schema([("id", pa.string()), ("kind", pa.string()), ("path", pa.string()),
                         ("path2", pa.string()), ("flow_path", pa.string()), ("flow_format", pa.string()),
                         ("layout", pa.string()), ("relpath", pa.string()), ("size_bytes", pa.int64())])


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


@dataclass(frozen=True)
class _Input:
    """One --input, classified before any listing: a frame-pair folder, or video files (a file or a glob)."""

    text: str
    kind: str  # "pairs" or "videos"


def classify_inputs(inputs: list[str]) -> list[_Input]:
    """Decide what each input is (one metadata request each). Folders give frame pairs, video files and globs
    give videos; anything else is refused here, before the output folder is touched."""
    import glob

    from pipelines import storage
    from pipelines.readers.listing import VIDEO_EXTENSIONS

    out: list[_Input] = []
    folders: list[storage.Location] = []
    for text in inputs:
        if glob.has_magic(text.split("://", 1)[-1]):
            out.append(_Input(text, "videos"))
            continue
        loc = storage.resolve(text)
        kind = loc.info().type
        if kind == storage.pafs.FileType.Directory:
            for other in folders:  # the same pairs twice would be two inputs each
                if other.fs.type_name == loc.fs.type_name and _nested(loc.path, other.path):
                    raise UsageError(f"inputs {other.uri} and {loc.uri} overlap; "
                                     "pass each dataset folder once")
            folders.append(loc)
            out.append(_Input(text, "pairs"))
        elif kind == storage.pafs.FileType.File:
            if not any(loc.path.lower().endswith(ext) for ext in VIDEO_EXTENSIONS):
                raise UsageError(f"{loc.uri}: give a folder of frames or a video file")
            out.append(_Input(text, "videos"))
        else:
            raise FileNotFoundError(f"input path does not exist: {loc.uri}")
    return out


def _nested(a: str, b: str) -> bool:
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def flow_items(inputs: list[str], exclude: str | None = None) -> Iterator[dict]:
    """Manifest rows (``ITEM_SCHEMA``), streamed: one per frame pair found in a folder (kind "pair", one
    folder's pairs held at a time) or per video file (kind "video", listed like the video job's inputs).

    Ids follow ``pipelines.readers.listing``: sha1 of the path relative to its input root (the pair's frame 1
    without extension), with the input's position in the key when there are several inputs."""
    from pipelines.readers import listing
    from pipelines.readers.flow_data import iter_flow_pairs
    from pipelines.readers.listing import VIDEO_EXTENSIONS

    classified = classify_inputs(inputs)
    for index, item in enumerate(classified):
        if item.kind == "videos":
            for found in listing.iter_files([item.text], VIDEO_EXTENSIONS, exclude=exclude):
                yield {"id": listing.file_id(found.relpath, index, len(classified)), "kind": "video",
                       "path": listing.display(found.uri), "path2": None, "flow_path": None,
                       "flow_format": None, "layout": "video", "relpath": found.relpath,
                       "size_bytes": found.entry.size}
            continue
        count = 0
        for pair in iter_flow_pairs(item.text, exclude=exclude):
            count += 1
            yield {"id": listing.file_id(pair.pair_id, index, len(classified)), "kind": "pair",
                   "path": listing.display(pair.frame1_path), "path2": listing.display(pair.frame2_path),
                   "flow_path": None if pair.flow_path is None else listing.display(pair.flow_path),
                   "flow_format": pair.flow_format, "layout": pair.layout, "relpath": pair.pair_id,
                   "size_bytes": None}
        if count == 0:
            raise ValueError(f"no inputs found under {item.text}: no frame pairs in any known layout")


def build_job(config: FlowConfig, items=None):
    """Validate the inputs' kinds and the model (no Ray yet) and describe the job; the pairs are listed when
    the job runs. ``items`` overrides --input (benchmarks)."""
    from perceiver_core import PerceiverForOpticalFlow
    from pipelines.batch import schemas
    from pipelines.batch.model_workers import validate_model
    from pipelines.batch.runner import Job
    from pipelines.stages.flow import FlowWorker, read_flow_inputs

    c = config.common
    check_output(c.output)
    if items is None:
        classify_inputs(c.inputs)  # refuse a bad input now, before the output folder is created
        items = functools.partial(flow_items, c.inputs, exclude=c.output)
    validate_model(c.model, [PerceiverForOpticalFlow])
    options = {"inputs": c.inputs, "model": c.model.describe(), "max_pairs": config.max_pairs,
               "stride": config.stride, "gap": config.gap, "video_stream": config.video_stream,
               "tile_overlap": config.tile_overlap, "limit": c.limit}
    threads = max(1, int(c.read_cpus or c.cpus_per_worker))
    return Job(name="flow", schema=schemas.FLOW, items=items, item_schema=ITEM_SCHEMA,
               read_fn=read_flow_inputs,
               read_kwargs={"max_pairs": config.max_pairs, "stride": config.stride, "gap": config.gap,
                            "video_stream": config.video_stream, "decode_threads": threads},
               worker_cls=FlowWorker, model=c.model, batch_size=c.batch_size, max_shard_size=64,
               limit=c.limit,
               worker_kwargs={"output_dir": c.output, "tile_overlap": config.tile_overlap,
                              "tiles_per_call": config.tiles_per_call, "pictures": config.pictures},
               options=options)


def run(args: argparse.Namespace, argv: list[str] | None = None):
    config = config_from_args(args)
    return execute(build_job(config), config.common, argv)
