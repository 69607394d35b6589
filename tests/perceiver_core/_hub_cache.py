"""A Hugging Face hub cache built by the test itself (huggingface_hub's layout), so hub ids resolve offline."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def add_snapshot(cache_dir: Path, repo_id: str, folder: Path, *, ref: str | None = "main",
                 seed: str = "") -> str:
    """Copy the files of ``folder`` into ``cache_dir`` as a snapshot of model ``repo_id``; point ``ref`` at it.

    Returns the snapshot's commit hash (40 hex digits, derived from the repo id, the files and ``seed``).
    """
    digest = hashlib.sha1(repo_id.encode() + seed.encode())
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    commit = digest.hexdigest()
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        shutil.copy(path, snapshot / path.name)
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return commit
