"""``perceiver-jobs video`` with ``--input s3://`` and ``--output s3://`` through a real S3 API (moto's server).

The rows read back from the bucket must equal the rows of the same job on local files (the ids of an input
depend on its path relative to the input root, so they match), the sidecars must be in the bucket, and
nothing may be written to a local folder named after the URI.
"""

from __future__ import annotations

import pyarrow.parquet as pq
from _job_helpers import DATA, TINY, bucket_fs, read_output, run_cli

VIDEOS = DATA / "videos"
FILES = ["torchcodec__h265_video.mp4", "moviepy__big_buck_bunny_432_433.webm", "broken/moviepy__result_empty.webm"]


def test_video_job_on_s3_equals_local(ray_with_s3, tmp_path, monkeypatch):
    s3 = ray_with_s3
    local_in = tmp_path / "videos"
    for name in FILES:
        (local_in / name).parent.mkdir(parents=True, exist_ok=True)
        (local_in / name).symlink_to(VIDEOS / name)
    bucket = s3.new_bucket()
    uri_in = s3.upload_dir(str(local_in), bucket, "corpus/videos")
    common = ["--model", "multimodal", *TINY, "--clips-per-video", "2", "--pictures"]
    monkeypatch.chdir(tmp_path)  # a URI must never become a local folder (./s3:/...)
    assert run_cli("video", "--input", uri_in, "--output", f"s3://{bucket}/out", *common) == 0
    assert run_cli("video", "--input", local_in, "--output", tmp_path / "local", *common) == 0
    assert not (tmp_path / "s3:").exists()

    fs = bucket_fs(s3)
    remote = pq.read_table(f"{bucket}/out", filesystem=fs).sort_by("id")
    local = read_output(tmp_path / "local").sort_by("id")
    assert remote.column("id").to_pylist() == local.column("id").to_pylist()
    assert remote.column("error_type").to_pylist() == local.column("error_type").to_pylist()
    for r, ref in zip(remote.column("psnr_video").to_pylist(), local.column("psnr_video").to_pylist()):
        assert (r is None and ref is None) or abs(r - ref) < 1e-4
    assert all(s.startswith(f"{uri_in}/") for s in remote.column("source").to_pylist())
    keys = s3.keys(bucket, "out/")
    pictures = [p for p in remote.column("picture").to_pylist() if p]
    assert pictures and all(f"out/{p}" in keys for p in pictures)
    assert {"out/_SUCCESS", "out/_summary.json", "out/_meta/job.json"} <= set(keys)
    # A rerun on S3 finds every shard committed and adds nothing.
    before = sorted(k for k in keys if k.startswith("out/part-"))
    assert run_cli("video", "--input", uri_in, "--output", f"s3://{bucket}/out", *common) == 0
    assert sorted(k for k in s3.keys(bucket, "out/") if k.startswith("out/part-")) == before


def test_bad_scheme_and_missing_bucket_fail_before_work(ray_with_s3, tmp_path, capsys):
    assert run_cli("video", "--input", "xyz://b/videos", "--output", tmp_path / "o", "--model", "multimodal",
                   *TINY) == 2
    assert "unsupported URI scheme 'xyz'" in capsys.readouterr().err
    assert run_cli("video", "--input", VIDEOS, "--output", "s3://no-such-bucket-here/out", "--model", "multimodal",
                   *TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "no-such-bucket-here" in err[-1]
