"""One filesystem layer for every path a user gives: local paths and URIs (``s3://``, ``gs://``, ``hdfs://``,
``abfs://``, ``file://``), resolved with ``pyarrow.fs`` (fsspec where pyarrow has no driver).

Nothing else in ``pipelines``/``jobs`` calls ``open()``/``os.path`` on a user path: it asks for a ``Location``
and uses the helpers here, so a job reads and writes ``s3://bucket/out`` exactly as it does ``out/``.

* ``resolve(text)`` -> ``Location(fs, path, uri)``. Local paths become absolute (``uri`` is the absolute path,
  which workers on other nodes use as is); a URI is never turned into a local path. An unknown scheme, or one
  whose filesystem is not installed, raises ``StorageError`` (one line, before any work).
* S3-compatible stores (MinIO, Ceph, R2, a test server) follow the AWS conventions: credentials from the
  usual chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / profiles / instance roles), the endpoint
  from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (``--s3-endpoint`` sets the latter), the region from
  ``AWS_REGION`` / ``AWS_DEFAULT_REGION``. ``worker_env()`` lists the variables Ray workers need.
* ``write_atomic(loc, data)``: a file appears whole or not at all. Local: a temporary created exclusively
  with an unpredictable name in the same folder (``mkstemp``), fsync, ``os.replace``. Object stores have no
  rename and an upload that fails half-way can still leave a truncated object (pyarrow completes a
  multipart upload when the stream is closed, even after an error): the bytes go to a staging key first
  and are then copied server-side to the final key (``fs.move``), so the final key only ever holds a
  complete object.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlparse

import pyarrow.fs as pafs

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az")
STAGING = "_meta/staging"
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
WORKER_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                   "AWS_DEFAULT_REGION", "AWS_PROFILE", *ENDPOINT_VARS, "GOOGLE_APPLICATION_CREDENTIALS",
                   "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY")


class StorageError(ValueError):
    """A path or URI that cannot be opened (unknown scheme, filesystem not installed, bad bucket)."""


class OutputWriteError(OSError):
    """Writing our own output failed (disk full, permission, store unreachable): never the input's fault."""


@dataclass(frozen=True)
class Location:
    """A file or folder on some filesystem. ``path`` is the filesystem's own path (``bucket/key`` for S3),
    ``uri`` what the user would type (and what is recorded in output rows and shipped to workers)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts) if not self.is_local else os.path.join(self.path, *parts)
        uri = local_uri(path) if self.is_local else _join_uri(self.uri, *parts)
        return Location(self.fs, path, uri)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def info(self) -> pafs.FileInfo:
        if self.is_local:  # os.stat: also names that are not valid UTF-8, which pyarrow cannot take
            try:
                st = os.stat(self.path)
            except (FileNotFoundError, NotADirectoryError):
                return pafs.FileInfo(self.uri, pafs.FileType.NotFound)
            kind = pafs.FileType.Directory if stat.S_ISDIR(st.st_mode) else pafs.FileType.File
            return pafs.FileInfo(self.uri, kind, size=st.st_size if kind == pafs.FileType.File else None)
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def read_bytes(self) -> bytes:
        if self.is_local:
            with open(self.path, "rb") as f:
                return f.read()
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def open_input(self):
        """A seekable binary file object (PyAV, PIL and pyarrow.parquet take it)."""
        if self.is_local:
            return open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        return self.fs.open_input_file(self.path)

    def mkdir(self) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def delete(self) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            pass


def _join_uri(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def scheme_of(text: str) -> str | None:
    """The URI scheme of ``text`` ("s3"), or None for a plain local path (Windows drive letters too)."""
    if "://" not in text:
        return None
    scheme = text.split("://", 1)[0].lower()
    return scheme if len(scheme) > 1 else None


def is_uri(text: str | os.PathLike) -> bool:
    return scheme_of(os.fspath(text)) not in (None, "file")


def s3_endpoint() -> str | None:
    return next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)


@lru_cache(maxsize=32)
def _remote_fs(scheme: str, netloc: str, endpoint: str | None, region: str | None) -> pafs.FileSystem:
    if scheme == "s3":
        kwargs: dict = {"region": region or "us-east-1"}
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs.update(endpoint_override=parsed.netloc or parsed.path, scheme=parsed.scheme or "https")
        return pafs.S3FileSystem(**kwargs)
    try:
        fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")
        return fs
    except Exception as arrow_error:  # noqa: BLE001 - fall back to fsspec (adlfs, gcsfs, ...)
        try:
            import fsspec

            return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
        except Exception as e:
            raise StorageError(f"cannot open {scheme}:// paths: {arrow_error}; and fsspec: {e}") from e


def resolve(text: str | os.PathLike) -> Location:
    """A ``Location`` for a local path or a URI (see the module docstring)."""
    text = os.fspath(text)
    scheme = scheme_of(text)
    if scheme is None or scheme == "file":
        if scheme == "file":  # percent-encoded bytes (``local_uri``) back to the OS's name
            local = os.fsdecode(unquote_to_bytes(text[len("file://"):]))
        else:
            local = text
        path = os.path.abspath(os.path.expanduser(local))
        return Location(pafs.LocalFileSystem(), path, local_uri(path))
    if scheme not in REMOTE_SCHEMES:
        raise StorageError(f"unsupported URI scheme {scheme!r} in {text!r} "
                           f"(supported: local paths, file://, {', '.join(s + '://' for s in REMOTE_SCHEMES)})")
    parsed = urlparse(text)
    if not parsed.netloc:
        raise StorageError(f"{text!r} has no bucket or host name")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    fs = _remote_fs("gs" if scheme == "gcs" else scheme, parsed.netloc, s3_endpoint() if scheme == "s3" else None,
                    region)
    path = (parsed.netloc + parsed.path).rstrip("/") if scheme in ("s3", "gs", "gcs") else parsed.path.rstrip("/")
    return Location(fs, path, text.rstrip("/"))


def local_uri(path: str) -> str:
    """How a local path is written down (manifests, output rows, workers): the path itself, or, for a name
    that is not valid UTF-8 (bytes 0xe9, 0xff of old Latin-1 archives, held by Python as surrogates), a
    ``file://`` URI with those bytes percent-encoded, which ``resolve`` turns back into the same file."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return "file://" + quote_from_bytes(os.fsencode(path), safe="/")


def worker_env() -> dict[str, str]:
    """The storage variables set in this process, for Ray workers (``runtime_env={"env_vars": ...}``)."""
    return {v: os.environ[v] for v in WORKER_ENV_VARS if os.environ.get(v)}


# ----------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class FileEntry:
    location: Location
    size: int

    @property
    def uri(self) -> str:
        return self.location.uri


def walk_files(root: Location, recursive: bool = True, follow_symlinks: bool = True) -> Iterator[FileEntry]:
    """Files under ``root`` in sorted path order, streamed (memory bounded by one folder's entries).

    Hidden names (``.x``) are skipped. Locally, symlinked folders are followed once per real folder (a loop
    is not walked twice) and a dangling symlink is yielded with size -1 (the reader then reports it
    ``not_found``)."""
    if root.is_local:
        yield from _walk_local(root, recursive, set(), follow_symlinks)
        return
    try:
        infos = root.fs.get_file_info(pafs.FileSelector(root.path, recursive=False))
    except FileNotFoundError:
        return
    for info in sorted(infos, key=lambda i: i.path):
        name = posixpath.basename(info.path)
        if name.startswith("."):
            continue
        child = Location(root.fs, info.path, _join_uri(root.uri, name))
        if info.type == pafs.FileType.File:
            yield FileEntry(child, info.size or 0)
        elif info.type == pafs.FileType.Directory and recursive:
            yield from walk_files(child, recursive, follow_symlinks)


def _walk_local(root: Location, recursive: bool, seen: set[tuple[int, int]], follow: bool) -> Iterator[FileEntry]:
    try:
        st = os.stat(root.path)
    except OSError:
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return
    seen.add(key)
    try:
        with os.scandir(root.path) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        child = Location(root.fs, entry.path, local_uri(entry.path))
        try:
            is_dir = entry.is_dir(follow_symlinks=follow)
            is_file = entry.is_file(follow_symlinks=True)
        except OSError:
            is_dir = is_file = False
        if is_file:
            yield FileEntry(child, entry.stat(follow_symlinks=True).st_size)
        elif is_dir:
            if recursive:
                yield from _walk_local(child, recursive, seen, follow)
        elif entry.is_symlink():  # dangling
            yield FileEntry(child, -1)


# ----------------------------------------------------------------------------- writing


def write_atomic(target: Location, data: bytes, staging_root: Location | None = None) -> None:
    """Make ``target`` hold exactly ``data`` in one visible step (see the module docstring).

    Local targets refuse to write through a symlink planted at the target or at any folder between
    ``staging_root`` (the output folder) and the target, so nothing planted in the output folder can
    redirect a write outside it. Raises ``OutputWriteError`` naming the target on any failure."""
    try:
        if target.is_local:
            _write_local(target.path, data, staging_root.path if staging_root is not None else None)
        else:
            staging = (staging_root or _parent(target)).join(STAGING, f"{uuid.uuid4().hex}.tmp")
            with target.fs.open_output_stream(staging.path) as out:
                out.write(data)
            target.fs.move(staging.path, target.path)
    except OutputWriteError:
        raise
    except OSError as e:
        raise OutputWriteError(f"cannot write {target.uri}: {_os_reason(e)}") from e


def _parent(loc: Location) -> Location:
    if loc.is_local:
        parent = os.path.dirname(loc.path)
        return Location(loc.fs, parent, parent)
    return Location(loc.fs, posixpath.dirname(loc.path), loc.uri.rsplit("/", 1)[0])


def _os_reason(e: OSError) -> str:
    import errno

    name = errno.errorcode.get(e.errno or 0)
    return f"{name} ({e.strerror})" if name and e.strerror else str(e)


def _refuse_symlink(path: str, target: str) -> None:
    if os.path.islink(path):
        raise OutputWriteError(f"cannot write {target}: {path} is a symlink; refusing to write through a "
                               "symlink in the output folder")


def _make_folders(root: str | None, folder: str, target: str) -> None:
    """Create ``folder``; below ``root`` one level at a time, refusing symlinks (``makedirs`` follows them)."""
    rel = os.path.relpath(folder, root) if root else None
    if rel is None or rel == os.curdir or rel.split(os.sep)[0] == os.pardir:
        os.makedirs(folder, exist_ok=True)  # not below the output root: only the folder itself is checked
        _refuse_symlink(folder, target)
        return
    os.makedirs(root, exist_ok=True)
    current = root
    for name in rel.split(os.sep):
        current = os.path.join(current, name)
        _refuse_symlink(current, target)
        try:
            os.mkdir(current)
        except FileExistsError:
            pass


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _write_local(path: str, data: bytes, root: str | None = None) -> None:
    folder = os.path.dirname(path)
    _make_folders(root, folder, path)
    _refuse_symlink(path, path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")  # O_EXCL, unpredictable name
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the modes open() would give
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def list_names(folder: Location) -> list[tuple[str, int]]:
    """(name, size) of the plain files directly in ``folder`` ([] when it does not exist)."""
    if folder.is_local:
        try:
            with os.scandir(folder.path) as it:
                return [(e.name, e.stat(follow_symlinks=False).st_size) for e in it
                        if stat.S_ISREG(e.stat(follow_symlinks=False).st_mode)]
        except FileNotFoundError:
            return []
    try:
        infos = folder.fs.get_file_info(pafs.FileSelector(folder.path, recursive=False, allow_not_found=True))
    except FileNotFoundError:
        return []
    return [(posixpath.basename(i.path), i.size or 0) for i in infos if i.type == pafs.FileType.File]


def check_writable(folder: Location) -> None:
    """Create ``folder`` and prove it is writable with a probe file (one line on failure)."""
    try:
        folder.mkdir()
        if folder.is_local and os.path.islink(folder.path):
            raise OutputWriteError(f"output folder {folder.uri} is a symlink; give its real path")
        probe = folder.join(STAGING, f"write-test-{uuid.uuid4().hex}")
        if folder.is_local:
            _make_folders(folder.path, os.path.dirname(probe.path), probe.path)
            with open(probe.path, "xb"):
                pass
            os.unlink(probe.path)
        else:
            with folder.fs.open_output_stream(probe.path) as out:
                out.write(b"")
            probe.delete()
    except OutputWriteError:
        raise
    except OSError as e:
        raise OutputWriteError(f"output folder {folder.uri} is not writable: {_os_reason(e)}") from e
