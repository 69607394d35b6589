"""Failures mid-job (opt-in: ``pytest -m slow tests/pipelines/test_job_reliability.py``, ~3-4 min): a killed model actor, and a killed job that is rerun.

Both run the real CLI in a subprocess over a corpus of copied sample videos and check that the output
holds every clip exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from _job_helpers import DATA

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _only_when_selected(request):
    """The default addopts only deselect ``gpu``; these minutes-long tests run with ``-m slow`` alone."""
    if "slow" not in (request.config.getoption("markexpr") or "").replace("not slow", ""):
        pytest.skip("slow: run with -m slow")


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(20):
        shutil.copy(DATA / "videos" / "torchcodec__av1_video.mkv", folder / f"av1_{i:02d}.mkv")
        shutil.copy(DATA / "videos" / "torchcodec__h265_video.mp4", folder / f"h265_{i:02d}.mp4")
    shutil.copy(DATA / "videos" / "broken" / "moviepy__result_empty.webm", folder)
    return folder


def command(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "jobs", "video", "--input", str(corpus), "--output", str(out), "--model",
            "multimodal", "--random-init", "--tiny", "--no-progress", "--clips-per-video", "0",
            "--commit-interval", "0", "--batch-size", "4"]


def wait_for_first_part(out: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not list(out.glob("part-*.parquet")):
        assert proc.poll() is None and time.time() < deadline, "the job ended before writing anything"
        time.sleep(0.2)


def check_exactly_once(out: Path) -> None:
    rows = pq.read_table(out, columns=["id", "input_id"]).to_pylist()
    ids = Counter(r["id"] for r in rows)
    assert max(ids.values()) == 1
    manifest = set(pq.read_table(out / "_manifest.parquet", columns=["id"]).column("id").to_pylist())
    assert {r["input_id"] for r in rows} == manifest and (out / "_SUCCESS").is_file()


def test_killed_model_actor_is_replaced(corpus, tmp_path):
    import ray  # noqa: F401, I001 - puts Ray's bundled psutil on the path
    import psutil

    out = tmp_path / "out"
    proc = subprocess.Popen(command(corpus, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_first_part(out, proc)
    actors = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if "MapBatches(VideoWorker)" in " ".join(p.cmdline())]
    assert actors
    actors[0].kill()
    assert proc.wait(timeout=600) == 0
    check_exactly_once(out)


def test_killed_job_resumes(corpus, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(command(corpus, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for_first_part(out, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its local Ray and the actors, at once
    proc.wait()
    assert not (out / "_SUCCESS").exists()
    done_before = pq.read_table(out, columns=["input_id"]).column("input_id").unique().to_pylist()
    assert subprocess.run(command(corpus, out), capture_output=True, timeout=600, check=False).returncode == 0
    check_exactly_once(out)
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["run"]["processed_this_run"] == summary["counts"]["inputs"] - len(done_before)
