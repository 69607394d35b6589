"""``perceiver-jobs video``: autoencode and/or classify every clip of every video with the multimodal Perceiver.

    perceiver-jobs video --input tests/data/videos --output out/video
    perceiver-jobs video --input clips/ --output out/v --model multimodal --random-init --tiny --pictures

Each video is cut into clips of the model's shape (16 frames of 224x224 at 25 fps and 16 x 1,920 audio
samples at 48 kHz for the published checkpoint); at most ``--clips-per-video`` clips per file. Output:
one row per clip (``pipelines.batch.schemas.VIDEO``), or one error row for a file that yields no clip.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pyarrow as pa

from jobs.common import (
    MODELS_DIR,
    CommonConfig,
    UsageError,
    add_common_arguments,
    check_output,
    common_config,
    execute,
)

DEFAULT_MODEL = "multimodal-tiny"

ITEM_SCHEMA = pa.schema([("id", pa.string()), ("path", pa.string()), ("relpath", pa.string()),
                         ("size_bytes", pa.int64()), ("label_index", pa.int32())])


@dataclass(frozen=True)
class VideoConfig:
    common: CommonConfig
    task: str
    clips_per_video: int | None
    video_stream: int
    audio_stream: int | None
    top_k: int
    chunk_size: int
    labels_file: str | None
    label_column: str | None
    pictures: bool
    picture_frames: int
    save_latents: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, default_model=DEFAULT_MODEL, default_batch_size=4)
    g = parser.add_argument_group("video")
    g.add_argument("--task", choices=("both", "autoencode", "classify"), default="both",
                   help="autoencode: reconstruction PSNR; classify: top-k labels; both: the two from one decode")
    g.add_argument("--clips-per-video", type=int, default=4, help="clips per file, from its start (0 = all)")
    g.add_argument("--video-stream", type=int, default=0, help="index among the file's video streams")
    g.add_argument("--audio-stream", type=int, default=0,
                   help="index among the file's audio streams; -1 ignores audio (clips get silence)")
    g.add_argument("--top-k", type=int, default=5, help="predictions kept per clip")
    g.add_argument("--chunk-size", type=int, default=65536, help="output points decoded per decoder call")
    g.add_argument("--labels-file", help="CSV of file,label for top-1/top-5 accuracy; the label is a class index "
                                         "or a class name of the model")
    g.add_argument("--label-column", help="the labels file's class index or class name column")
    g.add_argument("--pictures", action="store_true", help="save original/reconstruction frame strips (PNG)")
    g.add_argument("--picture-frames", type=int, default=4, help="frames per picture strip")
    g.add_argument("--save-latents", action="store_true", help="store the (N, D) latents as float16 tensors")


def config_from_args(args: argparse.Namespace) -> VideoConfig:
    common = common_config(args)
    if args.clips_per_video < 0:
        raise UsageError("--clips-per-video must be >= 0")
    if args.model == DEFAULT_MODEL and not (MODELS_DIR / DEFAULT_MODEL).is_dir() and not args.random_init:
        raise UsageError(f"the default model {MODELS_DIR / DEFAULT_MODEL} is not installed; pass --model DIR, "
                         "or --model multimodal --random-init [--tiny] for a smoke run")
    return VideoConfig(common=common, task=args.task, clips_per_video=args.clips_per_video or None,
                       video_stream=args.video_stream,
                       audio_stream=None if args.audio_stream < 0 else args.audio_stream,
                       top_k=args.top_k, chunk_size=args.chunk_size, labels_file=args.labels_file,
                       label_column=args.label_column, pictures=args.pictures, picture_frames=args.picture_frames,
                       save_latents=args.save_latents)


def video_items(inputs: list[str], labels_map, exclude: str | None = None):
    """Manifest rows (ITEM_SCHEMA) for the video files under ``inputs``, streamed. ``labels_map``: None, a
    {file entry: class index} dict or a ``labels.LabelMapper``."""
    from pipelines.readers import labels, listing
    from pipelines.readers.listing import VIDEO_EXTENSIONS

    for found in listing.iter_files(inputs, VIDEO_EXTENSIONS, exclude=exclude):
        yield {"id": found.id, "path": listing.display(found.uri), "relpath": found.relpath,
               "size_bytes": found.entry.size, "label_index": labels.label_for(labels_map, found.relpath)}


def build_job(config: VideoConfig, items=None):
    """Validate labels and model (no Ray yet) and describe the job; the inputs are listed when the job runs.
    ``items`` overrides --input (the benchmarks pass a synthetic corpus)."""
    from perceiver_core import PerceiverForMultimodalAutoencoding
    from pipelines.batch import schemas
    from pipelines.batch.model_workers import validate_model
    from pipelines.batch.runner import Job
    from pipelines.readers import labels
    from pipelines.stages.video import VideoWorker, clip_spec_for, decode_videos

    c = config.common
    check_output(c.output)
    labels_file = labels.read_labels_file(config.labels_file, config.label_column) if config.labels_file else None
    model_config = validate_model(c.model, [PerceiverForMultimodalAutoencoding])
    # Labels (class indices or names) are resolved against the model's classes while the manifest is written.
    mapper = labels.LabelMapper.for_model(labels_file, model_config) if labels_file and items is None else None
    if items is None:
        def items():
            return video_items(c.inputs, mapper, exclude=c.output)
    spec = clip_spec_for(model_config, max_clips=config.clips_per_video, video_stream=config.video_stream,
                         audio_stream=config.audio_stream, decode_threads=max(1, int(c.read_cpus or c.cpus_per_worker)))
    schema = schemas.VIDEO
    if config.save_latents:
        schema = schemas.with_latents(schema, (model_config.num_latents, model_config.d_latents))
    options = {"inputs": c.inputs, "task": config.task, "model": c.model.describe(),
               "clips_per_video": config.clips_per_video, "video_stream": config.video_stream,
               "audio_stream": config.audio_stream, "top_k": config.top_k, "save_latents": config.save_latents,
               "limit": c.limit}
    return Job(name="video", schema=schema, items=items, item_schema=ITEM_SCHEMA, read_fn=decode_videos,
               read_kwargs={"spec": spec}, worker_cls=VideoWorker, model=c.model, batch_size=c.batch_size,
               max_shard_size=64, limit=c.limit,
               worker_kwargs={"task": config.task, "k": config.top_k, "chunk_size": config.chunk_size,
                              "output_dir": c.output, "pictures": config.pictures,
                              "picture_frames": config.picture_frames, "save_latents": config.save_latents},
               options=options, label_report=mapper.report if mapper else None)


def run(args: argparse.Namespace, argv: list[str] | None = None):
    config = config_from_args(args)
    return execute(build_job(config), config.common, argv)
