import pytest
from _job_helpers import ray_for_module


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray (2 CPUs) per job-test module; a Ray already running in this process is reused."""
    yield from ray_for_module()
