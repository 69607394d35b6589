import os

import pytest


@pytest.fixture(scope="module")
def ray_with_s3(s3_server):
    """A local Ray started after the S3 endpoint and credentials are in ``os.environ``, so that its workers
    inherit them (as they would a user's MinIO settings); the environment is restored afterwards."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    saved = {key: os.environ.get(key) for key in s3_server.env()}
    os.environ.update(s3_server.env())
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield s3_server
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
