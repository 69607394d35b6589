"""Shared by the compat tests: call transformers and ours the same way and compare what happened."""

from __future__ import annotations


def outcome(fn):
    """(kind, value) of a call: ("ok", the returned value) or ("error", the exception class)."""
    try:
        return "ok", fn()
    except Exception as err:  # noqa: BLE001 - the kind of error is what we compare
        return "error", type(err)
