"""Folders of a training run on any filesystem (local or object storage) through ``pipelines.storage``.

A run directory holds Ray Train's checkpoints, ``metrics.csv``, ``run.json`` and ``final/``. On a local disk
these are plain files; on object storage there is no rename and no append, so the helpers here give the
guarantees the training code relies on in both cases:

* ``put_file`` / ``upload_tree``: every file appears whole or not at all (local: temporary + ``os.replace``;
  object store: the bytes go to a staging key under ``<staging_root>/_meta/staging/`` and are moved to the
  final key server-side, as ``storage.write_atomic`` does). ``upload_tree`` writes the names in ``last``
  after everything else, so a reader that sees them knows the rest is complete.
* ``local_copy``: a local directory with a folder's files (the folder itself when it is local), for loaders
  that need paths (``from_pretrained``, ``torch.load``).
* ``copy_tree``: copies a folder across filesystems (server-side when both ends are the same object store).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow.fs as pafs

from pipelines import storage
from pipelines.storage import Location, OutputWriteError


def has_entries(folder: Location) -> bool:
    """True when ``folder`` exists and holds at least one file or folder."""
    try:
        infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=False, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return bool(infos)


def list_folders(folder: Location) -> list[str]:
    """Names of the sub-folders directly in ``folder`` (sorted; [] when it does not exist)."""
    try:
        infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=False, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos if i.type == pafs.FileType.Directory)


def file_names(folder: Location) -> set[str]:
    return {name for name, _ in storage.list_names(folder)}


def delete_tree(folder: Location) -> None:
    try:
        if folder.is_dir():
            folder.fs.delete_dir(folder.path)
    except FileNotFoundError:
        pass


def write_text(target: Location, text: str, staging_root: Location | None = None) -> None:
    storage.write_atomic(target, text.encode("utf-8"), staging_root)


def put_file(local_path: str | Path, target: Location, staging_root: Location | None = None) -> None:
    """Copy one local file to ``target`` so that it appears whole or not at all (streamed, not in memory)."""
    try:
        if target.is_local:
            folder = os.path.dirname(target.path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            os.close(fd)
            try:
                shutil.copyfile(local_path, tmp)
                os.chmod(tmp, 0o644)
                os.replace(tmp, target.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return
        root = staging_root if staging_root is not None else parent_of(target)
        staging = root.join(storage.STAGING, f"{uuid.uuid4().hex}.tmp")
        pafs.copy_files(str(local_path), staging.path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=target.fs)
        target.fs.move(staging.path, target.path)
    except OSError as e:
        raise OutputWriteError(f"cannot write {target.uri}: {e}") from e


def upload_tree(local_dir: str | Path, target: Location, staging_root: Location | None = None,
                last: Sequence[str] = ()) -> None:
    """Copy the files of a flat local directory into ``target`` (created), the names in ``last`` at the end."""
    names = sorted(p.name for p in Path(local_dir).iterdir() if p.is_file())
    ordered = [n for n in names if n not in last] + [n for n in last if n in names]
    if target.is_local:
        os.makedirs(target.path, exist_ok=True)
    for name in ordered:
        put_file(Path(local_dir) / name, target.join(name), staging_root)


@contextlib.contextmanager
def local_copy(folder: Location, names: Sequence[str] | None = None) -> Iterator[Path]:
    """A local directory holding ``folder``'s files (only ``names`` when given): the folder itself when local,
    else a temporary download removed on exit."""
    if folder.is_local:
        yield Path(folder.path)
        return
    with tempfile.TemporaryDirectory(prefix="perceiver-download-") as tmp:
        wanted = sorted(file_names(folder)) if names is None else list(names)
        for name in wanted:
            source = folder.join(name)
            if names is not None and not source.is_file():
                continue
            pafs.copy_files(source.path, os.path.join(tmp, name), source_filesystem=folder.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        yield Path(tmp)


def copy_tree(source: Location, target: Location, last: Sequence[str] = ()) -> None:
    """Copy the files of the flat folder ``source`` into ``target``, the names in ``last`` at the end.

    Same object store at both ends: server-side copies (each object appears whole). Otherwise the files go
    through a local copy and ``put_file``."""
    if not source.is_local and not target.is_local and type(source.fs) is type(target.fs):
        names = sorted(file_names(source))
        for name in [n for n in names if n not in last] + [n for n in last if n in names]:
            try:
                source.fs.copy_file(source.join(name).path, target.join(name).path)
            except OSError as e:
                raise OutputWriteError(f"cannot write {target.join(name).uri}: {e}") from e
        return
    with local_copy(source) as local:
        upload_tree(local, target, staging_root=target, last=last)


def parent_of(loc: Location) -> Location:
    if loc.is_local:
        parent = os.path.dirname(loc.path)
        return Location(loc.fs, parent, parent)
    return Location(loc.fs, posixpath.dirname(loc.path), loc.uri.rsplit("/", 1)[0])
