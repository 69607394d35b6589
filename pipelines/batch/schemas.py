"""The declared Arrow schema of every job's Parquet output, and the bookkeeping columns stages carry.

Each job writes exactly one schema (plus an optional latents column the user asks for). Every row has
``id`` (unique in the output), ``source`` (the input path) and ``error_type`` / ``error`` (both null on
success). Jobs whose input item yields several rows (video clips, frame pairs of a video) also carry
``input_id``, the manifest id of the item the row came from.

Inside the pipeline, rows also carry three bookkeeping columns that the shard worker strips before writing:
``_unit`` (manifest id), ``_part`` (row index within the unit) and ``_final`` (true on the unit's last row).
They let the per-shard accounting (``pipelines.batch.accounting``) tell which input every row came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

UNIT, PART, FINAL = "_unit", "_part", "_final"
BOOKKEEPING = pa.schema([pa.field(UNIT, pa.string(), nullable=False), pa.field(PART, pa.int32(), nullable=False),
                         pa.field(FINAL, pa.bool_(), nullable=False)])

_ERROR = [pa.field("warning", pa.string()), pa.field("error_type", pa.string()), pa.field("error", pa.string())]
_TOPK = [pa.field("top_k_ids", pa.list_(pa.int32())), pa.field("top_k_labels", pa.list_(pa.string())),
         pa.field("top_k_scores", pa.list_(pa.float32()))]


def _schema(name: str, fields: list[pa.Field], unit_column: str = "id") -> pa.Schema:
    return pa.schema(fields + _ERROR, metadata={b"perceiver_jobs.schema": name.encode(),
                                                b"perceiver_jobs.unit_column": unit_column.encode()})


VIDEO = _schema("video", [
    pa.field("id", pa.string(), nullable=False),  # "<input_id>:<clip_index>", or input_id for a file error
    pa.field("input_id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("clip_index", pa.int32()),
    pa.field("start_time_s", pa.float64()),
    pa.field("num_valid_frames", pa.int32()),
    pa.field("partial", pa.bool_()),
    pa.field("has_audio", pa.bool_()),
    pa.field("psnr_video", pa.float32()),
    pa.field("psnr_audio", pa.float32()),
    *_TOPK,
    pa.field("label_index", pa.int32()),
    pa.field("picture", pa.string()),
], unit_column="input_id")

FLOW = _schema("flow", [
    pa.field("id", pa.string(), nullable=False),  # pair id; "<input_id>:<pair_index>" for video pairs
    pa.field("input_id", pa.string(), nullable=False),
    pa.field("source", pa.string()),  # first frame (or the video)
    pa.field("source2", pa.string()),  # second frame (null for videos)
    pa.field("layout", pa.string()),  # sintel, kitti, middlebury, flyingchairs, frames, video
    pa.field("pair_index", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("flow_path", pa.string()),  # sidecar .flo (Middlebury format, float32 px) relative to the output
    pa.field("flow_mean_px", pa.float32()),
    pa.field("flow_max_px", pa.float32()),
    pa.field("has_gt", pa.bool_()),
    pa.field("num_valid_px", pa.int64()),
    pa.field("epe", pa.float32()),
    pa.field("acc_1px", pa.float32()),
    pa.field("acc_3px", pa.float32()),
    pa.field("acc_5px", pa.float32()),
    pa.field("fl_all", pa.float32()),
    pa.field("picture", pa.string()),
], unit_column="input_id")

IMAGES = _schema("images", [
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("width", pa.int32()),  # of the decoded image, before preprocessing
    pa.field("height", pa.int32()),
    *_TOPK,
    pa.field("label_index", pa.int32()),
])

_TEXT_COMMON = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("position", pa.int64()),  # line index (0-based), JSONL record or Parquet row; null for whole files
    pa.field("num_bytes", pa.int32()),
    pa.field("truncated", pa.bool_()),
]

TEXT_CLASSIFY = _schema("text-classify", [*_TEXT_COMMON, *_TOPK, pa.field("label_index", pa.int32())])

TEXT_FILL_MASK = _schema("text-fill-mask", [
    *_TEXT_COMMON,
    pa.field("num_masks", pa.int32()),
    pa.field("num_windows", pa.int32()),
    pa.field("filled_text", pa.string()),
])


def unit_column(schema: pa.Schema) -> str:
    return (schema.metadata or {}).get(b"perceiver_jobs.unit_column", b"id").decode()


def with_latents(schema: pa.Schema, shape: Sequence[int]) -> pa.Schema:
    """``schema`` plus ``latents``: the encoder's (N, D) latents as a float16 fixed-shape tensor."""
    field = pa.field("latents", pa.fixed_shape_tensor(pa.float16(), list(shape)))
    return schema.insert(schema.get_field_index("warning"), field)


def with_bookkeeping(schema: pa.Schema) -> pa.Schema:
    if UNIT in schema.names:
        return schema
    return pa.schema(list(schema) + list(BOOKKEEPING), metadata=schema.metadata)


def tensor_array(values: np.ndarray, type_: pa.DataType | None = None) -> pa.Array:
    """(n, *shape) ndarray -> canonical ``arrow.fixed_shape_tensor`` array (readable without Ray)."""
    values = np.ascontiguousarray(values)
    if type_ is None:
        return pa.FixedShapeTensorArray.from_numpy_ndarray(values)
    storage = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type_.value_type),
                                                int(np.prod(type_.shape)))
    return pa.ExtensionArray.from_storage(type_, storage)


def build_table(schema: pa.Schema, rows: dict[str, Any], num_rows: int) -> pa.Table:
    """A table of ``schema`` from column values (lists or arrays); columns not given are all null.

    Columns whose type is a fixed-shape tensor take an (n, *shape) ndarray.
    """
    unknown = set(rows) - set(schema.names)
    if unknown:
        raise KeyError(f"columns {sorted(unknown)} are not in the schema")
    arrays = []
    for field in schema:
        value = rows.get(field.name)
        if value is None:
            if isinstance(field.type, pa.FixedShapeTensorType):
                size = int(np.prod(field.type.shape))
                storage = pa.FixedSizeListArray.from_arrays(
                    pa.array(np.zeros(num_rows * size), field.type.value_type), size)
                arrays.append(pa.ExtensionArray.from_storage(field.type, storage))
            else:
                arrays.append(pa.nulls(num_rows, field.type))
        elif isinstance(value, pa.Array | pa.ChunkedArray):
            arrays.append(value if value.type == field.type else value.cast(field.type))
        elif isinstance(field.type, pa.FixedShapeTensorType):
            arrays.append(tensor_array(np.asarray(value), field.type))
        else:
            arrays.append(pa.array(value, field.type))
        if len(arrays[-1]) != num_rows:
            raise ValueError(f"column {field.name} has {len(arrays[-1])} values, expected {num_rows}")
    return pa.Table.from_arrays(arrays, schema=schema)


def error_rows(schema: pa.Schema, ids: Sequence[str], sources: Sequence[str | None], error_types: Sequence[str],
               errors: Sequence[str], units: Sequence[str] | None = None, **extra: Sequence[Any]) -> pa.Table:
    """Error rows of ``schema`` (+ bookkeeping columns if it lacks them): one final part per unit."""
    n = len(ids)
    units = list(units) if units is not None else list(ids)
    columns: dict[str, Any] = {"id": list(ids), "source": list(sources), "error_type": list(error_types),
                               "error": list(errors), UNIT: units, PART: [0] * n, FINAL: [True] * n, **extra}
    if "input_id" in schema.names:
        columns.setdefault("input_id", units)
    return build_table(with_bookkeeping(schema), columns, n)


def describe(schema: pa.Schema) -> list[tuple[str, str, bool]]:
    """(name, type, nullable) per column, for docs and ``--print-schema``."""
    return [(f.name, str(f.type), f.nullable) for f in schema]
