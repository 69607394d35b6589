"""Finding a job's inputs on any filesystem, streamed: the rows of the manifest, one per input file.

``iter_files(inputs, extensions)`` walks each ``--input`` (a folder, searched recursively; a glob such as
``"data/**/*.mp4"`` or ``"s3://b/videos/*.mp4"``; a single file) through ``pipelines.storage`` and yields
``Found(entry, relpath, root_index)`` in a fixed order (inputs in the order given, paths sorted within
each), holding one folder's entries at a time, never the whole listing.

Ids (``file_id``): ``sha1(relpath)[:24]``, the path relative to the input root ("/"-separated, NFC), so ids
do not depend on where a corpus is mounted. With several ``--input`` roots the root's position is part of
the id (``"<k>:<relpath>"``): two roots holding ``cam.mp4`` give two inputs, never a clash. Names that are
not valid UTF-8 are kept byte for byte in the path and escaped (``\\xe9``) in ids and displays. Hidden
names (``.x``) are skipped, and the output folder never counts as input.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import posixpath
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines import storage

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp", ".ogv"}
)
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
TEXT_EXTENSIONS = frozenset({".txt", ".text", ".jsonl", ".parquet"})


def normalize_relpath(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """`path` relative to `root`, "/"-separated, NFC-normalised (the string ids are made from)."""
    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()
    return unicodedata.normalize("NFC", rel)


def stable_id(relpath: str, index: int | None = None) -> str:
    """24 hex chars of sha1(relpath) or sha1(f"{relpath}#{index}")."""
    key = relpath if index is None else f"{relpath}#{index}"
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]



@dataclass(frozen=True)
class Found:
    entry: storage.FileEntry
    relpath: str
    root_index: int
    root_count: int
    id_key: str | None = None  # the relpath the id is made from when it is not ``relpath`` (NFC twins)

    @property
    def id(self) -> str:
        return file_id(self.id_key or self.relpath, self.root_index, self.root_count)

    @property
    def uri(self) -> str:
        return self.entry.uri


def file_id(relpath: str, root_index: int = 0, root_count: int = 1, index: int | None = None) -> str:
    key = relpath if root_count == 1 else f"{root_index}:{relpath}"
    return stable_id(key, index)


def display(text: str) -> str:
    """``text`` safe for Arrow/JSON: undecodable bytes of a file name (surrogates) become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _rel(path: str, root: str, local: bool) -> str:
    rel = os.path.relpath(path, root) if local else posixpath.relpath(path, root)
    rel = rel.replace(os.sep, "/") if local else rel
    return unicodedata.normalize("NFC", display(rel))


def _nfc_twin_key(entry: storage.FileEntry, relpath: str, root: str) -> str | None:
    """For a local name that is not in NFC while a different file with its NFC name sits beside it (two
    files whose names differ only in Unicode normalisation): the unnormalised relpath, so the two get two
    ids. None otherwise (ids stay NFC, the same on macOS and Linux)."""
    path = entry.location.path
    name = os.path.basename(path)
    shown = display(name)
    normal = unicodedata.normalize("NFC", shown)
    if shown == normal or not entry.location.is_local:
        return None
    twin = os.path.join(os.path.dirname(path), normal)
    try:
        if os.path.lexists(twin) and not os.path.samefile(twin, path):
            return display(os.path.relpath(path, root)).replace(os.sep, "/")
    except OSError:
        return None
    return None


def _glob_split(text: str) -> tuple[str, str]:
    """("root", "pattern below it") of a glob; the root is the part before the first wildcard."""
    head, parts = text, []
    while glob.has_magic(head):
        head, tail = head.rsplit("/", 1) if "/" in head else ("", head)
        parts.insert(0, tail)
    return head or ".", "/".join(parts)


def _glob_regex(pattern: str) -> re.Pattern:
    # "**/" matches any number of folders (also none), "*" and "?" stay inside one name.
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            c = pattern[i]
            out += "[^/]*" if c == "*" else "[^/]" if c == "?" else fnmatch.translate(c)[4:-3] if c == "[" \
                else re.escape(c)
            i += 1
    return re.compile(out + r"\Z")


def _inside(path: str, folder: str | None) -> bool:
    return folder is not None and (path == folder or path.startswith(folder.rstrip("/") + "/"))


def iter_files(inputs: Sequence[str], extensions: frozenset[str] | None, *, recursive: bool = True,
               exclude: str | None = None) -> Iterator[Found]:
    """See the module docstring. ``exclude``: a folder (the job's output) whose files are never inputs.

    Raises FileNotFoundError for an input that does not exist, ValueError("no inputs found ...") when the
    inputs hold no matching file, ``storage.StorageError`` for a scheme that cannot be opened."""
    if not inputs:
        raise ValueError("no inputs given")
    excluded = storage.resolve(exclude).path if exclude else None
    seen: set[str] | None = set() if len(inputs) > 1 else None  # one input never yields a file twice
    count = 0

    def keep(entry: storage.FileEntry) -> bool:
        if _inside(entry.location.path, excluded):
            return False
        return extensions is None or posixpath.splitext(entry.location.path)[1].lower() in extensions

    for index, item in enumerate(inputs):
        text = os.fspath(item)
        if glob.has_magic(text.split("://", 1)[-1]):
            root_text, pattern = _glob_split(text)
            root = storage.resolve(root_text)
            if not root.is_dir():
                raise FileNotFoundError(f"input folder does not exist: {root.uri} (from pattern {text!r})")
            regex = _glob_regex(pattern)
            deep = "**" in pattern or "/" in pattern
            found = (e for e in storage.walk_files(root, recursive=deep)
                     if regex.match(_rel(e.location.path, root.path, root.is_local)) and keep(e))
        else:
            loc = storage.resolve(text)
            info = loc.info()
            if info.type == storage.pafs.FileType.Directory:
                root = loc
                found = (e for e in storage.walk_files(loc, recursive=recursive) if keep(e))
            elif info.type == storage.pafs.FileType.File or (loc.is_local and os.path.islink(loc.path)):
                parent = storage._parent(loc)
                root = parent
                found = iter([storage.FileEntry(loc, info.size if info.size is not None else -1)])
            else:
                raise FileNotFoundError(f"input path does not exist: {loc.uri}")
        for entry in found:
            if seen is not None:
                key = os.path.realpath(entry.location.path) if entry.location.is_local else entry.uri
                if key in seen:
                    continue
                seen.add(key)
            count += 1
            rel = _rel(entry.location.path, root.path, root.is_local)
            yield Found(entry, rel, index, len(inputs), _nfc_twin_key(entry, rel, root.path))
    if count == 0:
        exts = "any" if extensions is None else " ".join(sorted(extensions))
        raise ValueError(f"no inputs found under {', '.join(map(os.fspath, inputs))} (extensions: {exts})")
