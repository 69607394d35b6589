"""End to end: ``perceiver-jobs images`` on local Ray with the tiny learned-position classifier.

tests/data/images (natural photos + Pillow's edge cases, four of which do not decode), and Parquet files of
image bytes (binary and Hugging Face ``struct<bytes, path>``, with null and garbage values). Predictions are
checked against the same model run directly on the same pixels, accuracy against the rows themselves.
"""

from __future__ import annotations

import functools
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _job_helpers import (
    DATA,
    TINY,
    check_output,
    check_rerun_adds_nothing,
    manifest_ids,
    part_names,
    run_cli,
    run_killed_and_rerun,
    summary,
)
from PIL import Image, ImageOps

from pipelines.batch import schemas

UNDECODABLE = {"broken.png": "unidentified", "broken_data_stream.png": "decode_failed",
               "truncated_image.png": "truncated", "truncated_jpeg.jpg": "truncated"}
MODEL = ["--model", "vision-learned", *TINY]
# The random tiny classifier's scores all sit near 1/10 and move little with the input: the job's scores equal the
# reference to 1e-8 (float32 batching), a mirrored image moves them by 4e-7, a transposed one by 8e-7, BGR by 1e-4.
SCORE_TOL = 1e-7
REDONE = 2  # parts deleted to simulate a killed run (shards of 4 images: the batch size; 14 images)


def pil_rgb(image_bytes_or_path) -> Image.Image:
    """The image as a viewer shows it, with Pillow directly: EXIF orientation applied, transparency composited
    on white (the images job's documented rule), any other mode converted by Pillow."""
    source = io.BytesIO(image_bytes_or_path) if isinstance(image_bytes_or_path, bytes) else image_bytes_or_path
    with Image.open(source) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return im.convert("RGB")


@functools.lru_cache(maxsize=1)
def tiny_classifier():
    from pipelines.batch.model_workers import ModelSpec

    return ModelSpec("vision-learned", random_init=True, tiny=True).load()  # seed 0: the job's weights


def reference_top_k(image_bytes_or_path, k: int = 5) -> tuple[list[int], list[float]]:
    """The tiny model's top-k on one image, computed here without the pipeline's decode and preprocessing:
    Pillow, then the transformers-compatible processor at the learned head's 32-pixel input with transformers'
    crop-to-size ratio (256 / 224, so a 37-pixel crop), then the same seeded weights."""
    from perceiver_core import PerceiverImageProcessor

    processor = PerceiverImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 37, "width": 37})
    pixels = processor(pil_rgb(image_bytes_or_path), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        probs = tiny_classifier()(inputs=pixels).logits.double().softmax(-1)[0]
    scores, ids = probs.topk(k)
    return ids.tolist(), scores.tolist()


@pytest.fixture(scope="module")
def files_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    labels = tmp / "labels.csv"
    labels.write_text("file,wnid,label_index\nchelsea.png,n02123045,3\ncoffee.png,n07920052,7\n")
    out = tmp / "out"
    args = ["images", "--input", DATA / "images", "--output", out, *MODEL, "--batch-size", "4",
            "--labels-file", labels]
    kept = run_killed_and_rerun(args, out, REDONE)  # some shards committed, no _SUCCESS
    return out, args, kept


def test_files(files_run):
    out, _, _ = files_run
    rows = check_output(out, schemas.IMAGES, manifest_ids(out)).to_pylist()
    by_name = {r["source"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == len(list((DATA / "images").rglob("*.*"))) == 14
    for name, reason in UNDECODABLE.items():
        assert by_name[name]["error_type"] == reason and by_name[name]["top_k_ids"] is None
        assert name in by_name[name]["error"]
    for name, r in by_name.items():
        if name in UNDECODABLE:
            continue
        assert r["error"] is None and r["width"] > 0 and r["height"] > 0
        assert len(r["top_k_ids"]) == 5 and r["top_k_labels"] == [f"LABEL_{i}" for i in r["top_k_ids"]]
    assert (by_name["hopper_orientation_6.jpg"]["width"], by_name["pil123p.png"]["width"]) == (128, 162)
    assert by_name["chelsea.png"]["label_index"] == 3 and by_name["astronaut.png"]["label_index"] is None
    for name, r in by_name.items():  # every decoded image (RGB, grey, palette, CMYK, alpha, EXIF-rotated, WebP)
        if name not in UNDECODABLE:
            ids, scores = reference_top_k(next((DATA / "images").rglob(name)))
            assert r["top_k_ids"] == ids, name
            assert r["top_k_scores"] == pytest.approx(scores, abs=SCORE_TOL), name
            assert (r["width"], r["height"]) == pil_rgb(next((DATA / "images").rglob(name))).size
    labelled = [r for r in rows if r["label_index"] is not None]
    metrics = summary(out)["metrics"]
    assert metrics["labelled_items"] == len(labelled) == 2
    assert metrics["top1_accuracy"] == sum(r["top_k_ids"][0] == r["label_index"] for r in labelled) / 2
    assert metrics["top5_accuracy"] == sum(r["label_index"] in r["top_k_ids"] for r in labelled) / 2


def test_resume_redoes_only_the_missing_parts(files_run):
    out, _, kept = files_run
    s = summary(out)
    # 14 images in shards of the batch size 4: 4 shards, the last two (4 + 2 images) redone
    assert s["run"]["processed_this_run"] == 6 and s["counts"]["shards"] == 4
    assert len(part_names(out)) == 4 and set(kept) < part_names(out)
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # not rewritten


def test_rerun_adds_nothing(files_run):
    out, args, _ = files_run
    check_rerun_adds_nothing(out, args)


@pytest.fixture(scope="module")
def parquet_inputs(tmp_path_factory):
    """Two Parquet files: binary cells (one null, one garbage) and Hugging Face image structs whose null
    ``bytes`` names a real image in ``path`` (which must never be opened)."""
    folder = tmp_path_factory.mktemp("parquet")
    good = (DATA / "images" / "edge_cases" / "hopper.jpg").read_bytes()
    chelsea = (DATA / "images" / "natural" / "chelsea.png").read_bytes()
    binary = pa.table({"key": ["a", "b", "c", "../../escape"],
                       "image": pa.array([good, None, b"not an image", good], pa.binary())})
    pq.write_table(binary, folder / "shard-0.parquet", row_group_size=2)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    hf = pa.table({"key": ["d", "e", "f"], "image": pa.array(
        [{"bytes": chelsea, "path": "chelsea.png"},
         {"bytes": None, "path": str(DATA / "images" / "natural" / "coffee.png")}, None], struct)})
    pq.write_table(hf, folder / "shard-1.parquet", row_group_size=1)
    return folder, good, chelsea


def test_parquet_with_image_bytes(ray_local, parquet_inputs, tmp_path):
    folder, good, chelsea = parquet_inputs
    out = tmp_path / "out"
    assert run_cli("images", "--input", folder, "--output", out, *MODEL, "--id-column", "key") == 0
    table = check_output(out, schemas.IMAGES, set("abcdef") | {"../../escape"})
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows["a"]["error"] is None and rows["../../escape"]["error"] is None and rows["d"]["error"] is None
    assert rows["b"]["error_type"] == "empty_file" and rows["c"]["error_type"] == "unidentified"
    assert rows["e"]["error_type"] == rows["f"]["error_type"] == "empty_file"  # the struct's path: not opened
    assert rows["a"]["source"].endswith("shard-0.parquet#0")
    assert rows["d"]["source"].endswith("shard-1.parquet#0")
    for key, image in (("a", good), ("../../escape", good), ("d", chelsea)):  # the cells' bytes, decoded here
        ids, scores = reference_top_k(image)
        assert rows[key]["top_k_ids"] == ids and rows[key]["top_k_scores"] == pytest.approx(scores, abs=SCORE_TOL)
    assert rows["d"]["width"] == 451


def test_parquet_ids_without_id_column_are_file_and_row(ray_local, parquet_inputs, tmp_path):
    from pipelines.readers.listing import stable_id

    folder, *_ = parquet_inputs
    out = tmp_path / "out"
    assert run_cli("images", "--input", folder / "shard-0.parquet", "--output", out, *MODEL,
                   "--limit", "3") == 0
    expected = {stable_id("shard-0.parquet", i) for i in range(3)}  # --limit: the first 3 rows
    rows = check_output(out, schemas.IMAGES, expected).to_pylist()
    assert {r["source"].rsplit("#", 1)[1] for r in rows} == {"0", "1", "2"}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("column, value, message", [
    ("image", pa.array(["x.png"], pa.string()), "not binary"),
    ("image", pa.array([{"path": "x.png"}], pa.struct([("path", pa.string())])), "without a 'bytes' field"),
    ("image", pa.array([1], pa.int64()), "not binary"),
    ("picture", pa.array([b"x"], pa.binary()), "no column 'image'"),
])
def test_parquet_image_column_refused_before_any_work(tmp_path, capsys, column, value, message):
    pq.write_table(pa.table({column: value, "key": ["k"]}), tmp_path / "bad.parquet")
    out = tmp_path / "out"
    assert run_cli("images", "--input", tmp_path / "bad.parquet", "--output", out, *MODEL) == 2
    err = _one_line_error(capsys)
    assert message in err and "bad.parquet" in err
    assert not out.exists()  # refused before the output folder was created


@pytest.mark.parametrize("keys, message", [(["k1", None, "k3"], "is null in row 1"),
                                           (["k1", "k2", "k1"], "repeats the id 'k1'")])
def test_bad_id_column_refused(tmp_path, capsys, keys, message):
    good = (DATA / "images" / "edge_cases" / "hopper.jpg").read_bytes()
    pq.write_table(pa.table({"image": pa.array([good] * 3, pa.binary()), "key": keys}),
                   tmp_path / "ids.parquet")
    out = tmp_path / "out"
    assert run_cli("images", "--input", tmp_path / "ids.parquet", "--output", out, *MODEL,
                   "--id-column", "key") == 2
    assert message in _one_line_error(capsys)
    assert not (out / "_meta" / "job.json").exists() and not list(out.glob("part-*"))


def test_mixed_inputs_refused(tmp_path, capsys):
    pq.write_table(pa.table({"image": pa.array([b"x"], pa.binary())}), tmp_path / "a.parquet")
    out = tmp_path / "out"
    assert run_cli("images", "--input", tmp_path / "a.parquet", DATA / "images" / "natural", "--output", out,
                   *MODEL) == 2
    assert "mix of Parquet and image-file inputs" in _one_line_error(capsys)


def test_parquet_items_stream_file_by_file(tmp_path, monkeypatch):
    """The listing reads one file at a time (lazily), only its footer and the --id-column."""
    from jobs.images import image_items
    from pipelines import storage

    for k in range(3):
        table = pa.table({"image": pa.array([b"x"] * 4, pa.binary()), "key": [f"{k}-{i}" for i in range(4)]})
        pq.write_table(table, tmp_path / f"part-{k}.parquet", row_group_size=2)
    opened, columns_read = [], []
    real_open, real_read = storage.Location.open_input, pq.ParquetFile.read_row_group

    def open_input(self):
        opened.append(self.name)
        return real_open(self)

    def read_row_group(self, i, columns=None, **kwargs):
        columns_read.append(columns)
        return real_read(self, i, columns=columns, **kwargs)

    monkeypatch.setattr(storage.Location, "open_input", open_input)
    monkeypatch.setattr(pq.ParquetFile, "read_row_group", read_row_group)
    items = image_items([str(tmp_path)], id_column="key")
    first = next(items)
    assert first["id"] == "0-0" and first["row_index"] == 0 and opened == ["part-0.parquet"]
    rest = list(items)
    assert [r["id"] for r in rest][-1] == "2-3" and len(rest) == 11
    assert opened == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert columns_read == [["key"]] * 6  # two row groups per file, never the image column
