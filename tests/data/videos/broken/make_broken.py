"""Regenerate the byte-truncated broken videos of this folder from a permissively licensed clip.

Source: ``tests/data/videos/moviepy__big_buck_bunny_432_433.webm`` — 1 s of *Big Buck Bunny*,
(c) copyright 2008 Blender Foundation | www.bigbuckbunny.org, licensed under CC BY 3.0
(https://creativecommons.org/licenses/by/3.0/); file taken from Zulko/moviepy (MIT) @ 7ffa4f0037 :
media/big_buck_bunny_432_433.webm. Changes made here: downscaled / cropped, looped with a moving
white square drawn on top, re-encoded, and cut short on purpose.

Usage (from the repository root, with the project's venv; PyAV 18.1 / FFmpeg 8 was used)::

    .venv/bin/python tests/data/videos/broken/make_broken.py          # writes both files
    .venv/bin/python tests/data/videos/broken/make_broken.py --check  # only prints what PyAV sees

Outputs (next to this script):

``truncated_no_moov__bbb.mp4``
    H.264 (libx264, CRF 30, preset medium, 1 thread) 320x180 24 fps yuv420p, 96 frames = 4.0 s
    (the 24 source frames looped 4x) + AAC 44.1 kHz stereo 96 kb/s (the source audio looped).
    Written by FFmpeg's mp4 muxer with default flags, so the moov atom comes *after* mdat; only the
    first 50% of the bytes are kept, so the moov atom is missing -> ``av.open`` raises
    InvalidDataError ("Invalid data found when processing input").

``truncated_tail__bbb.avi``
    MPEG-4 Part 2 (FFmpeg ``mpeg4``, 300 kb/s, GOP 25) 320x240 25 fps yuv420p, 150 frames = 6.0 s
    (source centre-cropped to 4:3, frames looped) + MP3 (libmp3lame) 44.1 kHz stereo 128 kb/s.
    Only the first ~60% of the bytes are kept: ``int(size * 0.6)``, moved forward to the middle of
    the next video packet when that byte is not inside a video packet (see `avi_cut`). The idx1
    index at the end of the file is lost and the last video packet read is cut short. PyAV opens it and decodes a prefix
    of the frames without raising; the demuxer flags the cut packet with ``is_corrupt``.

Encoding is single-threaded so that re-running the script with the same PyAV/FFmpeg build gives
byte-identical files (other builds may differ in bytes but not in the failure kind).
"""

from __future__ import annotations

import argparse
import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "moviepy__big_buck_bunny_432_433.webm"
NO_MOOV = HERE / "truncated_no_moov__bbb.mp4"
TAIL_AVI = HERE / "truncated_tail__bbb.avi"
AUDIO_RATE = 44100


def load_source() -> tuple[list[np.ndarray], np.ndarray]:
    """All video frames as (720, 1280, 3) uint8 RGB and the audio as (2, n) float32 at 44.1 kHz."""
    with av.open(str(SOURCE)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(SOURCE)) as container:
        resampler = av.AudioResampler("fltp", "stereo", AUDIO_RATE)
        chunks = [o.to_ndarray() for f in container.decode(audio=0) for o in resampler.resample(f)]
        chunks += [o.to_ndarray() for o in resampler.resample(None)]
    return frames, np.concatenate(chunks, axis=1).astype(np.float32)


def make_frame(src: np.ndarray, i: int, width: int, height: int) -> av.VideoFrame:
    """Source frame centre-cropped to the output aspect, resized, with a square moving left->right."""
    h, w = src.shape[:2]
    crop_w = min(w, round(h * width / height))
    left = (w - crop_w) // 2
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(src[:, left : left + crop_w]), format="rgb24")
    rgb = frame.reformat(width=width, height=height, interpolation="AREA").to_ndarray().copy()
    size = height // 10
    x = (i * 5) % (width - size)
    rgb[height - 2 * size : height - size, x : x + size] = 255
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def audio_frames(audio: np.ndarray, seconds: float, frame_size: int) -> list[av.AudioFrame]:
    """The source audio looped to `seconds`, as fltp stereo frames of `frame_size` samples."""
    n = round(seconds * AUDIO_RATE)
    looped = np.tile(audio, (1, -(-n // audio.shape[1])))[:, :n]
    out = []
    for start in range(0, n, frame_size):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(looped[:, start : start + frame_size]),
                                           format="fltp", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
        out.append(frame)
    return out


def encode(path: Path, fmt: str, vcodec: str, acodec: str, width: int, height: int, fps: int,
           num_frames: int, video_options: dict[str, str], video_bit_rate: int | None, audio_bit_rate: int,
           frames: list[np.ndarray], audio: np.ndarray, options: dict[str, str] | None = None) -> bytes:
    """Encode the looped clip into `path` (complete file) and return its bytes.

    Video and audio frames are fed to the encoders in presentation-time order, so the muxer
    interleaves the two streams evenly and a byte cut hits both at about the same time.
    """
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        vstream = container.add_stream(vcodec, rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.codec_context.thread_count = 1
        if video_bit_rate:
            vstream.bit_rate = video_bit_rate
        vstream.options = video_options
        astream = container.add_stream(acodec, rate=AUDIO_RATE, layout="stereo")
        astream.format = "fltp"  # supported by both aac and libmp3lame
        astream.bit_rate = audio_bit_rate
        astream.codec_context.open()  # to learn frame_size (1024 for AAC, 1152 for MP3)
        queue = [(i / fps, 0, i) for i in range(num_frames)]
        queue += [(f.pts / AUDIO_RATE, 1, f) for f in
                  audio_frames(audio, num_frames / fps, astream.codec_context.frame_size)]
        for _, kind, item in sorted(queue, key=lambda q: (q[0], q[1])):
            if kind == 0:
                frame = make_frame(frames[item % len(frames)], item, width, height)
                frame.pts, frame.time_base = item, Fraction(1, fps)
                container.mux(vstream.encode(frame))
            else:
                container.mux(astream.encode(item))
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))
    return path.read_bytes()


def build() -> None:
    frames, audio = load_source()
    h264 = "libx264" in av.codecs_available
    full = encode(NO_MOOV, "mp4", "libx264" if h264 else "mpeg4", "aac", 320, 180, 24, 96,
                  {"crf": "30", "preset": "medium"} if h264 else {}, None if h264 else 300_000, 96_000,
                  frames, audio)
    assert full.find(b"moov") > full.find(b"mdat") > 0, "moov atom must follow mdat"
    NO_MOOV.write_bytes(full[: len(full) // 2])
    print(f"{NO_MOOV.name}: kept {len(full) // 2} of {len(full)} bytes (moov at byte {full.find(b'moov') - 4})")

    # The MP3 encoder's priming packet has a negative timestamp; the muxer's default shift for it
    # would make the video start at frame index 2 (1 dropped slot) in the AVI, so switch it off.
    full = encode(TAIL_AVI, "avi", "mpeg4", "libmp3lame", 320, 240, 25, 150, {"g": "25"}, 300_000, 128_000,
                  frames, audio, {"avoid_negative_ts": "disabled"})
    cut = avi_cut(TAIL_AVI, int(len(full) * 0.6))
    TAIL_AVI.write_bytes(full[:cut])
    print(f"{TAIL_AVI.name}: kept {cut} of {len(full)} bytes ({cut / len(full):.2%})")


def avi_cut(path: Path, cut: int) -> int:
    """`cut` if it falls inside a video packet's payload, else the middle of the next video packet.

    A cut inside an audio chunk (or a chunk header) would leave every video packet whole, and the
    file would merely look short; the point of this file is a video packet cut in two.
    """
    with av.open(str(path)) as container:
        packets = [(p.stream.type, p.pos, p.size) for p in container.demux() if p.size and p.pos is not None]
    for kind, pos, size in packets:  # AVI packets come in file order; pos = first payload byte
        if kind == "video" and pos + size > cut and size >= 64:
            return cut if pos + 16 <= cut else pos + size // 2
    raise RuntimeError("no video packet after the cut")


def check(path: Path) -> None:
    data = path.read_bytes()
    print(f"\n{path.name}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        print(f"  open fails: {type(e).__name__}: {e}")
        return
    with container:
        print(f"  {container.format.name}, duration {container.duration and container.duration / av.time_base} s")
        for s in container.streams:
            print(f"  #{s.index} {s.type} {s.codec_context.name} frames declared {s.frames}")
        counts: dict[str, int] = {}
        last: dict[str, float] = {}
        try:
            for packet in container.demux():
                kind = packet.stream.type
                if packet.is_corrupt:
                    print(f"  corrupt {kind} packet: pts {packet.pts} size {packet.size}")
                for frame in packet.decode():
                    counts[kind] = counts.get(kind, 0) + 1
                    if frame.time is not None:
                        last[kind] = frame.time
        except av.FFmpegError as e:
            print(f"  decode raises {type(e).__name__}: {e}")
        for kind in counts:
            print(f"  {kind}: {counts[kind]} frames decoded, last at {last.get(kind, float('nan')):.3f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="do not write, only describe the files")
    if not parser.parse_args().check:
        build()
    for p in (NO_MOOV, TAIL_AVI):
        check(p)
