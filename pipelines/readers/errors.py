"""The one error type of the readers: an input that cannot be decoded, with a machine-readable reason.

Jobs turn it into an error row (``error_type`` = ``reason``, ``error`` = the text); training skips or fails
the input. Each reader lists its reasons (``video_decode.DECODE_ERROR_REASONS``, ``image_io.IMAGE_ERROR_REASONS``)
and raises its own subclass, so a caller can tell a broken video from a broken image.
"""

from __future__ import annotations


class InputDecodeError(Exception):
    """An input could not be decoded. ``reason`` is a short code; ``detail`` is free text."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)  # args survive pickling (Ray ships exceptions between processes)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class VideoDecodeError(InputDecodeError):
    """A video could not be decoded; ``reason`` is one of ``video_decode.DECODE_ERROR_REASONS``."""


class ImageDecodeError(InputDecodeError):
    """An image could not be decoded; ``reason`` is one of ``image_io.IMAGE_ERROR_REASONS``."""
