"""Decode one video file into fixed-shape audio-visual clips with PyAV.

The Ray video stages call these functions once per input row; nothing here imports Ray.

Data flow for one file::

    av.open -> pick streams by index -> demux video (+ audio) packets -> decode (threaded)
      video: timestamps -> resample in time to `target_fps` (sample-and-hold) -> resize + crop
      audio: av.AudioResampler -> mono float32 at `audio_rate`
    -> group T output frames into a clip -> attach the audio samples of the clip's time span

Shape contract of every `Clip` (T = num_frames, H x W = height x width, S = audio_samples_per_frame):

    frames: uint8   (T, H, W, 3)  RGB
    audio:  float32 (T * S,)      mono, in [-1, 1], at `ClipSpec.resolved_audio_rate` Hz

Resizing happens in FFmpeg's swscale (`FrameResizer`): the shorter side is scaled to the target
(aspect kept, sample aspect ratio ignored) with bilinear filtering in the frame's own pixel format,
the small frame is converted to RGB, and an H x W centre crop is taken with numpy. Only decoded
frames that the time grid actually uses are converted.

Orientation: frames are turned upright as a player shows them, from the display matrix FFmpeg attaches
to each decoded frame (the MP4/MOV track matrix phones write for portrait video, read through PyAV's
`VideoFrame.side_data`; the legacy `rotate` stream tag when a frame has none), just as the images job
applies EXIF orientation. Rotations by multiples of 90 degrees and mirroring are applied (the eight
EXIF-like orientations); any other angle is ignored. H x W is the shape of the upright clip.

Time resampling: output frame i has time t_i = t_0 + i / target_fps (t_0 = first frame's timestamp)
and shows the last decoded frame whose timestamp is <= t_i, as a player would. The last frame is
shown for one source frame period; a timestamp gap repeats the held frame across it, but for at most
`MAX_GAP_FRAMES` output frames: the grid then jumps to the next frame's time (clip start times stay
true stream times) and the clip spanning the jump carries a `warning`. Frame indices are never
computed from the container duration (some files have none).

Bounded work: a tiny file must not turn into unbounded output (two frames ten hours apart would
otherwise be 900,000 repeated frames). Besides `MAX_GAP_FRAMES`, one input never yields more than
`MAX_CLIPS_PER_VIDEO` clips, whatever `ClipSpec.max_clips` says; the clip that reaches the limit
carries a `warning` when the video goes on.

Damaged files: decoding stops at the first decoder error or at the first packet the demuxer flags
as corrupt (a file cut short: threaded FFmpeg decoders swallow that error, and an AVI cut short
yields a half-decoded last frame without any error). The clips before it are kept; see `Clip`.
"""

from __future__ import annotations

import io
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipelines import storage

MODEL_FPS = 25.0  # frame rate of the Perceiver IO multimodal autoencoder (16 frames = 0.64 s)
_EPS_S = 1e-6  # tolerance for comparing timestamps in seconds
AUDIO_WAIT_S = 10.0  # release a clip without its audio once the video is this far ahead
#: Output frames one held frame may fill on the time grid: 10 s at 25 fps. Not one clip's worth, which
#: would already cut a 1 fps slideshow; a static screen recording (variable frame rate) longer than
#: this is shortened, and flagged.
MAX_GAP_FRAMES = 250
#: Hard limit on the clips of one input, even with `ClipSpec.max_clips=None` (`--clips-per-video 0`):
#: 10,000 clips are 6,400 s of video at 25 fps, and 15 GB of frames at 224 x 224.
MAX_CLIPS_PER_VIDEO = 10_000

#: Stable `VideoDecodeError.reason` codes, for error records and run summaries.
DECODE_ERROR_REASONS = (
    "not_found",  # path does not exist or is not a file
    "empty_file",  # 0 bytes
    "open_failed",  # FFmpeg could not open / probe the container
    "no_video_stream",  # the container has no video stream
    "stream_missing",  # the requested video or audio stream index does not exist
    "no_frames",  # the video stream yielded no decodable frame
    "decode_error",  # decoding failed (used by callers that cannot return partial output)
)


class VideoDecodeError(Exception):
    """A video could not be decoded. `reason` is one of `DECODE_ERROR_REASONS`; `detail` is free text."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)  # args survive pickling (Ray ships exceptions between processes)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass(frozen=True)
class ClipSpec:
    """How to cut one video into clips.

    num_frames, height, width: clip shape T x H x W.
    audio_samples_per_frame: S, audio samples per output frame; a clip carries T * S samples.
    audio_rate: output sample rate in Hz; None -> round((target_fps or 25) * S), i.e. 48 kHz for the
        defaults, so that S samples span exactly one output frame.
    clip_stride_frames: output frames between clip starts; None -> num_frames (no overlap).
    max_clips: stop decoding after this many clips (None = whole video, up to `MAX_CLIPS_PER_VIDEO`).
    video_stream / audio_stream: index among the container's streams *of that type*
        (`container.streams.video[i]`), not the global stream index. audio_stream=None ignores audio;
        a file with no audio stream at all gives silent clips with has_audio=False.
    target_fps: resample frames in time to this rate; None = use every decoded frame.
    pad_tail: also emit the incomplete last clip at the natural end of the video (padded by
        repeating the last frame, `partial=True`). After a decoder error the incomplete clip is
        always emitted, and so is the only clip of a video shorter than one clip.
    decode_threads: FFmpeg decoder threads (thread_type="AUTO"); 0 = FFmpeg's choice (all cores).
        Set it to the Ray task's num_cpus so decoders do not oversubscribe the node.
    """

    num_frames: int = 16
    height: int = 224
    width: int = 224
    audio_samples_per_frame: int = 1920
    audio_rate: int | None = None
    clip_stride_frames: int | None = None
    max_clips: int | None = None
    video_stream: int = 0
    audio_stream: int | None = 0
    target_fps: float | None = MODEL_FPS
    pad_tail: bool = False
    decode_threads: int = 0

    def __post_init__(self) -> None:
        for name in ("num_frames", "height", "width", "audio_samples_per_frame"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ClipSpec.{name} must be > 0, got {getattr(self, name)}")
        for name in ("audio_rate", "clip_stride_frames", "max_clips", "target_fps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"ClipSpec.{name} must be > 0 or None, got {value}")
        if self.video_stream < 0 or (self.audio_stream is not None and self.audio_stream < 0):
            raise ValueError("ClipSpec stream indices must be >= 0")
        if self.decode_threads < 0:
            raise ValueError("ClipSpec.decode_threads must be >= 0")

    @property
    def stride(self) -> int:
        return self.clip_stride_frames or self.num_frames

    @property
    def resolved_audio_rate(self) -> int:
        if self.audio_rate is not None:
            return self.audio_rate
        return round((self.target_fps or MODEL_FPS) * self.audio_samples_per_frame)

    @property
    def audio_samples_per_clip(self) -> int:
        return self.num_frames * self.audio_samples_per_frame


@dataclass
class Clip:
    """One fixed-shape clip. frames (T, H, W, 3) uint8; audio (T * S,) float32 mono in [-1, 1].

    start_time_s: timestamp of the clip's first output frame (stream time, seconds); the audio
        starts at the same time.
    partial: the clip holds fewer than T real frames (num_valid_frames) and was padded by repeating
        the last real frame.
    error: set on the last clip of a file whose decoding stopped early (decoder error or corrupt
        packet, e.g. a truncated file); that clip is usually `partial`, the ones before it are
        complete and correct.
    has_audio: the chosen audio stream exists and had produced samples when the clip was emitted
        (else `audio` is silence); audio missing for part of the clip's span is zero-filled.
    warning: the clip is complete but not a faithful copy of the video's time line: frames of a
        timestamp gap were not synthesised (`MAX_GAP_FRAMES`), or the clip is the last one allowed
        (`MAX_CLIPS_PER_VIDEO`) and the video goes on. Several reasons are joined with "; ".
    """

    clip_index: int
    start_time_s: float
    frames: np.ndarray
    audio: np.ndarray
    has_audio: bool
    partial: bool = False
    num_valid_frames: int = 0
    error: str | None = None
    warning: str | None = None

    def add_warning(self, text: str) -> None:
        self.warning = text if not self.warning else f"{self.warning}; {text}"


VideoSource = str | os.PathLike | bytes


def open_video(source: VideoSource) -> av.container.InputContainer:
    """Open a path or an in-memory file with PyAV; raise `VideoDecodeError` instead of FFmpeg errors."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoDecodeError("empty_file", "<bytes>: 0 bytes")
        target: Any = io.BytesIO(bytes(source))
        name = "<bytes>"
    elif isinstance(source, str) and source.startswith("file://"):  # a local name that is not valid UTF-8
        path = storage.resolve(source).path
        if not os.path.isfile(path):
            raise VideoDecodeError("not_found", source)
        if os.path.getsize(path) == 0:
            raise VideoDecodeError("empty_file", f"{source}: 0 bytes")
        target, name = open(path, "rb"), source  # noqa: SIM115 - PyAV takes the file object
    elif storage.is_uri(source):  # object storage: a seekable stream through the filesystem layer
        name = str(source)
        try:
            loc = storage.resolve(name)
            info = loc.info()
        except storage.StorageError as e:
            raise VideoDecodeError("not_found", f"{name}: {e}") from e
        if info.type != storage.pafs.FileType.File:
            raise VideoDecodeError("not_found", name)
        if not info.size:
            raise VideoDecodeError("empty_file", f"{name}: 0 bytes")
        target = loc.open_input()
    else:
        path = Path(source)
        if not path.is_file():
            raise VideoDecodeError("not_found", str(path))
        if path.stat().st_size == 0:
            raise VideoDecodeError("empty_file", f"{path}: 0 bytes")
        target, name = str(path), str(path)
    try:
        return av.open(target, mode="r", metadata_errors="ignore")
    except Exception as e:  # FFmpeg raises many types here (InvalidDataError, OSError, ...)
        raise VideoDecodeError("open_failed", f"{name}: {type(e).__name__}: {e}") from e


def select_streams(
    container: av.container.InputContainer, video_stream: int, audio_stream: int | None
) -> tuple[av.video.stream.VideoStream, av.audio.stream.AudioStream | None]:
    """Pick streams by index among streams of their type; None audio when absent or not wanted."""
    videos = container.streams.video
    if len(videos) == 0:
        raise VideoDecodeError("no_video_stream", "container has no video stream")
    if video_stream >= len(videos):
        raise VideoDecodeError("stream_missing", f"video stream {video_stream} requested, file has {len(videos)}")
    audios = container.streams.audio
    if audio_stream is None or len(audios) == 0:
        return videos[video_stream], None
    if audio_stream >= len(audios):
        raise VideoDecodeError("stream_missing", f"audio stream {audio_stream} requested, file has {len(audios)}")
    return videos[video_stream], audios[audio_stream]


def resize_geometry(src_h: int, src_w: int, dst_h: int, dst_w: int) -> tuple[int, int, int, int]:
    """Scaled size (h, w) covering dst with aspect kept, and the centre-crop offsets (top, left)."""
    scale = max(dst_h / src_h, dst_w / src_w)
    h, w = max(dst_h, round(src_h * scale)), max(dst_w, round(src_w * scale))
    return h, w, (h - dst_h) // 2, (w - dst_w) // 2


_Orientation = tuple[bool, bool, bool]  # (transpose, flip left-right, flip up-down), applied in that order


def display_orientation(frame: av.VideoFrame, rotate_tag: str | None = None) -> _Orientation:
    """How to turn a decoded frame upright, from its display matrix (else the legacy `rotate` tag).

    FFmpeg's matrix [[a, b], [c, d]] maps a stored pixel (x, y) (image coordinates, y down) to the
    displayed (a x + c y, b x + d y); e.g. PyAV's `set_display_rotation(90)` (counter-clockwise) is
    [[0, -1], [1, 0]]. Identity for no matrix and for angles that are not multiples of 90 degrees.
    """
    matrix = None
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            matrix = np.frombuffer(bytes(data), np.int32)
            break
    if matrix is None:
        if not rotate_tag:
            return (False, False, False)
        try:  # the tag is a clockwise angle: rotate 90 = [[0, 1], [-1, 0]]
            quarter = round(float(rotate_tag) / 90) % 4
        except ValueError:
            return (False, False, False)
        a, b, c, d = [(1, 0, 0, 1), (0, 1, -1, 0), (-1, 0, 0, -1), (0, -1, 1, 0)][quarter]
    else:  # 16.16 fixed point; only the signs of clear entries matter (scaling is irrelevant here)
        a, b, c, d = (_sign(float(matrix[i]) / 65536) for i in (0, 1, 3, 4))
    if b == c == 0 and a and d:  # x' = a x, y' = d y
        return (False, a < 0, d < 0)
    if a == d == 0 and b and c:  # x' = c y, y' = b x: transpose, then flip
        return (True, c < 0, b < 0)
    return (False, False, False)


def _sign(v: float) -> int:
    return 0 if abs(v) < 1e-3 else (1 if v > 0 else -1)


def orient(rgb: np.ndarray, orientation: _Orientation) -> np.ndarray:
    """Apply `display_orientation`'s result to an (H, W, 3) array (a view when nothing is to be done)."""
    transpose, flip_lr, flip_ud = orientation
    if transpose:
        rgb = rgb.transpose(1, 0, 2)
    if flip_lr:
        rgb = rgb[:, ::-1]
    if flip_ud:
        rgb = rgb[::-1]
    return np.ascontiguousarray(rgb) if any(orientation) else rgb


class FrameResizer:
    """VideoFrame -> (H, W, 3) uint8 RGB, upright: resize the shorter side to cover H x W, centre crop.

    The frame is scaled in its own pixel format (swscale bilinear, antialiased when shrinking) and
    only the small frame is converted to RGB: ~2x faster on 4:2:0 sources than converting the
    full-size frame first, and within ~1 grey level of full-size RGB + torchvision's antialiased
    bilinear resize. The swscale contexts are reused across frames of one video. A frame displayed
    turned by 90 degrees (portrait phone video) is cropped to W x H and then turned upright.
    """

    def __init__(self, height: int, width: int, rotate_tag: str | None = None) -> None:
        self.height, self.width = height, width
        self.rotate_tag = rotate_tag
        self._scale, self._to_rgb = VideoReformatter(), VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        orientation = display_orientation(frame, self.rotate_tag)
        out_h, out_w = (self.width, self.height) if orientation[0] else (self.height, self.width)
        h, w, top, left = resize_geometry(frame.height, frame.width, out_h, out_w)
        small = self._scale.reformat(frame, width=w, height=h, interpolation="BILINEAR")
        rgb = self._to_rgb.reformat(small, format="rgb24").to_ndarray()  # (h, w, 3)
        return orient(rgb[top : top + out_h, left : left + out_w], orientation)


def frame_to_rgb(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    """One frame through a fresh `FrameResizer` (use a shared one for many frames); upright."""
    return FrameResizer(height, width)(frame)


def _frame_period_s(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(1 / rate) if rate else None


class _AudioBuffer:
    """Mono float32 samples at a fixed rate, addressed by stream time; old samples are dropped."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.t0: float | None = None  # time of global sample 0
        self.offset = 0  # global index of the first kept sample
        self.chunks: list[np.ndarray] = []
        self.size = 0  # kept samples
        self.ended = False

    def push(self, samples: np.ndarray, time_s: float | None) -> None:
        if self.t0 is None:
            self.t0 = time_s or 0.0
        self.chunks.append(samples)
        self.size += samples.size

    def _data(self) -> np.ndarray:
        if len(self.chunks) != 1:
            self.chunks = [np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)]
        return self.chunks[0]

    def _index(self, t: float) -> int:
        return round((t - (self.t0 or 0.0)) * self.rate)

    def covers(self, t_start: float, n: int) -> bool:
        return self.ended or (self.t0 is not None and self._index(t_start) + n <= self.offset + self.size)

    def take(self, t_start: float, n: int) -> np.ndarray:
        """(n,) samples from time t_start; zeros where there is no audio."""
        out = np.zeros(n, np.float32)
        if self.t0 is None:
            return out
        data = self._data()
        lo = self._index(t_start) - self.offset  # may be < 0 when audio starts after the video
        src_lo, src_hi = max(lo, 0), min(lo + n, data.size)
        if src_hi > src_lo:
            out[src_lo - lo : src_hi - lo] = data[src_lo:src_hi]
        return out

    def drop_before(self, t: float) -> None:
        if self.t0 is not None:
            data = self._data()
            k = min(max(self._index(t) - self.offset, 0), data.size)
            self.chunks, self.offset, self.size = [data[k:]], self.offset + k, data.size - k


def _grid_end(t0: float, fps: float, start: int, t_next: float) -> int:
    """First grid index >= start whose time t0 + i / fps is not before t_next (within _EPS_S).

    Closed form, then corrected with the exact comparison, so a gap of hours costs O(1), not a loop
    over its grid slots.
    """
    limit = t_next - _EPS_S
    if not math.isfinite(limit - t0):
        return start
    end = max(start, math.ceil((limit - t0) * fps))
    while end > start and t0 + (end - 1) / fps >= limit:
        end -= 1
    while t0 + end / fps < limit:
        end += 1
    return end


def _gap_text(gap_s: float, skipped: int) -> str:
    seconds = f"{gap_s:.3f}".rstrip("0").rstrip(".")
    return f"timestamp gap of {seconds} s: {skipped} frames not synthesised (MAX_GAP_FRAMES={MAX_GAP_FRAMES})"


class _ClipAssembler:
    """Turns a stream of (decoded frame, timestamp) into clips; owns the time grid and the window."""

    def __init__(self, spec: ClipSpec, period_s: float | None, rotate_tag: str | None = None) -> None:
        self.spec = spec
        self.period_s = period_s
        # The hard limit holds even when max_clips asks for more; it warns (see _emit), max_clips does not.
        self.limit = min(spec.max_clips or MAX_CLIPS_PER_VIDEO, MAX_CLIPS_PER_VIDEO)
        self.hard_limit = spec.max_clips is None or spec.max_clips > MAX_CLIPS_PER_VIDEO
        self.overflow = False  # a frame arrived after the hard limit was reached
        self.pending_warning: str | None = None  # for the next clip made
        self.window: deque[tuple[float, np.ndarray]] = deque()  # (time, (H, W, 3)) output frames
        self.new_in_window = 0  # output frames not yet part of any clip
        self.skip = 0  # output frames to drop (stride > num_frames)
        self.clips_made = 0
        self.ready: deque[Clip] = deque()  # clips waiting for audio / for the next clip
        self.frames_decoded = 0
        self.t0: float | None = None
        self.next_grid = 0
        self.prev: tuple[float, av.VideoFrame] | None = None
        self.last_delta: float | None = None
        self._cache: tuple[av.VideoFrame, np.ndarray] | None = None  # last converted frame
        self._resize = FrameResizer(spec.height, spec.width, rotate_tag)

    @property
    def at_limit(self) -> bool:
        return self.clips_made >= self.limit

    @property
    def full(self) -> bool:
        """No more frames are wanted. At the hard limit, only once one more frame proved the video goes on."""
        return self.at_limit and (self.overflow or not self.hard_limit)

    def add_frame(self, frame: av.VideoFrame, time_base: Fraction) -> None:
        # Frames drained from a decoder (decode(None)) carry pts but time=nan in PyAV.
        t = float(frame.pts * time_base) if frame.pts is not None else None
        if t is None or not math.isfinite(t):  # no timestamp: continue from the previous one
            t = 0.0 if self.prev is None else self.prev[0] + (self.last_delta or self.period_s or 0.04)
        self.frames_decoded += 1
        if self.spec.target_fps is None:
            self._emit(t, frame)
        elif self.prev is None:
            self.t0 = t
        else:
            self.last_delta = t - self.prev[0] if t > self.prev[0] else self.last_delta
            self._fill_grid_until(t)
        self.prev = (t, frame)

    def finish(self, error: str | None) -> None:
        """Flush the time grid and the incomplete last clip; mark the last clip with `error`."""
        if self.spec.target_fps is not None and self.prev is not None:
            period = self.period_s or self.last_delta or 1 / self.spec.target_fps
            self._fill_grid_until(self.prev[0] + period)
        tail_allowed = error is not None or self.spec.pad_tail or self.clips_made == 0
        if self.new_in_window > 0 and tail_allowed and not self.at_limit:
            self._make_clip(partial=True)
        if self.ready:
            if self.pending_warning is not None:  # a gap after the last clip's frames
                self.ready[-1].add_warning(self.pending_warning)
                self.pending_warning = None
            if error is not None:
                self.ready[-1].error = error

    def _fill_grid_until(self, t_next: float) -> None:
        """Emit the held frame for every grid time before `t_next` (it is on screen until then).

        At most MAX_GAP_FRAMES of them: the rest of a longer gap is skipped and the next clip warned.
        """
        assert self.prev is not None and self.t0 is not None and self.spec.target_fps is not None
        fps = self.spec.target_fps
        end = _grid_end(self.t0, fps, self.next_grid, t_next)
        keep = min(end - self.next_grid, MAX_GAP_FRAMES)
        stop = self.next_grid + keep
        while self.next_grid < stop and not self.full:
            self._emit(self.t0 + self.next_grid / fps, self.prev[1])
            self.next_grid += 1
        if end > self.next_grid and not self.full:
            skipped, self.next_grid = end - self.next_grid, end
            self._warn_next(_gap_text(t_next - self.prev[0], skipped))

    def _warn_next(self, text: str) -> None:
        self.pending_warning = text if self.pending_warning is None else f"{self.pending_warning}; {text}"

    def _emit(self, t: float, frame: av.VideoFrame) -> None:
        if self.at_limit:
            if self.hard_limit and not self.overflow and self.ready:
                # The video goes on past the limit: say so on the last clip (still held back in `ready`).
                self.ready[-1].add_warning(f"MAX_CLIPS_PER_VIDEO={MAX_CLIPS_PER_VIDEO} clips reached: "
                                           f"the rest of the video (from {t:.3f} s) is not decoded")
            self.overflow = True
            return
        if self.skip > 0:
            self.skip -= 1
            return
        if self._cache is None or self._cache[0] is not frame:
            self._cache = (frame, self._resize(frame))
        self.window.append((t, self._cache[1]))
        self.new_in_window += 1
        if len(self.window) == self.spec.num_frames:
            self._make_clip(partial=False)

    def _make_clip(self, partial: bool) -> None:
        spec = self.spec
        frames = [f for _, f in self.window]
        n_valid = len(frames)
        frames += [frames[-1]] * (spec.num_frames - n_valid)
        self.ready.append(
            Clip(
                clip_index=self.clips_made,
                start_time_s=self.window[0][0],
                frames=np.stack(frames),  # (T, H, W, 3)
                audio=np.zeros(0, np.float32),  # filled when the audio span is decoded
                has_audio=False,
                partial=partial,
                num_valid_frames=n_valid,
                warning=self.pending_warning,
            )
        )
        self.pending_warning = None
        self.clips_made += 1
        self.new_in_window = 0
        for _ in range(min(spec.stride, len(self.window))):
            self.window.popleft()
        self.skip = max(spec.stride - spec.num_frames, 0)

    def earliest_needed_time(self) -> float | None:
        if self.ready:
            return self.ready[0].start_time_s
        return self.window[0][0] if self.window else None


def iter_clips(source: VideoSource, spec: ClipSpec = ClipSpec()) -> Iterator[Clip]:
    """Yield the clips of one video in order, holding at most ~2 clips of frames in memory.

    Raises `VideoDecodeError` (on first iteration) when the file cannot be opened, lacks the
    requested streams, or yields no frame. A decoder error after some frames is not raised: the
    clips decoded so far are yielded, the incomplete last one padded (`partial=True`), and the last
    clip carries `error`. Decoding stops as soon as `spec.max_clips` clips are complete.
    """
    container = open_video(source)
    try:
        vstream, astream = select_streams(container, spec.video_stream, spec.audio_stream)
        vstream.thread_type = "AUTO"
        vstream.thread_count = spec.decode_threads
        assembler = _ClipAssembler(spec, _frame_period_s(vstream), vstream.metadata.get("rotate"))
        audio = _AudioBuffer(spec.resolved_audio_rate)
        audio.ended = astream is None
        resampler = None if astream is None else av.AudioResampler("flt", "mono", spec.resolved_audio_rate)
        has_audio = False

        def push_audio(frames: list[av.AudioFrame], time_s: float | None) -> None:
            nonlocal has_audio
            for out in frames:
                samples = out.to_ndarray().reshape(-1)  # packed flt mono: (1, n) -> (n,)
                if samples.size:
                    audio.push(samples, time_s)
                    has_audio = True

        def decode_audio(packet: av.Packet) -> None:
            try:
                for frame in packet.decode():
                    push_audio(resampler.resample(frame), frame.time)
                if packet.size == 0:  # flush packet: the audio stream is over
                    push_audio(resampler.resample(None), None)
                    audio.ended = True
            except (av.FFmpegError, ValueError):  # a bad audio packet ends the audio, not the video
                audio.ended = True

        video_time = -math.inf  # latest video packet time seen by the demuxer
        n_audio = spec.audio_samples_per_clip

        def releasable(clip: Clip) -> bool:
            # Audio that stops early (or is badly interleaved) must not make us hold every clip.
            clip_end = clip.start_time_s + n_audio / audio.rate
            return audio.covers(clip.start_time_s, n_audio) or video_time > clip_end + AUDIO_WAIT_S

        def ready_clips(final: bool) -> Iterator[Clip]:
            # Keep the newest clip back until the next one exists, so that a later decoder error
            # can still be written on the file's last clip.
            while assembler.ready and (final or len(assembler.ready) > 1):
                clip = assembler.ready[0]
                if not final and not releasable(clip):
                    return
                assembler.ready.popleft()
                clip.audio = np.clip(audio.take(clip.start_time_s, n_audio), -1.0, 1.0)
                clip.has_audio = has_audio
                needed = assembler.earliest_needed_time()
                audio.drop_before(needed if needed is not None else clip.start_time_s + n_audio / audio.rate)
                yield clip

        error: str | None = None
        streams = [vstream] if astream is None else [vstream, astream]
        try:
            for packet in container.demux(streams):
                if packet.stream.index == vstream.index:
                    if packet.pts is not None:
                        video_time = max(video_time, float(packet.pts * packet.time_base))
                    if packet.is_corrupt:
                        # The demuxer read a cut-short packet (truncated file). Threaded decoders
                        # swallow the resulting error, so stop here: drain the frames already
                        # queued in the decoder and report the truncation.
                        at = f"{float(packet.pts * packet.time_base):.3f} s" if packet.pts is not None else "end"
                        error = f"corrupt video packet at {at} (truncated or damaged file)"
                        break
                    if not assembler.full:
                        for frame in packet.decode():
                            assembler.add_frame(frame, vstream.time_base)
                elif not audio.ended:
                    decode_audio(packet)
                yield from ready_clips(final=False)
                if assembler.full and releasable(assembler.ready[-1]):
                    break  # max_clips reached and its audio is in: stop reading the file
        except av.FFmpegError as e:
            error = f"{type(e).__name__}: {e}"
        if error is not None and not assembler.full:
            try:  # drain the frames the decoder already holds
                for frame in vstream.decode(None):
                    assembler.add_frame(frame, vstream.time_base)
            except av.FFmpegError:
                pass
        if resampler is not None and not audio.ended:
            push_audio(resampler.resample(None), None)
        audio.ended = True
        if assembler.frames_decoded == 0:
            raise VideoDecodeError("no_frames", error or "video stream yielded no frames")
        assembler.finish(error)
        yield from ready_clips(final=True)
    finally:
        container.close()


def decode_clips(source: VideoSource, spec: ClipSpec = ClipSpec()) -> list[Clip]:
    """All clips of one video (see `iter_clips`)."""
    return list(iter_clips(source, spec))


def probe_video(source: VideoSource) -> dict[str, Any]:
    """Container metadata without decoding, for manifests.

    Returns {"format", "duration_s" (float | None), "bit_rate", "fps", "width", "height",
    "num_frames" (declared; 0 = not stored, e.g. WebM), "num_video_streams", "num_audio_streams",
    "has_audio", "streams": [{"index", "type", "type_index", "codec", "duration_s", ...}]} where
    "fps"/"width"/"height"/"num_frames" describe video stream 0 (None when there is none). Video
    stream entries add width, height, fps, num_frames, pix_fmt; audio ones add sample_rate,
    channels, layout. Raises `VideoDecodeError` when the file cannot be opened.
    """
    container = open_video(source)
    try:
        type_counts: dict[str, int] = {}
        streams = []
        for s in container.streams:
            entry: dict[str, Any] = {
                "index": s.index,
                "type": s.type,
                "type_index": type_counts.get(s.type, 0),
                "codec": s.codec_context.name if s.codec_context is not None else None,
                "duration_s": float(s.duration * s.time_base) if s.duration and s.time_base else None,
            }
            type_counts[s.type] = entry["type_index"] + 1
            if s.type == "video":
                rate = s.average_rate or s.guessed_rate
                entry.update(
                    width=s.codec_context.width,
                    height=s.codec_context.height,
                    fps=float(rate) if rate else None,
                    num_frames=s.frames,
                    pix_fmt=s.codec_context.pix_fmt,
                )
            elif s.type == "audio":
                entry.update(sample_rate=s.codec_context.sample_rate, channels=s.codec_context.channels,
                             layout=s.codec_context.layout.name)
            streams.append(entry)
        video = next((s for s in streams if s["type"] == "video"), None)
        duration = container.duration / av.time_base if container.duration else None
        if duration is None and video is not None:
            duration = video["duration_s"]
        return {
            "format": container.format.name,
            "duration_s": duration,
            "bit_rate": container.bit_rate or None,
            "fps": video["fps"] if video else None,
            "width": video["width"] if video else None,
            "height": video["height"] if video else None,
            "num_frames": video["num_frames"] if video else None,
            "num_video_streams": type_counts.get("video", 0),
            "num_audio_streams": type_counts.get("audio", 0),
            "has_audio": type_counts.get("audio", 0) > 0,
            "streams": streams,
        }
    finally:
        container.close()


def clips_for_frames(num_output_frames: int, spec: ClipSpec) -> int:
    """How many clips `iter_clips` makes from `num_output_frames` frames (after time resampling)."""
    n, t, stride = num_output_frames, spec.num_frames, spec.stride
    if n <= 0:
        return 0
    full = 0 if n < t else (n - t) // stride + 1
    covered = max((full - 1) * stride + t if full else 0, full * stride)
    tail = n > covered and (spec.pad_tail or full == 0)
    total = min(full + int(tail), MAX_CLIPS_PER_VIDEO)
    return total if spec.max_clips is None else min(total, spec.max_clips)


def count_clips(source: VideoSource, spec: ClipSpec = ClipSpec(), *, exact: bool = False) -> int:
    """Number of clips `iter_clips` would yield for an intact file.

    exact=False: from container metadata only (stream/container duration or declared frame count);
    cheap, but may be off by one clip, and blind to timestamp gaps. exact=True: demuxes the video
    packets (no decoding) and applies the same time grid as `iter_clips`, `MAX_GAP_FRAMES` included;
    for a corrupt file it is an upper bound. Both respect `MAX_CLIPS_PER_VIDEO`.
    """
    container = open_video(source)
    try:
        vstream, _ = select_streams(container, spec.video_stream, None)
        period = _frame_period_s(vstream)
        if exact:
            times = sorted(
                float(p.pts * p.time_base) for p in container.demux(vstream) if p.pts is not None and p.size
            )
            if not times:
                return 0
            if spec.target_fps is None:
                return clips_for_frames(len(times), spec)
            deltas = np.diff(times)
            period = period or (float(np.median(deltas)) if deltas.size else 1 / spec.target_fps)
            n_out, grid = 0, 0
            for t_next in [*times[1:], times[-1] + period]:  # each frame holds until the next one
                end = _grid_end(times[0], spec.target_fps, grid, t_next)
                n_out, grid = n_out + min(end - grid, MAX_GAP_FRAMES), end
            return clips_for_frames(n_out, spec)
        else:
            if vstream.duration and vstream.time_base:
                duration = float(vstream.duration * vstream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            elif vstream.frames and period:
                duration = vstream.frames * period
            else:  # no duration stored (e.g. some WebM): count packets instead
                return count_clips(source, spec, exact=True)
            if spec.target_fps is None:
                frames = vstream.frames or (round(duration / period) if period else 0)
                return clips_for_frames(frames, spec)
        n_out = math.ceil(duration * spec.target_fps - _EPS_S * spec.target_fps)
        return clips_for_frames(n_out, spec)
    finally:
        container.close()
