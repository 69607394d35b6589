"""End to end: ``perceiver-jobs images`` on local Ray with the tiny learned-position classifier.

tests/data/images (natural photos + Pillow's edge cases, four of which do not decode), and a Parquet file
of image bytes (with a null and a garbage value).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _job_helpers import (
    DATA,
    TINY,
    check_output,
    check_rerun_adds_nothing,
    manifest_ids,
    run_cli,
    summary,
)

from pipelines import schemas

UNDECODABLE = {"broken.png": "unidentified", "broken_data_stream.png": "decode_failed",
               "truncated_image.png": "truncated", "truncated_jpeg.jpg": "truncated"}


@pytest.fixture(scope="module")
def files_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    labels = tmp / "labels.csv"
    labels.write_text("file,wnid,label_index\nchelsea.png,n02123045,3\ncoffee.png,n07920052,7\n")
    out = tmp / "out"
    args = ["images", "--input", DATA / "images", "--output", out, "--model", "vision-learned", *TINY,
            "--batch-size", "4", "--labels-file", labels]
    assert run_cli(*args) == 0
    return out, args


def test_files(files_run):
    out, _ = files_run
    rows = check_output(out, schemas.IMAGES, manifest_ids(out)).to_pylist()
    by_name = {r["source"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == len(list((DATA / "images").rglob("*.*")))
    for name, reason in UNDECODABLE.items():
        assert by_name[name]["error_type"] == reason and by_name[name]["top_k_ids"] is None
    for name, r in by_name.items():
        if name in UNDECODABLE:
            continue
        assert r["error"] is None and r["width"] > 0 and r["height"] > 0
        assert len(r["top_k_ids"]) == 5 and r["top_k_labels"] == [f"LABEL_{i}" for i in r["top_k_ids"]]
    assert (by_name["hopper_orientation_6.jpg"]["width"], by_name["pil123p.png"]["width"]) == (128, 162)
    assert by_name["chelsea.png"]["label_index"] == 3 and by_name["astronaut.png"]["label_index"] is None
    metrics = summary(out)["metrics"]
    assert metrics["labelled_items"] == 2 and 0 <= metrics["top1_accuracy"] <= metrics["top5_accuracy"] <= 1


def test_rerun_adds_nothing(files_run):
    check_rerun_adds_nothing(*files_run)


def test_parquet_with_image_bytes(ray_local, tmp_path):
    good = (DATA / "images" / "edge_cases" / "hopper.jpg").read_bytes()
    table = pa.table({"key": ["a", "b", "c", "../../escape"],
                      "image": pa.array([good, None, b"not an image", good], pa.binary())})
    pq.write_table(table, tmp_path / "shard.parquet", row_group_size=2)
    out = tmp_path / "out"
    assert run_cli("images", "--input", tmp_path / "shard.parquet", "--output", out, "--model", "vision-learned",
                   *TINY, "--id-column", "key") == 0
    rows = {r["id"]: r for r in check_output(out, schemas.IMAGES, {"a", "b", "c", "../../escape"}).to_pylist()}
    assert rows["a"]["error"] is None and rows["../../escape"]["error"] is None
    assert rows["b"]["error_type"] == "empty_file" and rows["c"]["error_type"] == "unidentified"
    assert rows["a"]["source"].endswith("shard.parquet#0") and rows["a"]["top_k_ids"] == rows["../../escape"]["top_k_ids"]
