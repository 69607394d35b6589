import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the training tests: logical CPUs for two training workers plus Ray Data's tasks."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=4, object_store_memory=512 * 1024 * 1024, include_dashboard=False, log_to_driver=True)
    yield ray
    ray.shutdown()
