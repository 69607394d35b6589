"""pipelines.readers.video_decode on real sample clips (tests/data/videos) and broken files."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from pipelines.readers.video_decode import (
    Clip,
    ClipSpec,
    FrameResizer,
    VideoDecodeError,
    clips_for_frames,
    count_clips,
    decode_clips,
    frame_to_rgb,
    iter_clips,
    probe_video,
)

VIDEOS = Path(__file__).resolve().parents[1] / "data" / "videos"
BUNNY = VIDEOS / "moviepy__big_buck_bunny_432_433.webm"  # VP8 1280x720 24 fps, 24 frames, Vorbis 44.1 kHz
NASA = VIDEOS / "torchcodec__nasa_13013.mp4"  # v0 320x180@25 + a0 8 kHz, v1 480x270@29.97 + a1 16 kHz
H265 = VIDEOS / "torchcodec__h265_video.mp4"  # 128x128 10 fps, 10 frames, no audio
AV1 = VIDEOS / "torchcodec__av1_video.mkv"  # 640x360 25 fps, 125 frames, no audio
BROKEN = VIDEOS / "broken"
TRUNCATED_MID = BROKEN / "truncated_mid__moviepy_smpte-2997.mp4"  # 1080p, cut inside mdat
TRUNCATED_TAIL = BROKEN / "truncated_tail__bbb.avi"  # AVI 320x240 25 fps 6 s, cut at ~60%: index lost, packet 89 cut
NO_MOOV = BROKEN / "truncated_no_moov__bbb.mp4"  # first half of an MP4 whose moov atom is at the end
SMALL = {"height": 32, "width": 32}  # keeps the 1080p broken-file tests cheap


def first_frame(path: Path, video_stream: int = 0) -> av.VideoFrame:
    with av.open(str(path)) as container:
        return next(container.decode(container.streams.video[video_stream]))


def direct_audio(path: Path, audio_stream: int, rate: int = 48000) -> np.ndarray:
    """Whole audio stream resampled to mono float32, without the clip machinery."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler("flt", "mono", rate)
        chunks = [out.to_ndarray().reshape(-1) for frame in container.decode(container.streams.audio[audio_stream])
                  for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks)


def high_band_fraction(audio: np.ndarray, rate: int = 48000, lo: float = 4500, hi: float = 7500) -> float:
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / rate)
    return float(power[(freqs > lo) & (freqs < hi)].sum() / power.sum())


@pytest.fixture(scope="module")
def bunny_clips() -> list[Clip]:
    return decode_clips(BUNNY)


@pytest.fixture(scope="module")
def truncated_mid_clips() -> list[Clip]:
    return decode_clips(TRUNCATED_MID, ClipSpec(**SMALL))


def test_spec_defaults_and_validation():
    spec = ClipSpec()
    assert (spec.num_frames, spec.height, spec.width, spec.stride) == (16, 224, 224, 16)
    assert spec.resolved_audio_rate == 48000 and spec.audio_samples_per_clip == 30720
    assert ClipSpec(target_fps=30).resolved_audio_rate == 57600
    assert ClipSpec(target_fps=None).resolved_audio_rate == 48000
    assert ClipSpec(audio_rate=16000).resolved_audio_rate == 16000
    for bad in ({"num_frames": 0}, {"height": -1}, {"max_clips": 0}, {"target_fps": 0}, {"video_stream": -1}):
        with pytest.raises(ValueError):
            ClipSpec(**bad)


def test_clip_shapes_dtypes_and_audio(bunny_clips):
    assert len(bunny_clips) == 1  # 1 s at 25 fps = 25 frames -> one full clip, tail dropped
    clip = bunny_clips[0]
    assert clip.frames.shape == (16, 224, 224, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (16 * 1920,) and clip.audio.dtype == np.float32
    assert clip.has_audio and 0.1 < np.abs(clip.audio).max() <= 1.0
    got = (clip.clip_index, clip.start_time_s, clip.partial, clip.num_valid_frames, clip.error)
    assert got == (0, 0.0, False, 16, None)


def test_frames_are_resized_and_centre_cropped(bunny_clips):
    # 1280x720 -> shorter side 224 -> 398x224 -> centre crop 224x224, all in swscale (bilinear).
    frame = first_frame(BUNNY)
    expected = frame_to_rgb(frame, 224, 224)
    np.testing.assert_array_equal(bunny_clips[0].frames[0], expected)
    full = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)  # (3, 720, 1280)
    reference = TF.center_crop(TF.resize(full, [224, 398], antialias=True), [224, 224]).permute(1, 2, 0).numpy()
    assert np.abs(expected.astype(int) - reference).mean() < 2.0  # same picture, same geometry


def test_time_resampling_holds_frames(bunny_clips):
    # 24 fps source on a 25 fps grid: output frame 1 (t=0.04 s) still shows source frame 0 (next at 0.0417 s).
    frames = bunny_clips[0].frames
    np.testing.assert_array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[1], frames[2])
    native = decode_clips(BUNNY, ClipSpec(num_frames=8, target_fps=None, **SMALL))
    assert len(native) == 3  # 24 frames, every decoded frame used
    assert native[1].start_time_s == pytest.approx(8 / 24, abs=1e-3)
    assert all(not np.array_equal(native[0].frames[i], native[0].frames[i + 1]) for i in range(7))


def test_bytes_source_equals_path_source(bunny_clips):
    from_bytes = decode_clips(BUNNY.read_bytes())
    np.testing.assert_array_equal(from_bytes[0].frames, bunny_clips[0].frames)
    np.testing.assert_array_equal(from_bytes[0].audio, bunny_clips[0].audio)


@pytest.mark.parametrize("stream, other", [(0, 1), (1, 0)])
def test_stream_selection_by_index_among_type(stream, other):
    spec = ClipSpec(video_stream=stream, audio_stream=stream, max_clips=2)
    clips = decode_clips(NASA, spec)
    assert [c.clip_index for c in clips] == [0, 1]
    np.testing.assert_array_equal(clips[0].frames[0], frame_to_rgb(first_frame(NASA, stream), 224, 224))
    assert np.abs(clips[0].frames[0].astype(int) - frame_to_rgb(first_frame(NASA, other), 224, 224)).mean() > 1
    # 8 kHz audio has nothing above 4 kHz after resampling to 48 kHz; the 16 kHz stream does.
    band = high_band_fraction(np.concatenate([c.audio for c in clips]))
    assert band > 1e-3 if stream == 1 else band < 1e-5


def test_audio_is_aligned_with_clip_time():
    clips = decode_clips(NASA, ClipSpec(clip_stride_frames=8, max_clips=3, audio_stream=0, **SMALL))
    reference = direct_audio(NASA, 0)
    for clip in clips:
        start = round(clip.start_time_s * 48000)
        np.testing.assert_allclose(clip.audio, reference[start: start + 30720], atol=1e-6)


def test_overlapping_and_sparse_strides():
    overlap = decode_clips(NASA, ClipSpec(clip_stride_frames=8, max_clips=3, **SMALL))
    assert [c.start_time_s for c in overlap] == pytest.approx([0.0, 0.32, 0.64])
    np.testing.assert_array_equal(overlap[1].frames[:8], overlap[0].frames[8:])
    sparse = decode_clips(NASA, ClipSpec(clip_stride_frames=32, max_clips=2, **SMALL))
    assert [c.start_time_s for c in sparse] == pytest.approx([0.0, 1.28])


def test_max_clips_stops_early_and_iterates_lazily():
    clips = iter_clips(NASA, ClipSpec(max_clips=3, **SMALL))
    assert iter(clips) is clips
    assert [c.clip_index for c in clips] == [0, 1, 2]


def test_short_video_without_audio_pads_the_only_clip():
    (clip,) = decode_clips(H265, ClipSpec(target_fps=None))  # 10 frames < 16
    assert clip.partial and clip.num_valid_frames == 10 and clip.error is None
    assert all(np.array_equal(clip.frames[i], clip.frames[9]) for i in range(10, 16))
    assert not clip.has_audio and not clip.audio.any()


def test_tail_is_dropped_unless_pad_tail():
    assert len(decode_clips(H265, ClipSpec(**SMALL))) == 1  # 1 s at 25 fps = 25 frames
    clips = decode_clips(H265, ClipSpec(pad_tail=True, **SMALL))
    assert [(c.partial, c.num_valid_frames) for c in clips] == [(False, 16), (True, 9)]


def test_av1_mkv_decodes_all_clips():
    clips = decode_clips(AV1, ClipSpec(**SMALL))
    assert len(clips) == 7 and clips[-1].start_time_s == pytest.approx(3.84)
    assert not any(c.partial or c.has_audio for c in clips)


def test_truncated_mid_file_returns_partial_output(truncated_mid_clips):
    # 148 frames decode before the cut packet (PyAV raises InvalidDataError there without threads;
    # with threaded decoding the demuxer's corrupt-packet flag is what reveals the cut).
    clips = truncated_mid_clips
    assert len(clips) == 10 and count_clips(TRUNCATED_MID) == 15  # the header still promises 251 frames
    assert all(not c.partial and c.error is None for c in clips[:-1])
    last = clips[-1]
    assert last.partial and 0 < last.num_valid_frames < 16 and "corrupt" in last.error
    assert all(np.array_equal(f, last.frames[last.num_valid_frames - 1]) for f in last.frames[last.num_valid_frames:])
    assert all(c.has_audio for c in clips)


def test_truncated_avi_is_flagged_although_pyav_does_not_raise():
    # Plain PyAV decodes 90 frames (pts 0-89) without an error; frame 89 comes from the cut packet and
    # is half garbage. The demuxer flags that packet as corrupt, so decoding stops before it.
    with av.open(str(TRUNCATED_TAIL)) as container:
        assert container.streams.video[0].frames == 150  # the header still promises 6 s
        assert len(list(container.decode(video=0))) == 90
    clips = decode_clips(TRUNCATED_TAIL, ClipSpec(**SMALL))
    assert len(clips) == 6  # frames 0-88: 3.56 s of 6 s
    assert all(not c.partial and c.error is None for c in clips[:-1])
    last = clips[-1]
    assert last.partial and last.num_valid_frames == 9 and last.start_time_s == pytest.approx(3.2)
    assert last.error == "corrupt video packet at 3.560 s (truncated or damaged file)"
    assert all(c.has_audio for c in clips)


def test_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(VideoDecodeError("no_frames", "detail")))
    assert (error.reason, error.detail, str(error)) == ("no_frames", "detail", "no_frames: detail")


@pytest.mark.parametrize(
    "source, reason",
    [
        (BROKEN / "moviepy__result_empty.webm", "empty_file"),
        (b"", "empty_file"),
        (NO_MOOV, "open_failed"),
        (b"not a video" * 100, "open_failed"),
        (VIDEOS / "does_not_exist.mp4", "not_found"),
    ],
)
def test_unopenable_inputs_raise_with_reason(source, reason):
    with pytest.raises(VideoDecodeError) as info:
        decode_clips(source)
    assert info.value.reason == reason


def test_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes((np.sin(np.arange(800) / 5) * 1000).astype("<i2").tobytes())
    with pytest.raises(VideoDecodeError) as info:
        decode_clips(path)
    assert info.value.reason == "no_video_stream"


def test_zero_frames_decoded():
    data = TRUNCATED_MID.read_bytes()
    pos = 0
    while data[pos + 4: pos + 8] != b"mdat":  # cut right after the start of the media data
        pos += struct.unpack(">I", data[pos: pos + 4])[0]
    with pytest.raises(VideoDecodeError) as info:
        decode_clips(data[: pos + 200])
    assert info.value.reason == "no_frames"


@pytest.mark.parametrize("spec", [ClipSpec(video_stream=2), ClipSpec(audio_stream=2)])
def test_missing_requested_stream(spec):
    with pytest.raises(VideoDecodeError) as info:
        decode_clips(NASA, spec)
    assert info.value.reason == "stream_missing"


def test_probe_video_reports_streams_without_decoding():
    info = probe_video(NASA)
    assert (info["num_video_streams"], info["num_audio_streams"], info["has_audio"]) == (2, 2, True)
    assert (info["width"], info["height"], info["fps"], info["num_frames"]) == (320, 180, 25.0, 325)
    assert info["duration_s"] == pytest.approx(13.056)
    videos = [s for s in info["streams"] if s["type"] == "video"]
    audios = [s for s in info["streams"] if s["type"] == "audio"]
    assert [(s["type_index"], s["width"], s["height"]) for s in videos] == [(0, 320, 180), (1, 480, 270)]
    assert [(s["type_index"], s["sample_rate"]) for s in audios] == [(0, 8000), (1, 16000)]
    assert videos[1]["fps"] == pytest.approx(29.97, abs=0.01)
    bunny = probe_video(BUNNY)
    assert bunny["num_frames"] == 0 and bunny["duration_s"] == pytest.approx(1.0)  # WebM stores no count
    with pytest.raises(VideoDecodeError, match="^open_failed: .*InvalidDataError"):  # no moov atom
        probe_video(NO_MOOV)


@pytest.mark.parametrize("n, spec, expected", [
    (0, ClipSpec(), 0), (10, ClipSpec(), 1), (16, ClipSpec(), 1), (25, ClipSpec(), 1),
    (25, ClipSpec(pad_tail=True), 2), (32, ClipSpec(pad_tail=True), 2), (40, ClipSpec(clip_stride_frames=8), 4),
    (40, ClipSpec(clip_stride_frames=32), 1), (50, ClipSpec(clip_stride_frames=32, pad_tail=True), 2),
    (325, ClipSpec(max_clips=3), 3),
])
def test_clips_for_frames(n, spec, expected):
    assert clips_for_frames(n, spec) == expected


@pytest.mark.parametrize("path, spec", [
    (BUNNY, ClipSpec(**SMALL)), (BUNNY, ClipSpec(num_frames=5, target_fps=None, pad_tail=True, **SMALL)),
    (H265, ClipSpec(pad_tail=True, **SMALL)), (NASA, ClipSpec(clip_stride_frames=24, video_stream=1, **SMALL)),
])
def test_count_clips_matches_decoding(path, spec):
    n = len(decode_clips(path, spec))
    assert count_clips(path, spec, exact=True) == n
    assert count_clips(path, spec) == n


# ------------------------------------------------------------------ display orientation (rotation metadata)
def quadrant_picture(height: int, width: int) -> np.ndarray:
    """Four flat colours, one per quadrant, so any turn or mirror of the picture shows."""
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 2, : width // 2] = (255, 0, 0)
    img[: height // 2, width // 2 :] = (0, 255, 0)
    img[height // 2 :, : width // 2] = (0, 0, 255)
    img[height // 2 :, width // 2 :] = (255, 255, 255)
    return img


def oriented_video(stored: np.ndarray, degrees: float, hflip: bool = False, vflip: bool = False) -> bytes:
    """An MP4 of `stored` frames with a display matrix (PyAV: counter-clockwise degrees, then mirrors)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.height, stream.width = stored.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()


def upright_clip_frame(data: bytes, height: int, width: int) -> np.ndarray:
    spec = ClipSpec(num_frames=2, height=height, width=width, audio_stream=None)
    return next(iter_clips(data, spec)).frames[0]


def test_portrait_phone_video_comes_out_upright():
    """A phone held upright stores the sensor's landscape picture and a 'rotate 90 clockwise' matrix."""
    upright = quadrant_picture(64, 32)  # what the camera saw: portrait
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # 32 x 64 landscape, turned counter-clockwise
    frame = upright_clip_frame(oriented_video(stored, -90), 64, 32)
    assert frame.shape == (64, 32, 3)
    assert np.abs(frame.astype(int) - upright).mean() < 10  # lossy mpeg4; a wrong turn is off by ~150
    unrotated = upright_clip_frame(oriented_video(stored, 0), 32, 64)
    assert np.abs(unrotated.astype(int) - stored).mean() < 10  # no matrix: the picture as stored


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip, vflip", [(False, False), (True, False), (False, True)])
def test_every_display_orientation_is_applied(degrees, hflip, vflip):
    # PyAV's documented meaning of the matrix it writes: turn counter-clockwise by `degrees`, then mirror.
    stored = quadrant_picture(32, 64)
    expected = np.rot90(stored, k=degrees // 90)
    expected = expected[:, ::-1] if hflip else expected
    expected = expected[::-1] if vflip else expected
    frame = upright_clip_frame(oriented_video(stored, degrees, hflip, vflip), *expected.shape[:2])
    assert frame.shape == expected.shape
    assert np.abs(frame.astype(int) - expected).mean() < 10


def test_legacy_rotate_tag_is_a_clockwise_turn():
    """Files whose frames carry no display matrix may still have the old `rotate` stream tag."""
    stored = quadrant_picture(32, 64)
    frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
    assert len(frame.side_data) == 0
    turned = FrameResizer(64, 32, rotate_tag="90")(frame)
    np.testing.assert_array_equal(turned, np.rot90(stored, k=-1))
    np.testing.assert_array_equal(FrameResizer(32, 64, rotate_tag="bogus")(frame), stored)
