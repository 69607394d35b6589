"""``images`` and ``flow`` with inputs and output on object storage (a real S3 API server, moto), in process.

Each job runs twice, on local input/output and on ``s3://`` input/output, and the rows read back from S3
with plain pyarrow must equal the local ones (ids, predictions, flow errors); the sidecars must be on S3 and
nothing may be written to the local disk. Ray workers get the endpoint and credentials from the environment
this module sets before its own local Ray starts.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from _job_helpers import DATA, TINY, bucket_fs, read_output, run_cli
from test_job_flow import GT_FLOW, UNKNOWN, build_sintel_tree
from test_job_images import reference_top_k

from pipelines.readers.flow_data import read_flo


def read_s3_output(server, uri: str):
    """What a user gets: ``pq.read_table`` on the output prefix (``_meta``/``_flow``/... are skipped)."""
    return pq.read_table(uri.removeprefix("s3://"), filesystem=bucket_fs(server))


def s3_json(server, uri: str) -> dict:
    with bucket_fs(server).open_input_stream(uri.removeprefix("s3://")) as f:
        return json.loads(f.read())


def s3_bytes(server, uri: str) -> bytes:
    with bucket_fs(server).open_input_stream(uri.removeprefix("s3://")) as f:
        return f.read()


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """The driver's working directory: nothing may appear in it (e.g. a local ``s3:/bucket/...`` folder)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def by_id(table) -> dict[str, dict]:
    return {r["id"]: r for r in table.to_pylist()}


def test_images_on_s3_equal_local(ray_with_s3, tmp_path, empty_cwd):
    server = ray_with_s3
    bucket = server.new_bucket()
    images = server.upload_dir(str(DATA / "images"), bucket, "inputs/images")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label_index\nchelsea.png,3\ncoffee.png,7\n")
    labels_uri = server.upload_dir(str(tmp_path), bucket, "meta") + "/labels.csv"
    common = ["--model", "vision-learned", *TINY, "--batch-size", "4"]
    local_out = tmp_path / "local"
    assert run_cli("images", "--input", DATA / "images", "--output", local_out, "--labels-file", labels,
                   *common) == 0
    out = f"s3://{bucket}/out"
    assert run_cli("images", "--input", images, "--output", out, "--labels-file", labels_uri, *common) == 0

    local, remote = by_id(read_output(local_out)), by_id(read_s3_output(server, out))
    assert set(remote) == set(local) and len(remote) == 14
    for item_id, r in remote.items():
        expected = local[item_id]
        assert r["source"] == f"{images}/{os.path.relpath(expected['source'], DATA / 'images')}"
        for column in ("top_k_ids", "error_type", "width", "height", "label_index"):
            assert r[column] == expected[column], (column, r, expected)
        if expected["top_k_scores"] is not None:
            assert r["top_k_scores"] == pytest.approx(expected["top_k_scores"], abs=1e-5)
    s = s3_json(server, f"{out}/_summary.json")
    assert s["complete"] and s["counts"]["inputs"] == 14 and s["counts"]["inputs_failed"] == 4
    assert s["metrics"]["top1_accuracy"] == json.loads((local_out / "_summary.json").read_text())["metrics"][
        "top1_accuracy"]
    keys = server.keys(bucket, "out/")
    assert "out/_SUCCESS" in keys and "out/_meta/job.json" in keys
    assert sum(k.startswith("out/part-") for k in keys) == 4  # 14 images in shards of the batch size 4
    assert not any(k.startswith("out/_meta/staging/") and k.endswith(".tmp") for k in keys)
    assert list(empty_cwd.iterdir()) == []


def test_parquet_images_on_s3(ray_with_s3, tmp_path, empty_cwd):
    """Parquet cells read by the workers through storage: the predictions of the model run directly on the
    same images."""
    import pyarrow as pa

    server = ray_with_s3
    bucket = server.new_bucket()
    names = ["chelsea.png", "coffee.png", "astronaut.png"]
    cells = [(DATA / "images" / "natural" / n).read_bytes() for n in names]
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"key": names, "image": pa.array(cells, pa.binary())}), folder / "shard.parquet",
                   row_group_size=2)
    uri = server.upload_dir(str(folder), bucket, "pq")
    common = ["--model", "vision-learned", *TINY]
    out = f"s3://{bucket}/out-pq"
    assert run_cli("images", "--input", uri, "--output", out, "--id-column", "key", *common) == 0
    remote = by_id(read_s3_output(server, out))
    assert set(remote) == set(names)
    for i, name in enumerate(names):
        assert remote[name]["source"] == f"{uri}/shard.parquet#{i}" and remote[name]["error"] is None
        ids, scores = reference_top_k(cells[i])
        assert remote[name]["top_k_ids"] == ids
        assert remote[name]["top_k_scores"] == pytest.approx(scores, abs=1e-5)
    assert s3_json(server, f"{out}/_summary.json")["complete"]
    assert list(empty_cwd.iterdir()) == []


def test_flow_on_s3_equal_local(ray_with_s3, tmp_path, empty_cwd):
    server = ray_with_s3
    bucket = server.new_bucket()
    h, w = 96, 128  # a crop of the Sintel frames: three tiles by three of the tiny model
    training = build_sintel_tree(tmp_path / "data", crop=(h, w))
    video = DATA / "videos" / "torchcodec__h265_video.mp4"
    training_uri = server.upload_dir(str(training), bucket, "in/sintel/training")
    server.client().upload_file(str(video), bucket, f"in/videos/{video.name}")
    common = ["--model", "optical-flow", *TINY, "--max-pairs", "2", "--tiles-per-call", "64", "--pictures"]
    local_out = tmp_path / "local"
    assert run_cli("flow", "--input", training, video, "--output", local_out, *common) == 0
    out = f"s3://{bucket}/out"
    assert run_cli("flow", "--input", training_uri, f"s3://{bucket}/in/videos/{video.name}", "--output", out,
                   *common) == 0

    local, remote = by_id(read_output(local_out)), by_id(read_s3_output(server, out))
    assert set(remote) == set(local) and len(remote) == 4  # Sintel pair, broken pair, 2 video pairs
    keys = set(server.keys(bucket, "out/"))
    for item_id, r in remote.items():
        expected = local[item_id]
        for column in ("input_id", "layout", "pair_index", "height", "width", "has_gt", "num_valid_px",
                       "error_type", "flow_path", "picture"):
            assert r[column] == expected[column], (column, r, expected)
        for column in ("epe", "acc_1px", "acc_3px", "acc_5px", "fl_all", "flow_mean_px"):
            if expected[column] is None:
                assert r[column] is None
            else:
                assert math.isclose(r[column], expected[column], rel_tol=1e-5, abs_tol=1e-9), column
        if expected["error"] is None:
            assert f"out/{r['flow_path']}" in keys and r["flow_path"].startswith("_flow/")
            assert f"out/{r['picture']}" in keys
            flow = np.frombuffer(s3_bytes(server, f"{out}/{r['flow_path']}")[12:], "<f4")
            local_flow = read_flo(local_out / expected["flow_path"]).reshape(-1)
            np.testing.assert_allclose(flow, local_flow, rtol=1e-5, atol=1e-9)  # flows of ~1e-4 px
    (pair,) = [r for r in remote.values() if r["layout"] == "sintel" and r["error"] is None]
    assert pair["source"] == f"{training_uri}/clean/alley_1/frame_0016.png"
    assert pair["num_valid_px"] == h * w - 10 * 20 and pair["epe"] is not None
    flow = read_flo(local_out / pair["flow_path"])
    valid = np.ones((h, w), bool)
    valid[UNKNOWN] = False
    epe = np.linalg.norm(flow.astype(np.float64) - np.float64(GT_FLOW), axis=-1)[valid].mean()
    assert math.isclose(pair["epe"], epe, rel_tol=1e-4)
    s = s3_json(server, f"{out}/_summary.json")
    assert s["complete"] and s["metrics"]["pairs_with_gt"] == 1 and math.isclose(s["metrics"]["epe"], epe,
                                                                                 rel_tol=1e-4)
    assert "out/_SUCCESS" in keys
    assert list(empty_cwd.iterdir()) == []
