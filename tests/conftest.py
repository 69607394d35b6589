"""Suite-wide fixtures: an S3 API server on 127.0.0.1 (moto's ThreadedMotoServer), started once per session.

Tests that use ``s3`` get an endpoint, credentials and a fresh bucket; the variables are set in
``os.environ`` (and so reach subprocesses and local Ray workers started afterwards) the way a user would set
them for MinIO or another S3-compatible store: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def env(self) -> dict[str, str]:
        return {**S3_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"], region_name=S3_ENV["AWS_REGION"])

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload_dir(self, local: str, bucket: str, prefix: str) -> str:
        """Copy a local folder to ``s3://bucket/prefix`` (symlinks followed); returns the URI."""
        client = self.client()
        for dirpath, _, files in os.walk(local, followlinks=True):
            for f in files:
                path = os.path.join(dirpath, f)
                key = f"{prefix}/{os.path.relpath(path, local)}".replace(os.sep, "/")
                client.upload_file(path, bucket, key)
        return f"s3://{bucket}/{prefix}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [o["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """The S3 API server (no environment changes); see ``s3``."""
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Server(f"http://127.0.0.1:{port}")
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server with its endpoint and credentials in the environment (as a user of MinIO sets them)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    yield s3_server


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray (2 CPUs) shared by the in-process CLI runs of a test module; reused if already running, and
    shut down after the module when it started it (other folders want Rays of other sizes).

    In-process runs attach to it (``ray_runtime.connect`` reuses an initialised Ray), which saves a Ray start
    per run; the tests that kill or signal a job run the CLI as a subprocess with its own Ray."""
    ray = pytest.importorskip("ray")
    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
