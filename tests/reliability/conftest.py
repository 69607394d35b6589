"""Fixtures of the reliability tests (``ray_local`` comes from tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def cli(ray_local, capsys):
    """Run ``perceiver-jobs`` in this process: ``cli(*args) -> (exit status, stderr lines)``."""

    def run(*args: object) -> tuple[int, list[str]]:
        from jobs.cli import main

        capsys.readouterr()
        rc = main([str(a) for a in args])
        return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    return run
