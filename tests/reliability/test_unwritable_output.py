"""A read-only or full output filesystem stops the job before any work with ONE line that names the folder
(and the errno where the system gives one), no traceback, exit 2 (refused up front) or 1 (a write failed).

The filesystems are real: a tmpfs mounted read-only, and a tmpfs filled to the last byte, each inside a
private mount namespace (``unshare -rm``: no privileges needed, nothing visible outside the test), because
permission bits do not stop root and these tests must hold for every user.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from _reliability_helpers import ROOT, clean_env, make_clips, video_cmd


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs unshare -rm (user + mount namespaces)")


def run_on_tmpfs(mount: str, setup: str, cmd: list[str]) -> subprocess.CompletedProcess:
    """``cmd`` in a private mount namespace where ``mount`` is a 64 KiB tmpfs, after the shell ``setup``."""
    script = f'mount -t tmpfs -o size=64k tmpfs "{mount}" && {setup} && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *cmd], cwd=ROOT, env=clean_env(),
                          capture_output=True, text=True, timeout=300, check=False)


def check_one_line(result: subprocess.CompletedProcess, codes: tuple[int, ...], *expected: str) -> str:
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode in codes, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    ours = [line for line in err if line.startswith("perceiver-jobs")]
    assert len(ours) == 1 and ours[0] == err[-1], err
    for text in expected:
        assert text in ours[0], ours[0]
    assert "Started a local Ray" not in result.stderr  # refused before paying for Ray
    return ours[0]


def test_read_only_output(tmp_path):
    inp = make_clips(tmp_path / "in", 1)
    mount = tmp_path / "ro"
    mount.mkdir()
    out = mount / "out"
    result = run_on_tmpfs(str(mount), f'mkdir "{out}" && mount -o remount,ro "{mount}"', video_cmd(inp, out))
    line = check_one_line(result, (1, 2), str(out), "not writable", "EROFS")
    assert line.startswith("perceiver-jobs video: error: ")


def test_full_disk(tmp_path):
    inp = make_clips(tmp_path / "in", 1)
    mount = tmp_path / "full"
    mount.mkdir()
    out = mount / "out"
    fill = f'(dd if=/dev/zero of="{mount}/fill" bs=4k 2>/dev/null || true)'
    result = run_on_tmpfs(str(mount), fill, video_cmd(inp, out))
    line = check_one_line(result, (1,), str(out), "ENOSPC", "stay pending")
    assert line.startswith("perceiver-jobs video: error: cannot write ")
