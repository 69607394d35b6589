"""Image stages: decode + Perceiver preprocessing, then classification; both run in the shard worker.

Data flow::

    manifest row (id, path, [row_index for Parquet], label_index); paths are local or URIs
      -> read_images (generator)    pixel_values (3, h, w) float32 tensor, original width/height, one table
                                    per image (a shard never holds all its pixels); error row for an image
                                    that does not decode. Parquet cells are read through storage, row group
                                    by row group, only the image column
      -> ImageWorker (model)        top-k ids, names (config.id2label) and softmax scores
      -> part-<shard>.parquet       schemas.IMAGES

Parquet image cells are encoded bytes (binary / large_binary) or a Hugging Face ``struct<bytes, path>``; only
``bytes`` is used. A path named inside the data is never opened: a null ``bytes`` is this row's error.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from perceiver_core.image_processor import PerceiverImageProcessorConfig, preprocess_batch
from pipelines import storage
from pipelines.batch import schemas
from pipelines.batch.model_workers import ModelWorker, top_k
from pipelines.readers.image_io import ImageDecodeError, load_image

PARQUET_READ_BATCH = 64  # cells decoded from Parquet at a time


def processor_config_for(model_source: str | None, config: Any, image_size: int | None = None
                         ) -> PerceiverImageProcessorConfig:
    """The checkpoint's ``preprocessor_config.json``, else transformers' defaults at the model's input size
    (the learned-position head needs exactly ``image_size``; the others take any size, 224 by default)."""
    from pathlib import Path

    from perceiver_core import PerceiverImageProcessor
    from pipelines.batch.model_workers import local_checkpoint

    folder = local_checkpoint(model_source) if model_source else None  # a URI: the local copy
    if folder and (Path(folder) / "preprocessor_config.json").is_file():
        base = PerceiverImageProcessor.from_pretrained(folder).config
    else:
        base = PerceiverImageProcessorConfig()
    learned = (config.architectures or [""])[0] == "PerceiverForImageClassificationLearned"
    size = image_size or (config.image_size if learned else None)
    if size is None or (size, size) == base.size:
        return base
    ratio = base.crop_size[0] / base.size[0]  # transformers' crop is a ratio (224 / 256 by default)
    return PerceiverImageProcessorConfig(**{**base.__dict__, "size": (size, size),
                                            "crop_size": (round(size * ratio), round(size * ratio))})


def pixel_schema(processor: PerceiverImageProcessorConfig) -> pa.Schema:
    keep = ["id", "source", "width", "height", "label_index", "warning", "error_type", "error"]
    fields = [schemas.IMAGES.field(n) for n in keep]
    fields.append(pa.field("pixel_values", pa.fixed_shape_tensor(pa.float32(), [3, *processor.size])))
    return pa.schema(fields + list(schemas.BOOKKEEPING))


def image_bytes_type_problem(type_: pa.DataType) -> str | None:
    """None when a Parquet column of ``type_`` holds encoded images we read, else why not (one line)."""
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        return None
    if pa.types.is_struct(type_):
        index = type_.get_field_index("bytes")
        if index >= 0 and (pa.types.is_binary(type_.field(index).type)
                           or pa.types.is_large_binary(type_.field(index).type)):
            return None
        if index >= 0:
            return f"its 'bytes' field is {type_.field(index).type}, not binary"
        return f"it is {type_}, a struct without a 'bytes' field"
    return f"it is {type_}, not binary (encoded image bytes)"


def _cell_bytes(value: Any) -> bytes | None:
    if isinstance(value, dict):  # Hugging Face Image: struct<bytes, path>; the path is never opened
        return value.get("bytes")
    return value


def _image_table(schema: pa.Schema, processor: PerceiverImageProcessorConfig, row: dict, source: str,
                 data: str | bytes | None) -> pa.Table:
    """One output-ready row: the preprocessed image, or this input's error row."""
    import torch

    label = row.get("label_index")
    try:
        if data is None:
            raise ImageDecodeError("empty_file", f"{source}: null image value")
        image = load_image(data)  # (H, W, 3) uint8
        chw = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W)
        pixels = preprocess_batch(chw, processor)[0].numpy()
    except ImageDecodeError as e:
        return schemas.error_rows(schema, [row["id"]], [source], [e.reason], [str(e)], label_index=[label])
    except Exception as e:  # noqa: BLE001 - preprocessing failures are this image's error too
        return schemas.error_rows(schema, [row["id"]], [source], ["preprocess_failed"],
                                  [f"{type(e).__name__}: {e}"], label_index=[label])
    return schemas.build_table(schema, {
        "id": [row["id"]], "source": [source], "width": [image.shape[1]], "height": [image.shape[0]],
        "label_index": [label], "pixel_values": pixels[None],
        schemas.UNIT: [row["id"]], schemas.PART: [0], schemas.FINAL: [True]}, 1)


def _parquet_cells(path: str, column: str, rows: list[dict]
                   ) -> Iterator[tuple[dict, bytes | None | Exception]]:
    """(row, cell bytes) for manifest rows of one Parquet file, in row order, reading through storage only
    the image column of the row groups they fall in, ``PARQUET_READ_BATCH`` cells at a time. A file or row
    group that cannot be read gives (row, the exception) for its rows."""
    import pyarrow.parquet as pq

    wanted = sorted(rows, key=lambda r: r["row_index"])
    try:
        handle = storage.resolve(path).open_input()
    except (OSError, storage.StorageError) as e:
        yield from ((row, e) for row in wanted)
        return
    with handle:
        try:
            parquet = pq.ParquetFile(handle)
            problem = (image_bytes_type_problem(parquet.schema_arrow.field(column).type)
                       if column in parquet.schema_arrow.names else f"there is no column {column!r}")
            if problem:
                raise ValueError(f"image column {column!r}: {problem}")
        except Exception as e:  # noqa: BLE001 - a file changed or damaged since it was listed
            yield from ((row, e) for row in wanted)
            return
        i, start = 0, 0  # wanted[i] is the next row to yield; start: the current row group's first row
        for group in range(parquet.metadata.num_row_groups):
            end = start + parquet.metadata.row_group(group).num_rows
            if i < len(wanted) and wanted[i]["row_index"] < end:
                try:
                    offset = start
                    for batch in parquet.iter_batches(batch_size=PARQUET_READ_BATCH, row_groups=[group],
                                                      columns=[column], use_threads=False):
                        values, stop = batch.column(0), offset + batch.num_rows
                        while i < len(wanted) and wanted[i]["row_index"] < stop:
                            yield wanted[i], _cell_bytes(values[wanted[i]["row_index"] - offset].as_py())
                            i += 1
                        offset = stop
                        if i == len(wanted) or wanted[i]["row_index"] >= end:
                            break
                except Exception as e:  # noqa: BLE001 - a damaged row group: its remaining rows fail
                    while i < len(wanted) and wanted[i]["row_index"] < end:
                        yield wanted[i], e
                        i += 1
            start = end
        for row in wanted[i:]:  # past the file's end (it shrank since it was listed)
            yield row, IndexError(f"row {row['row_index']} is past the end of {path}")


def read_images(batch: pa.Table, processor: PerceiverImageProcessorConfig, column: str = "image"
                ) -> Iterator[pa.Table]:
    """The job's read function over a shard's manifest rows: one table per image (bounded memory).

    Rows with ``row_index`` are cells of the Parquet file at ``path`` (consecutive in the manifest, so one
    open per file per shard); the others are image files."""
    schema = pixel_schema(processor)
    rows = batch.to_pylist()
    def key(row: dict) -> tuple[str, bool]:
        return row["path"], row.get("row_index") is not None

    for (path, is_cell), group in itertools.groupby(rows, key=key):
        if not is_cell:
            for row in group:
                yield _image_table(schema, processor, row, row["path"], row["path"])
            continue
        for row, cell in _parquet_cells(path, column, list(group)):
            source = f"{path}#{row['row_index']}"
            if isinstance(cell, Exception):
                reason = "not_found" if isinstance(cell, FileNotFoundError) else "read_failed"
                yield schemas.error_rows(schema, [row["id"]], [source], [reason],
                                         [f"{source}: {type(cell).__name__}: {cell}"],
                                         label_index=[row.get("label_index")])
            else:
                yield _image_table(schema, processor, row, source, cell)


class ImageWorker(ModelWorker):
    """Any Perceiver image classifier: top-k labels named by the checkpoint's id2label."""

    schema = schemas.IMAGES

    def setup(self, k: int = 5, processor: PerceiverImageProcessorConfig | None = None) -> None:
        self.k = k
        self.processor = processor or PerceiverImageProcessorConfig()
        self.labels = self.model.config.labels
        # The learned head's position table is image_size^2; other sizes need interpolation.
        self.interpolate = type(self.model).__name__.endswith("Learned") and \
            tuple(self.processor.size) != (self.model.config.image_size,) * 2

    def dummy_batch(self) -> pa.Table:
        schema = pixel_schema(self.processor)
        return schemas.build_table(schema, {"id": ["warm-up"], schemas.UNIT: ["warm-up"], schemas.PART: [0],
                                            schemas.FINAL: [True]}, 1)

    def predict(self, batch: pa.Table) -> dict[str, Any]:
        pixels = self.to_device(batch.column("pixel_values").combine_chunks().to_numpy_ndarray())
        with self.autocast():
            logits = self.model(inputs=pixels, interpolate_pos_encoding=self.interpolate).logits
        return top_k(logits, self.k, self.labels)
