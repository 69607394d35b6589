import pytest


@pytest.fixture
def ray_session():
    """A local Ray for the training tests: logical CPUs for two training workers plus Ray Data's tasks.

    Started on first use and kept for the session; started again when a module stopped it (the object
    storage tests restart Ray so that its workers see the S3 variables)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized() and ray.cluster_resources().get("CPU", 0) < 4:
        ray.shutdown()  # another folder's smaller Ray: two workers plus Ray Data's tasks would wait forever
    if not ray.is_initialized():
        ray.init(num_cpus=4, object_store_memory=512 * 1024 * 1024, include_dashboard=False, log_to_driver=True)
    yield ray
