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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from pipelines import storage
from pipelines.readers import clips
from pipelines.readers.clip_assembly import AudioBuffer, ClipAssembler, frame_period_s, grid_end
from pipelines.readers.clips import (
    AUDIO_WAIT_S,
    DECODE_ERROR_REASONS,
    EPS_S,
    MAX_CLIPS_PER_VIDEO,
    MAX_GAP_FRAMES,
    MODEL_FPS,
    Clip,
    ClipSpec,
)
from pipelines.readers.errors import VideoDecodeError
from pipelines.readers.video_frames import FrameResizer, display_orientation, frame_to_rgb, orient, resize_geometry

__all__ = ["DECODE_ERROR_REASONS", "MAX_CLIPS_PER_VIDEO", "MAX_GAP_FRAMES", "MODEL_FPS", "Clip", "ClipSpec",
           "FrameResizer", "VideoDecodeError", "VideoSource", "clips_for_frames", "count_clips", "decode_clips",
           "display_orientation", "frame_to_rgb", "iter_clips", "open_video", "orient", "probe_video",
           "resize_geometry", "select_streams"]

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


class _ClipReader:
    """The demux loop of one open video: video packets into the ``ClipAssembler``, audio into the
    ``AudioBuffer``, and finished clips out with their audio attached."""

    def __init__(self, container: av.container.InputContainer, spec: ClipSpec) -> None:
        self.container = container
        self.vstream, self.astream = select_streams(container, spec.video_stream, spec.audio_stream)
        self.vstream.thread_type = "AUTO"
        self.vstream.thread_count = spec.decode_threads
        self.assembler = ClipAssembler(spec, frame_period_s(self.vstream), self.vstream.metadata.get("rotate"))
        self.audio = AudioBuffer(spec.resolved_audio_rate)
        self.audio.ended = self.astream is None
        self.resampler = (None if self.astream is None
                          else av.AudioResampler("flt", "mono", spec.resolved_audio_rate))
        self.has_audio = False
        self.video_time = -math.inf  # latest video packet time seen by the demuxer
        self.n_audio = spec.audio_samples_per_clip
        self.error: str | None = None

    def push_audio(self, frames: list[av.AudioFrame], time_s: float | None) -> None:
        for out in frames:
            samples = out.to_ndarray().reshape(-1)  # packed flt mono: (1, n) -> (n,)
            if samples.size:
                self.audio.push(samples, time_s)
                self.has_audio = True

    def decode_audio(self, packet: av.Packet) -> None:
        try:
            for frame in packet.decode():
                self.push_audio(self.resampler.resample(frame), frame.time)
            if packet.size == 0:  # flush packet: the audio stream is over
                self.push_audio(self.resampler.resample(None), None)
                self.audio.ended = True
        except (av.FFmpegError, ValueError):  # a bad audio packet ends the audio, not the video
            self.audio.ended = True

    def releasable(self, clip: Clip) -> bool:
        # Audio that stops early (or is badly interleaved) must not make us hold every clip.
        clip_end = clip.start_time_s + self.n_audio / self.audio.rate
        return self.audio.covers(clip.start_time_s, self.n_audio) or self.video_time > clip_end + AUDIO_WAIT_S

    def ready_clips(self, final: bool) -> Iterator[Clip]:
        # Keep the newest clip back until the next one exists, so that a later decoder error
        # can still be written on the file's last clip.
        assembler, audio = self.assembler, self.audio
        while assembler.ready and (final or len(assembler.ready) > 1):
            clip = assembler.ready[0]
            if not final and not self.releasable(clip):
                return
            assembler.ready.popleft()
            clip.audio = np.clip(audio.take(clip.start_time_s, self.n_audio), -1.0, 1.0)
            clip.has_audio = self.has_audio
            needed = assembler.earliest_needed_time()
            audio.drop_before(needed if needed is not None else clip.start_time_s + self.n_audio / audio.rate)
            yield clip

    def demux(self) -> Iterator[Clip]:
        """Read packets until the file ends, ``max_clips`` are complete, or the first damaged packet."""
        vstream, assembler = self.vstream, self.assembler
        streams = [vstream] if self.astream is None else [vstream, self.astream]
        try:
            for packet in self.container.demux(streams):
                if packet.stream.index == vstream.index:
                    if packet.pts is not None:
                        self.video_time = max(self.video_time, float(packet.pts * packet.time_base))
                    if packet.is_corrupt:
                        # The demuxer read a cut-short packet (truncated file). Threaded decoders
                        # swallow the resulting error, so stop here: drain the frames already
                        # queued in the decoder and report the truncation.
                        at = f"{float(packet.pts * packet.time_base):.3f} s" if packet.pts is not None else "end"
                        self.error = f"corrupt video packet at {at} (truncated or damaged file)"
                        return
                    if not assembler.full:
                        for frame in packet.decode():
                            assembler.add_frame(frame, vstream.time_base)
                elif not self.audio.ended:
                    self.decode_audio(packet)
                yield from self.ready_clips(final=False)
                if assembler.full and self.releasable(assembler.ready[-1]):
                    return  # max_clips reached and its audio is in: stop reading the file
        except av.FFmpegError as e:
            self.error = f"{type(e).__name__}: {e}"

    def finish(self) -> Iterator[Clip]:
        """Drain the decoders after ``demux`` and yield the remaining clips (the last one carries the error)."""
        if self.error is not None and not self.assembler.full:
            try:  # drain the frames the decoder already holds
                for frame in self.vstream.decode(None):
                    self.assembler.add_frame(frame, self.vstream.time_base)
            except av.FFmpegError:
                pass
        if self.resampler is not None and not self.audio.ended:
            self.push_audio(self.resampler.resample(None), None)
        self.audio.ended = True
        if self.assembler.frames_decoded == 0:
            raise VideoDecodeError("no_frames", self.error or "video stream yielded no frames")
        self.assembler.finish(self.error)
        yield from self.ready_clips(final=True)


def iter_clips(source: VideoSource, spec: ClipSpec = ClipSpec()) -> Iterator[Clip]:
    """Yield the clips of one video in order, holding at most ~2 clips of frames in memory.

    Raises `VideoDecodeError` (on first iteration) when the file cannot be opened, lacks the
    requested streams, or yields no frame. A decoder error after some frames is not raised: the
    clips decoded so far are yielded, the incomplete last one padded (`partial=True`), and the last
    clip carries `error`. Decoding stops as soon as `spec.max_clips` clips are complete.
    """
    container = open_video(source)
    try:
        reader = _ClipReader(container, spec)
        yield from reader.demux()
        yield from reader.finish()
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
    total = min(full + int(tail), clips.MAX_CLIPS_PER_VIDEO)
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
        period = frame_period_s(vstream)
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
                end = grid_end(times[0], spec.target_fps, grid, t_next)
                n_out, grid = n_out + min(end - grid, clips.MAX_GAP_FRAMES), end
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
        n_out = math.ceil(duration * spec.target_fps - EPS_S * spec.target_fps)
        return clips_for_frames(n_out, spec)
    finally:
        container.close()
