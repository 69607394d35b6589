"""``perceiver-jobs images``: classify images with any Perceiver image head; top-k labels and scores.

    perceiver-jobs images --input photos/ --output out/images --model deepmind-vision-perceiver-conv/
    perceiver-jobs images --input images/imagenet_sample --labels-file images/imagenet_sample/labels.csv ...
    perceiver-jobs images --input shards/*.parquet --image-column image --id-column key ...
    perceiver-jobs images --input s3://bucket/photos --output s3://bucket/out/images ...

Inputs (local or URIs): image files (folders, globs, files) or Parquet files with an image-bytes column
(binary, or the Hugging Face ``struct<bytes, path>``), one item per Parquet row. The first input file found
decides which; a mix is refused. Preprocessing is the checkpoint's ``preprocessor_config.json`` (else
transformers' defaults at the model's input size). Output: one row per image (``pipelines.batch.schemas.IMAGES``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import posixpath
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

ITEM_SCHEMA = pa.schema([("id", pa.string()), ("path", pa.string()), ("relpath", pa.string()),
                         ("size_bytes", pa.int64()), ("row_index", pa.int64()), ("label_index", pa.int32())])
PARQUET = ".parquet"


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
    g.add_argument("--top-k", type=int, default=5, help="predictions kept per image")
    g.add_argument("--labels-file", help="CSV of file,label for top-1/top-5 accuracy; the label is a class index "
                                         "or a class name of the model (Parquet rows: the file column may name "
                                         "row ids)")
    g.add_argument("--label-column", help="the labels file's class index or class name column")
    g.add_argument("--image-column", default="image", help="Parquet inputs: the image-bytes column")
    g.add_argument("--id-column", help="Parquet inputs: a column of unique ids (default: file + row number)")
    g.add_argument("--image-size", type=int, help="resize to this size instead of the checkpoint's")


def config_from_args(args: argparse.Namespace) -> ImagesConfig:
    if args.top_k < 1:
        raise UsageError("--top-k must be >= 1")
    return ImagesConfig(common=common_config(args), top_k=args.top_k, labels_file=args.labels_file,
                        label_column=args.label_column, image_column=args.image_column,
                        id_column=args.id_column, image_size=args.image_size)


def _is_parquet(found) -> bool:
    return posixpath.splitext(found.entry.location.path)[1].lower() == PARQUET


def _columns_shown(names: list[str]) -> str:
    return ", ".join(names[:20]) + (f", ... ({len(names)} columns)" if len(names) > 20 else "")


def check_parquet_schema(schema: pa.Schema, uri: str, image_column: str, id_column: str | None) -> None:
    """Refuse, in one line, a Parquet input whose image column cannot hold encoded images or that lacks a
    named column (before any work: this is the user's flag, not one bad row)."""
    from pipelines.stages.images import image_bytes_type_problem

    for flag, name in (("--image-column", image_column), ("--id-column", id_column)):
        if name is not None and name not in schema.names:
            raise UsageError(f"{uri}: no column {name!r} ({flag}); columns are "
                             f"{_columns_shown(schema.names)}")
    problem = image_bytes_type_problem(schema.field(image_column).type)
    if problem:
        raise UsageError(f"{uri}: --image-column {image_column!r} cannot be read as images: {problem}; "
                         "give a binary column or a Hugging Face Image struct with a 'bytes' field")


def parquet_rows(found, image_column: str, id_column: str | None) -> Iterator[tuple[int, str | None]]:
    """(row index, id from --id-column or None) for every row of one Parquet input, streamed: the footer is
    read once, and with --id-column only that column, one row group at a time."""
    import pyarrow.parquet as pq

    uri = found.uri
    with found.entry.location.open_input() as f:
        parquet = pq.ParquetFile(f)
        check_parquet_schema(parquet.schema_arrow, uri, image_column, id_column)
        start = 0
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if id_column is None:
                yield from ((start + i, None) for i in range(size))
            else:
                ids = parquet.read_row_group(group, columns=[id_column]).column(0)
                if ids.null_count:
                    first = ids.to_pylist().index(None)
                    raise UsageError(f"{uri}: --id-column {id_column!r} is null in row {start + first} "
                                     f"(and {ids.null_count - 1} more rows of its row group); ids must be "
                                     "unique and not null, or leave --id-column out to use file + row number")
                yield from ((start + i, str(v)) for i, v in enumerate(ids.to_pylist()))
            start += size


def image_items(inputs: list[str], *, image_column: str = "image", id_column: str | None = None,
                labels_map=None, exclude: str | None = None) -> Iterator[dict]:
    """Manifest rows (``ITEM_SCHEMA``) for the image files or Parquet rows under ``inputs``, streamed file by
    file. Ids: the listing's file ids, ``<file id>#<row>`` style for Parquet rows (``listing.file_id`` with
    the row index), or the --id-column's values (refused when null or repeated)."""
    from pipelines.readers import labels, listing
    from pipelines.readers.listing import IMAGE_EXTENSIONS

    parquet_mode: bool | None = None
    seen: set[bytes] = set()  # --id-column: 8-byte digests of the ids so far, to refuse a repeated one
    for found in listing.iter_files(inputs, IMAGE_EXTENSIONS | {PARQUET}, exclude=exclude):
        is_parquet = _is_parquet(found)
        if parquet_mode is None:
            parquet_mode = is_parquet
        elif is_parquet != parquet_mode:
            raise UsageError(f"mix of Parquet and image-file inputs (first {found.uri}); "
                             "run them as two jobs")
        path = listing.display(found.uri)
        if not is_parquet:
            yield {"id": found.id, "path": path, "relpath": found.relpath, "size_bytes": found.entry.size,
                   "row_index": None, "label_index": labels.label_for(labels_map, found.relpath)}
            continue
        for row, given in parquet_rows(found, image_column, id_column):
            if given is None:
                item_id = listing.file_id(found.relpath, found.root_index, found.root_count, index=row)
            else:
                item_id = given
                digest = hashlib.sha1(given.encode("utf-8", "surrogateescape")).digest()[:8]
                if digest in seen:
                    raise UsageError(f"{found.uri}: --id-column {id_column!r} repeats the id {given!r} "
                                     f"(row {row}); ids must be unique")
                seen.add(digest)
            label = labels.label_for(labels_map, found.relpath, item_id)
            yield {"id": item_id, "path": path, "relpath": found.relpath, "size_bytes": found.entry.size,
                   "row_index": row, "label_index": label}


def check_first_input(config: ImagesConfig) -> None:
    """Fail before any work when the first input is a Parquet file whose columns do not fit the flags."""
    import pyarrow.parquet as pq

    from pipelines.readers import listing
    from pipelines.readers.listing import IMAGE_EXTENSIONS

    c = config.common
    first = next(iter(listing.iter_files(c.inputs, IMAGE_EXTENSIONS | {PARQUET}, exclude=c.output)))
    if _is_parquet(first):
        with first.entry.location.open_input() as f:
            check_parquet_schema(pq.read_schema(f), first.uri, config.image_column, config.id_column)
    elif config.id_column is not None:
        raise UsageError("--id-column is for Parquet inputs; image files are identified by their path")


def build_job(config: ImagesConfig, items=None):
    """Validate the first input, labels and model (no Ray yet) and describe the job; the inputs are listed
    when the job runs. ``items`` overrides --input (benchmarks)."""
    from perceiver_core import (
        PerceiverForImageClassificationConvProcessing,
        PerceiverForImageClassificationFourier,
        PerceiverForImageClassificationLearned,
    )
    from pipelines.batch import schemas
    from pipelines.batch.model_workers import validate_model
    from pipelines.batch.runner import Job
    from pipelines.readers import labels
    from pipelines.stages.images import ImageWorker, processor_config_for, read_images

    c = config.common
    check_output(c.output)
    mapper = None
    if items is None:
        check_first_input(config)
        labels_file = labels.read_labels_file(config.labels_file, config.label_column) if config.labels_file else None
    model_config = validate_model(c.model, [PerceiverForImageClassificationLearned,
                                            PerceiverForImageClassificationFourier,
                                            PerceiverForImageClassificationConvProcessing])
    if items is None:  # labels (indices or class names) are resolved against the model's classes
        mapper = labels.LabelMapper.for_model(labels_file, model_config) if labels_file else None
        items = functools.partial(image_items, c.inputs, image_column=config.image_column,
                                  id_column=config.id_column, labels_map=mapper, exclude=c.output)
    processor = processor_config_for(None if c.model.random_init else c.model.source, model_config,
                                     config.image_size)
    options = {"inputs": c.inputs, "model": c.model.describe(), "top_k": config.top_k,
               "image_size": list(processor.size), "image_column": config.image_column,
               "id_column": config.id_column, "labels_file": config.labels_file,
               "label_column": config.label_column, "limit": c.limit}
    return Job(name="images", schema=schemas.IMAGES, items=items, item_schema=ITEM_SCHEMA,
               read_fn=read_images, read_kwargs={"processor": processor, "column": config.image_column},
               worker_cls=ImageWorker, worker_kwargs={"k": config.top_k, "processor": processor}, model=c.model,
               batch_size=c.batch_size, max_shard_size=1024, min_shard_size=c.batch_size, limit=c.limit,
               options=options, label_report=mapper.report if mapper else None)


def run(args: argparse.Namespace, argv: list[str] | None = None):
    config = config_from_args(args)
    return execute(build_job(config), config.common, argv)
