"""``perceiver-jobs images``: classify images with any Perceiver image head; top-k labels and scores.

    perceiver-jobs images --input photos/ --output out/images --model deepmind-vision-perceiver-conv/
    perceiver-jobs images --input images/imagenet_sample --labels-file images/imagenet_sample/labels.csv ...
    perceiver-jobs images --input shards/*.parquet --image-column image --id-column key ...

Inputs: image files (folders, globs, files) or Parquet files with an image-bytes column (binary, or the
Hugging Face ``struct<bytes, path>``). Preprocessing is the checkpoint's ``preprocessor_config.json`` (else
transformers' defaults at the model's input size). Output: one row per image (``pipelines.schemas.IMAGES``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from jobs.common import (
    CommonConfig,
    UsageError,
    add_common_arguments,
    apply_limit,
    check_output,
    common_config,
    execute,
)


@dataclass(frozen=True)
class ImagesConfig:
    common: CommonConfig
    top_k: int
    labels_file: str | None
    label_column: str | None
    image_column: str
    id_column: str | None
    image_size: int | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, default_model=None, default_batch_size=16)
    g = parser.add_argument_group("images")
    g.add_argument("--top-k", type=int, default=5)
    g.add_argument("--labels-file", help="CSV of file,label index for top-1/top-5 accuracy")
    g.add_argument("--label-column", help="the labels file's class index column")
    g.add_argument("--image-column", default="image", help="Parquet inputs: the image-bytes column")
    g.add_argument("--id-column", help="Parquet inputs: a column of unique ids (default: file + row number)")
    g.add_argument("--image-size", type=int, help="resize to this size instead of the checkpoint's")


def config_from_args(args: argparse.Namespace) -> ImagesConfig:
    if args.top_k < 1:
        raise UsageError("--top-k must be >= 1")
    return ImagesConfig(common=common_config(args), top_k=args.top_k, labels_file=args.labels_file,
                        label_column=args.label_column, image_column=args.image_column, id_column=args.id_column,
                        image_size=args.image_size)


def build_manifest(config: ImagesConfig):
    from pathlib import Path

    from pipelines import labels
    from pipelines import manifest as manifests

    inputs = config.common.inputs
    parquet = [i for i in inputs if Path(i).suffix.lower() == ".parquet" or Path(i).is_dir() and
               any(Path(i).glob("*.parquet")) and not any(p.suffix.lower() in manifests.IMAGE_EXTENSIONS
                                                        for p in Path(i).rglob("*"))]
    if parquet and len(parquet) != len(inputs):
        raise UsageError("mix of Parquet and image-file inputs; run them as two jobs")
    if parquet:
        manifest = manifests.image_manifest_from_parquet(inputs, column=config.image_column,
                                                         id_column=config.id_column, include_bytes=False)
    else:
        manifest = manifests.image_manifest(inputs)
    manifest = apply_limit(manifest, config.common.limit)
    mapping = labels.read_labels(config.labels_file, config.label_column) if config.labels_file else None
    return labels.attach_labels(manifest, mapping)


def build_job(config: ImagesConfig):
    from perceiver_core import (
        PerceiverForImageClassificationConvProcessing,
        PerceiverForImageClassificationFourier,
        PerceiverForImageClassificationLearned,
    )
    from pipelines import schemas
    from pipelines.model_workers import validate_model
    from pipelines.runner import Job
    from pipelines.stages.images import ImageWorker, processor_config_for, read_images

    c = config.common
    check_output(c.output)
    manifest = build_manifest(config)
    model_config = validate_model(c.model, [PerceiverForImageClassificationLearned,
                                            PerceiverForImageClassificationFourier,
                                            PerceiverForImageClassificationConvProcessing])
    processor = processor_config_for(None if c.model.random_init else c.model.source, model_config,
                                     config.image_size)
    options = {"model": c.model.describe(), "top_k": config.top_k, "image_size": list(processor.size)}
    return Job(name="images", schema=schemas.IMAGES, manifest=manifest, read_fn=read_images,
               read_kwargs={"processor": processor, "column": config.image_column}, worker_cls=ImageWorker,
               worker_kwargs={"k": config.top_k, "processor": processor}, model=c.model,
               batch_size=c.batch_size, rows_per_read_task=max(1, c.batch_size), options=options)


def run(args: argparse.Namespace, argv: list[str] | None = None):
    config = config_from_args(args)
    return execute(build_job(config), config.common, argv)
