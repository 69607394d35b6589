"""Turning a stream of decoded frames and audio into clips on a fixed time grid (``ClipAssembler``).

Output frame i has time t_i = t_0 + i / target_fps and shows the last decoded frame whose timestamp is <= t_i
(sample-and-hold, as a player would); gaps are bounded by ``clips.MAX_GAP_FRAMES``. Audio is buffered by
stream time (``AudioBuffer``) and attached to the clip whose span it covers. ``video_decode.iter_clips``
drives it; this module never opens a file.
"""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction

import av
import numpy as np

from pipelines.readers import clips
from pipelines.readers.clips import EPS_S, Clip, ClipSpec
from pipelines.readers.video_frames import FrameResizer


def frame_period_s(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(1 / rate) if rate else None


class AudioBuffer:
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


def grid_end(t0: float, fps: float, start: int, t_next: float) -> int:
    """First grid index >= start whose time t0 + i / fps is not before t_next (within EPS_S).

    Closed form, then corrected with the exact comparison, so a gap of hours costs O(1), not a loop
    over its grid slots.
    """
    limit = t_next - EPS_S
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
    return f"timestamp gap of {seconds} s: {skipped} frames not synthesised (MAX_GAP_FRAMES={clips.MAX_GAP_FRAMES})"


class ClipAssembler:
    """Turns a stream of (decoded frame, timestamp) into clips; owns the time grid and the window."""

    def __init__(self, spec: ClipSpec, period_s: float | None, rotate_tag: str | None = None) -> None:
        self.spec = spec
        self.period_s = period_s
        # The hard limit holds even when max_clips asks for more; it warns (see _emit), max_clips does not.
        self.limit = min(spec.max_clips or clips.MAX_CLIPS_PER_VIDEO, clips.MAX_CLIPS_PER_VIDEO)
        self.hard_limit = spec.max_clips is None or spec.max_clips > clips.MAX_CLIPS_PER_VIDEO
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
        end = grid_end(self.t0, fps, self.next_grid, t_next)
        keep = min(end - self.next_grid, clips.MAX_GAP_FRAMES)
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
                self.ready[-1].add_warning(f"MAX_CLIPS_PER_VIDEO={clips.MAX_CLIPS_PER_VIDEO} clips reached: "
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
