"""``perceiver-jobs text`` with ``--input s3://`` and ``--output s3://`` through a real S3 API (moto's server).

The workers read byte ranges of the objects (seek + read through ``storage``); the rows read back from the
bucket must equal those of the same job on the same files on local disk (ids depend on the path relative
to the input root only), and no local folder may be created for the URI.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from _job_helpers import TINY, bucket_fs, read_output, run_cli
from test_job_text import DOCUMENTS, EXPECTED_IDS, write_corpus


@pytest.mark.slow  # a long multi-worker run: `pytest -m slow` (CI runs it)
def test_text_job_on_s3_equals_local(ray_with_s3, tmp_path, monkeypatch):
    s3 = ray_with_s3
    local_in = tmp_path / "docs"
    write_corpus(local_in)
    bucket = s3.new_bucket()
    uri_in = s3.upload_dir(str(local_in), bucket, "corpus/docs")
    common = ["--task", "fill-mask", "--model", "language", *TINY]
    monkeypatch.chdir(tmp_path)  # a URI must never become a local folder (./s3:/...)
    # On S3 the files are cut into 16-byte ranges: every range is a seek + ranged read of the object.
    remote_args = ["text", "--input", uri_in, "--output", f"s3://{bucket}/out", *common, "--range-bytes", "16"]
    assert run_cli(*remote_args) == 0
    assert run_cli("text", "--input", local_in, "--output", tmp_path / "local", *common) == 0
    assert not (tmp_path / "s3:").exists()

    fs = bucket_fs(s3)
    remote = pq.read_table(f"{bucket}/out", filesystem=fs).sort_by("id").to_pylist()
    local = read_output(tmp_path / "local").sort_by("id").to_pylist()
    assert sorted(r["id"] for r in remote) == sorted(EXPECTED_IDS)
    assert len(remote) == len(local)
    def strip(row: dict) -> dict:  # the source differs, and error messages name it
        return {k: v for k, v in row.items() if k not in ("source", "error")}

    for r, ref in zip(remote, local):
        rel = ref["source"].removeprefix(f"{local_in}/")
        assert rel in DOCUMENTS and r["source"] == f"{uri_in}/{rel}"
        assert strip(r) == strip(ref)
        assert (r["error"] is None) == (ref["error"] is None)
    keys = s3.keys(bucket, "out/")
    assert {"out/_SUCCESS", "out/_summary.json", "out/_meta/job.json"} <= set(keys)
    assert any(k.startswith("out/_meta/manifest/") for k in keys)
    # A rerun on S3 finds every shard committed and adds nothing.
    before = sorted(k for k in keys if k.startswith("out/part-"))
    assert len(before) > len(DOCUMENTS)  # more items (ranges) than files
    assert run_cli(*remote_args) == 0
    assert sorted(k for k in s3.keys(bucket, "out/") if k.startswith("out/part-")) == before
