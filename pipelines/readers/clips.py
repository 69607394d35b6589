"""What a video becomes: ``ClipSpec`` (how to cut it) and ``Clip`` (one fixed-shape audio-visual clip).

Shape contract of every ``Clip`` (T = num_frames, H x W = height x width, S = audio_samples_per_frame)::

    frames: uint8   (T, H, W, 3)  RGB
    audio:  float32 (T * S,)      mono, in [-1, 1], at ``ClipSpec.resolved_audio_rate`` Hz

The limits below bound the work one input can cause; ``video_decode`` explains the decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODEL_FPS = 25.0  # frame rate of the Perceiver IO multimodal autoencoder (16 frames = 0.64 s)
EPS_S = 1e-6  # tolerance for comparing timestamps in seconds
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
