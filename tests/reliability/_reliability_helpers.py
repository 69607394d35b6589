"""Shared pieces of the reliability tests: run the CLI as a subprocess, kill process trees, check exactly-once.

Everything here reads the output the way a user does: plain ``pyarrow.fs`` + ``pyarrow.parquet`` over the
committed part files (locally or on the S3 test server), never ``pipelines.storage``, and counts against the
run's own manifest (``_meta/manifest/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
VIDEOS = ROOT / "tests" / "data" / "videos"
SMALL_CLIPS = [VIDEOS / "torchcodec__h265_video.mp4", VIDEOS / "moviepy__big_buck_bunny_432_433.webm"]
TINY_VIDEO = ["--model", "multimodal", "--random-init", "--tiny", "--no-progress"]
CLUSTER_SCRIPT = Path(__file__).with_name("_cluster_script.py")
PART_RE = re.compile(r"^part-\d+\.parquet$")  # pipelines.batch.sink: part-<shard>.parquet, written whole
STORAGE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
               "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


# ----------------------------------------------------------------------------- reading an output folder


@dataclass(frozen=True)
class Output:
    """An output folder on a ``pyarrow.fs`` filesystem (``root`` is that filesystem's path)."""

    fs: pafs.FileSystem
    root: str
    uri: str  # what the CLI is given as --output

    @classmethod
    def local(cls, path: Path) -> Output:
        return cls(pafs.LocalFileSystem(), str(path), str(path))

    @classmethod
    def s3(cls, server, bucket: str, prefix: str) -> Output:
        env = server.env()
        fs = pafs.S3FileSystem(access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"],
                               region=env["AWS_REGION"], scheme="http",
                               endpoint_override=server.endpoint.split("://", 1)[1])
        return cls(fs, f"{bucket}/{prefix}", f"s3://{bucket}/{prefix}")

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def is_file(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def names(self) -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)

    def parts(self) -> list[str]:
        return [self.path(n) for n in self.names() if PART_RE.match(n)]

    def read_parts(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.parts(), filesystem=self.fs, columns=columns)

    def manifest_ids(self) -> set[str]:
        table = pq.read_table(self.path("_meta/manifest"), filesystem=self.fs, columns=["id"])
        return set(table.column("id").to_pylist())

    def summary(self) -> dict:
        with self.fs.open_input_stream(self.path("_summary.json")) as f:
            return json.loads(f.read())


def as_output(out: Path | Output) -> Output:
    return out if isinstance(out, Output) else Output.local(out)


def parts(out: Path) -> list[Path]:
    return [Path(p) for p in Output.local(out).parts()]


def committed_units(out: Path | Output) -> set[str]:
    view = as_output(out)
    return set(view.read_parts(["input_id"]).column("input_id").to_pylist()) if view.parts() else set()


def check_exactly_once(out: Path | Output, clips_per_input: int | None = None) -> dict:
    """Each manifest video accounted for once: clip ids unique, clip indices 0..k-1 without gaps, an error is
    one row, successes + errors == manifest, summary complete. Returns the summary."""
    view = as_output(out)
    assert view.is_file("_SUCCESS"), "no _SUCCESS"
    rows = view.read_parts().to_pylist()
    manifest = view.manifest_ids()
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
        if clips_per_input is not None:
            assert len(idx) == clips_per_input, (u, idx)
    summary = view.summary()
    assert summary["complete"] is True, summary
    assert summary["counts"]["inputs"] == len(manifest)
    assert summary["counts"]["duplicate_ids"] == 0
    assert summary["counts"]["rows"] == len(rows)
    return summary


def check_made_clips(out: Path | Output, n_inputs: int, clips_per_video: int) -> dict:
    """``check_exactly_once`` for a ``make_clips`` corpus: every input succeeded, each with ``clips_per_video``
    clips (both sample videos are long enough). Returns the summary."""
    summary = check_exactly_once(out, clips_per_video)
    assert summary["counts"]["inputs_ok"] == n_inputs
    return summary


# ----------------------------------------------------------------------------- inputs and commands


def make_clips(folder: Path, n: int) -> Path:
    """``n`` symlinks to the two small sample videos, alternating, under distinct names (distinct ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        src = SMALL_CLIPS[i % 2]
        (folder / f"clip_{i:03d}{src.suffix}").symlink_to(src)
    return folder


def video_cmd(inp: Path | str, out: Path | str, *extra: object) -> list[str]:
    return [sys.executable, "-m", "jobs", "video", "--input", str(inp), "--output", str(out), *TINY_VIDEO,
            *map(str, extra)]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without storage credentials/endpoints, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in STORAGE_ENV}
    return {**env, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", **(extra or {})}


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None, stderr: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session (process group), stdout (and stderr unless ``stderr``) to ``log``.
    ``env``: extra variables over ``clean_env()``."""
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    err = open(stderr, "ab") if stderr else subprocess.STDOUT  # noqa: SIM115
    return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, start_new_session=True, env=clean_env(env))


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 400) -> int:
    proc = start(cmd, log, env)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_tree(proc)


@contextlib.contextmanager
def local_cluster(tmp_path: Path, *args: object) -> Iterator[tuple[str, Path]]:
    """A local multi-node Ray cluster run by ``_cluster_script.py`` (``args``: its flags): yields (address,
    control folder) once the head is up; on exit asks the script to stop and kills it if it does not.
    The cluster gets no storage credentials: jobs must ship them (``storage.worker_env()`` runtime_env)."""
    control = tmp_path / "control"
    control.mkdir(parents=True)
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


# ----------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _ppids() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(int(entry))):
            out[int(entry)] = int(fields[1])
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


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _proc_stat(int(entry))) and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
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


def wait_until(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None,
               poll: float = 0.1) -> bool:
    """Poll ``predicate`` until true; False on timeout or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(predicate())
        time.sleep(poll)
    return False


def mid_job(out: Path | Output, proc: subprocess.Popen, ready: Callable[[], bool] = lambda: True,
            timeout: float = 300) -> bool:
    """Wait until the job is half-way: at least one part committed, no ``_SUCCESS``, ``proc`` still running
    (and ``ready()``). False when the job finished (or timed out) first: the caller retries with more inputs."""
    view = as_output(out)

    def half_way() -> bool:
        return bool(view.parts()) and ready() and not view.is_file("_SUCCESS") and proc.poll() is None

    return wait_until(half_way, timeout, proc, poll=0.05) and proc.poll() is None


def corpus_sizes(first: int) -> Iterator[int]:
    """Input counts for a test that must catch a job half-way: ``first``, then more each time the machine
    was too fast (the job finished before it could be interrupted). Never a skip."""
    yield from (first, first * 3, first * 9)


def log_tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""
