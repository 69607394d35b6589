"""Shared pieces of the reliability tests: run the CLI as a subprocess, kill process trees, check exactly-once.

Everything here reads the output the way a user does (plain pyarrow over the committed part files) and
counts against the run's own ``_manifest.parquet``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
VIDEOS = ROOT / "tests" / "data" / "videos"
SMALL_CLIPS = [VIDEOS / "torchcodec__h265_video.mp4", VIDEOS / "moviepy__big_buck_bunny_432_433.webm"]
TINY_VIDEO = ["--model", "multimodal", "--random-init", "--tiny", "--no-progress"]
CLUSTER_SCRIPT = Path(__file__).with_name("_cluster_script.py")
PART_GLOB = "part-*.parquet"  # pipelines.sink.PART_RE: part-<run>-<seq>.parquet; temporaries start with "."


def make_clips(folder: Path, n: int) -> Path:
    """``n`` symlinks to the two small sample videos, alternating, under distinct names (distinct ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = SMALL_CLIPS[i % 2]
        (folder / f"clip_{i:03d}{src.suffix}").symlink_to(src)
    return folder


def video_cmd(inp: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs", "video", "--input", str(inp), "--output", str(out), *TINY_VIDEO,
            *map(str, extra)]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session (process group), output to ``log``."""
    fh = open(log, "ab")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env)


@contextlib.contextmanager
def local_cluster(tmp_path: Path, *args: object) -> Iterator[tuple[str, Path]]:
    """A local multi-node Ray cluster run by ``_cluster_script.py`` (``args``: its flags): yields (address,
    control folder) once the head is up; on exit asks the script to stop and kills it if it does not."""
    control = tmp_path / "control"
    control.mkdir()
    log = tmp_path / "cluster.log"
    cluster = start([sys.executable, str(CLUSTER_SCRIPT), "--control", str(control), *map(str, args)], log)
    try:
        assert wait_until(lambda: (control / "address").exists(), 180, cluster), log_tail(log)
        yield (control / "address").read_text(), control
    finally:
        (control / "stop").write_text("")
        try:
            cluster.wait(timeout=60)
        except Exception:  # noqa: BLE001
            kill_tree(cluster)


def _ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (only what that process started)."""
    children = defaultdict(list)
    for child, parent in _ppids().items():
        children[parent].append(child)
    found, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.append(c)
            todo.append(c)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process group and every descendant of ``proc`` (Ray's raylet/GCS/workers included)."""
    pids = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


def wait_until(predicate, timeout: float, proc: subprocess.Popen | None = None, poll: float = 0.1) -> bool:
    """Poll ``predicate`` until true; False on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(predicate())
        time.sleep(poll)
    return False


def parts(out: Path) -> list[Path]:
    return sorted(out.glob(PART_GLOB))


def committed_units(out: Path) -> set[str]:
    files = parts(out)
    return set(pq.read_table(files, columns=["input_id"]).column("input_id").to_pylist()) if files else set()


def log_tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def check_exactly_once(out: Path, clips_per_source: dict[str, int] | None = None) -> dict:
    """Each manifest video accounted for once: clip ids unique, clip indices 0..k-1 without gaps,
    successes + errors == manifest, summary complete. Returns the summary."""
    assert (out / "_SUCCESS").is_file(), "no _SUCCESS"
    table = pq.read_table(parts(out))
    rows = table.to_pylist()
    manifest = set(pq.read_table(out / "_manifest.parquet", columns=["id"]).column("id").to_pylist())
    ids = Counter(r["id"] for r in rows)
    assert not [i for i, n in ids.items() if n > 1], "duplicate rows"
    by_unit: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_unit[r["input_id"]].append(r)
    ok = {u for u, rs in by_unit.items() if all(r["error"] is None for r in rs)}
    failed = {u for u, rs in by_unit.items() if any(r["error"] is not None for r in rs)}
    assert not ok & failed
    assert ok | failed == manifest, (manifest - ok - failed, (ok | failed) - manifest)
    for u in failed:
        assert len(by_unit[u]) == 1, by_unit[u]  # an error is one row
    for u in ok:
        idx = sorted(r["clip_index"] for r in by_unit[u])
        assert idx == list(range(len(idx))), (u, idx)  # no clip missing in the middle
    if clips_per_source is not None:  # copies of one file must yield the same number of clips
        for u in ok:
            target = os.path.realpath(by_unit[u][0]["source"])
            assert len(by_unit[u]) == clips_per_source[os.path.basename(target)], (target, len(by_unit[u]))
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["complete"] is True, summary
    assert summary["counts"]["inputs"] == len(manifest)
    assert summary["counts"]["duplicate_ids"] == 0
    assert summary["counts"]["rows"] == len(rows)
    return summary


def check_made_clips(out: Path, n_inputs: int, clips_per_video: int) -> dict:
    """``check_exactly_once`` for a ``make_clips`` corpus: every input succeeded, each with ``clips_per_video``
    clips. Returns the summary."""
    summary = check_exactly_once(out, {p.name: clips_per_video for p in SMALL_CLIPS})
    assert summary["counts"]["inputs_ok"] == n_inputs
    return summary
