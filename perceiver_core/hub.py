"""Turn a ``from_pretrained`` argument into a local folder: a path as given, or a Hugging Face hub id.

Hub ids go through huggingface_hub, so its cache layout, ``HF_HUB_OFFLINE`` / ``local_files_only``,
``revision``, ``cache_dir`` and ``token`` behave as they do for transformers. We never write a download
or cache scheme of our own.
"""

from __future__ import annotations

import os
from pathlib import Path

# What a Perceiver checkpoint folder can hold; a snapshot download fetches only these.
CHECKPOINT_FILES = (
    "config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
    "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "preprocessor_config.json",
)


class HubResolutionError(OSError):
    """A hub id could not be resolved to a local folder (not cached while offline, unknown id, no network)."""


def resolve_pretrained(name_or_path: str | os.PathLike, *, revision: str | None = None,
                       cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                       token: str | bool | None = None, subfolder: str = "",
                       force_download: bool = False) -> Path:
    """Return the local folder for ``name_or_path``.

    An existing local folder is returned as is (``subfolder`` appended). Anything else that looks like a hub id
    (``name`` or ``owner/name``) is resolved through ``huggingface_hub.snapshot_download``, which serves it from
    the cache when offline. A missing local path that cannot be a hub id raises ``FileNotFoundError``.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not folder.is_dir():
            raise FileNotFoundError(f"{text}: no subfolder {subfolder!r}")
        return folder
    if not _could_be_hub_id(text):
        raise FileNotFoundError(f"{text}: no such checkpoint folder (and not a hub id of the form owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = [f"{subfolder}/{p}" if subfolder else p for p in CHECKPOINT_FILES]
    # huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE once, at import; read them per call instead
    local_files_only = local_files_only or _offline()
    if cache_dir is None and os.environ.get("HF_HUB_CACHE"):
        cache_dir = os.path.expanduser(os.environ["HF_HUB_CACHE"])
    try:
        folder = Path(snapshot_download(text, revision=revision, cache_dir=cache_dir, token=token,
                                        local_files_only=local_files_only, allow_patterns=patterns,
                                        force_download=force_download))
    except LocalEntryNotFoundError as err:
        raise HubResolutionError(
            f"{text}: not a local folder, and not in the Hugging Face cache"
            f"{' at ' + os.fspath(cache_dir) if cache_dir else ''} (offline or unreachable hub): {err}") from err
    except (HfHubHTTPError, ValueError) as err:
        raise HubResolutionError(f"{text}: could not resolve hub id: {err}") from err
    return folder / subfolder if subfolder else folder


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def is_hub_id(name_or_path: str | os.PathLike) -> bool:
    """True when ``name_or_path`` is no local folder but has the form of a hub id (``name`` / ``owner/name``)."""
    text = os.fspath(name_or_path)
    return not Path(text).exists() and _could_be_hub_id(text)


def _could_be_hub_id(text: str) -> bool:
    parts = text.split("/")
    if len(parts) > 2 or text.startswith((".", "/", "~")) or "\\" in text:
        return False
    return all(parts) and all(c.isalnum() or c in "-_." for part in parts for c in part)
