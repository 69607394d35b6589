"""Image stages: decode + Perceiver preprocessing (CPU tasks), then classification (model actors).

Data flow::

    manifest row (id, path, [row_index for Parquet], label_index)
      -> read_images (CPU task)     pixel_values (3, h, w) float32 tensor, original width/height;
                                    error row for a file that does not decode
      -> ImageWorker (actor pool)   top-k ids, names (config.id2label) and softmax scores
      -> sink                       schemas.IMAGES
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pyarrow as pa

from perceiver_core.image_processor import PerceiverImageProcessorConfig, preprocess_batch
from pipelines import schemas
from pipelines.image_io import ImageDecodeError, load_image
from pipelines.model_workers import ModelWorker, top_k


def processor_config_for(model_source: str | None, config: Any, image_size: int | None = None
                         ) -> PerceiverImageProcessorConfig:
    """The checkpoint's ``preprocessor_config.json``, else transformers' defaults at the model's input size
    (the learned-position head needs exactly ``image_size``; the others take any size, 224 by default)."""
    from pathlib import Path

    from perceiver_core import PerceiverImageProcessor

    if model_source and (Path(model_source) / "preprocessor_config.json").is_file():
        base = PerceiverImageProcessor.from_pretrained(model_source).config
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


def read_parquet_cells(path: str, column: str, rows: list[int]) -> dict[int, Any]:
    """{row: value} of one column for some rows of a Parquet file, reading only their row groups."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    wanted, out, start = sorted(set(rows)), {}, 0
    for group in range(parquet.metadata.num_row_groups):
        n = parquet.metadata.row_group(group).num_rows
        inside = [r for r in wanted if start <= r < start + n]
        if inside:
            values = parquet.read_row_group(group, columns=[column]).column(0)
            for r in inside:
                value = values[r - start].as_py()
                out[r] = value["bytes"] if isinstance(value, dict) else value  # HF struct<bytes, path>
        start += n
    return out


def read_images(batch: pa.Table, processor: PerceiverImageProcessorConfig, column: str = "image") -> pa.Table:
    """Ray ``map_batches`` function: manifest rows -> preprocessed pixel rows or error rows."""
    import torch

    schema = pixel_schema(processor)
    rows = batch.to_pylist()
    cells: dict[tuple[str, int], Any] = {}
    by_file: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        if row.get("row_index") is not None:
            by_file[row["path"]].append(row["row_index"])
    for path, indices in by_file.items():
        for r, value in read_parquet_cells(path, column, indices).items():
            cells[(path, r)] = value
    ok, pixels, errors = [], [], []
    for row in rows:
        source = row["path"] if row.get("row_index") is None else f"{row['path']}#{row['row_index']}"
        try:
            data = row["path"] if row.get("row_index") is None else cells.get((row["path"], row["row_index"]))
            if data is None:
                raise ImageDecodeError("empty_file", f"{source}: null image value")
            image = load_image(data)  # (H, W, 3) uint8
            chw = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W)
            pixels.append(preprocess_batch(chw, processor)[0].numpy())
            ok.append((row, source, image.shape[1], image.shape[0]))
        except ImageDecodeError as e:
            errors.append((row, source, e.reason, str(e)))
        except Exception as e:  # noqa: BLE001 - preprocessing failures are this image's error too
            errors.append((row, source, "preprocess_failed", f"{type(e).__name__}: {e}"))
    tables = []
    if ok:
        n = len(ok)
        tables.append(schemas.build_table(schema, {
            "id": [r["id"] for r, *_ in ok], "source": [s for _, s, *_ in ok],
            "width": [w for *_, w, _ in ok], "height": [h for *_, h in ok],
            "label_index": [r.get("label_index") for r, *_ in ok], "pixel_values": np.stack(pixels),
            schemas.UNIT: [r["id"] for r, *_ in ok], schemas.PART: [0] * n, schemas.FINAL: [True] * n}, n))
    if errors:
        tables.append(schemas.error_rows(schema, [r["id"] for r, *_ in errors], [s for _, s, *_ in errors],
                                         [t for *_, t, _ in errors], [e for *_, e in errors],
                                         label_index=[r.get("label_index") for r, *_ in errors]))
    return pa.concat_tables(tables)


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
