"""Fixtures of the reliability tests: one local Ray for the tests that run the CLI in this process."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray (2 CPUs) shared by the in-process CLI runs of a module; reused if already running, and shut
    down after the module when it started it (later folders want Rays of other sizes).

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


@pytest.fixture
def cli(ray_local, capsys):
    """Run ``perceiver-jobs`` in this process: ``cli(*args) -> (exit status, stderr lines)``."""

    def run(*args: object) -> tuple[int, list[str]]:
        from jobs.cli import main

        capsys.readouterr()
        rc = main([str(a) for a in args])
        return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    return run
