"""Bounded work per video: timestamp gaps (MAX_GAP_FRAMES) and clips per input (MAX_CLIPS_PER_VIDEO)."""

from __future__ import annotations

import io
import time
from itertools import islice

import av
import numpy as np
import pyarrow as pa
import pytest

from pipelines.readers import clips
from pipelines.readers.video_decode import MAX_GAP_FRAMES, ClipSpec, count_clips, iter_clips
from pipelines.stages.video import decode_videos

FPS = 25
DARK, BRIGHT = 60, 180  # grey levels of the frames before / after the gap


def make_video(pts_s: list[float], size: int = 32) -> bytes:
    """An MP4 (mpeg4, 25 fps time base) with one frame per timestamp; the last frame is BRIGHT, the rest DARK."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i, t in enumerate(pts_s):
            grey = BRIGHT if i == len(pts_s) - 1 else DARK
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), grey, np.uint8), format="rgb24")
            frame.pts = round(t * FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return buf.getvalue()


SPEC = ClipSpec(num_frames=16, height=32, width=32, audio_stream=None)  # max_clips=None: --clips-per-video 0


def _bright(frame: np.ndarray) -> bool:
    return frame.mean() > (DARK + BRIGHT) / 2


def test_ten_hour_gap_gives_a_bounded_number_of_clips_quickly():
    data = make_video([0.0, 36000.0])
    assert len(data) < 2000  # a tiny file...
    start = time.perf_counter()
    clips = list(islice(iter_clips(data, SPEC), 1000))  # ...that used to become 56,250+ clips
    assert time.perf_counter() - start < 5.0
    frames = np.concatenate([c.frames[: c.num_valid_frames] for c in clips])
    bright = np.array([_bright(f) for f in frames])
    # The dark frame fills MAX_GAP_FRAMES grid slots, then the grid jumps to the bright frame's time.
    assert not bright[:MAX_GAP_FRAMES].any() and bright[MAX_GAP_FRAMES:].all()
    assert MAX_GAP_FRAMES < len(frames) <= 2 * MAX_GAP_FRAMES  # the last frame's hold is capped too
    jump = MAX_GAP_FRAMES // SPEC.num_frames  # the clip holding both sides of the gap
    expected = f"timestamp gap of 36000 s: {36000 * FPS - MAX_GAP_FRAMES} frames not synthesised"
    assert clips[jump].warning is not None and clips[jump].warning.startswith(expected)
    assert [c.clip_index for c in clips if c.warning and "36000 s" in c.warning] == [jump]
    assert all(c.warning is None for c in clips[:jump])
    # Clip times stay stream times: the clip after the jump starts 6 frames after the bright frame.
    after = (jump + 1) * SPEC.num_frames - MAX_GAP_FRAMES
    assert clips[jump].start_time_s == pytest.approx(jump * SPEC.num_frames / FPS)
    assert clips[jump + 1].start_time_s == pytest.approx(36000.0 + after / FPS)
    assert count_clips(data, SPEC, exact=True) == len(clips)


def test_regular_video_is_untouched_by_the_gap_cap():
    clips = list(iter_clips(make_video([i / FPS for i in range(64)]), SPEC))
    assert len(clips) == 4 and all(c.warning is None for c in clips)
    assert [c.start_time_s for c in clips] == pytest.approx([0.0, 0.64, 1.28, 1.92])


def test_gap_just_under_the_cap_is_filled():
    """A frame held for MAX_GAP_FRAMES - 1 slots (e.g. a slow slideshow) is repeated, not cut."""
    gap = (MAX_GAP_FRAMES - 1) / FPS
    clips = list(iter_clips(make_video([0.0, gap, gap + 1 / FPS]), SPEC))
    bright = np.array([_bright(f) for c in clips for f in c.frames[: c.num_valid_frames]])
    assert not bright[:MAX_GAP_FRAMES].any() and bright[MAX_GAP_FRAMES:].all()  # slot 250 = 250 / 25 s
    assert all(c.warning is None for c in clips)


@pytest.fixture
def small_clip_limit(monkeypatch):
    monkeypatch.setattr(clips, "MAX_CLIPS_PER_VIDEO", 3)
    return 3


def test_hard_clip_limit_holds_without_max_clips_and_warns(small_clip_limit):
    spec = ClipSpec(num_frames=4, height=32, width=32, audio_stream=None)
    data = make_video([i / FPS for i in range(100)])  # 25 clips of 4 frames
    clips = list(iter_clips(data, spec))
    assert [c.clip_index for c in clips] == [0, 1, 2]
    assert clips[-1].warning == "MAX_CLIPS_PER_VIDEO=3 clips reached: the rest of the video (from 0.480 s) " \
                                "is not decoded"
    assert all(c.warning is None for c in clips[:-1])
    asked_for_more = list(iter_clips(data, ClipSpec(num_frames=4, height=32, width=32, audio_stream=None,
                                                    max_clips=10)))
    assert len(asked_for_more) == 3 and asked_for_more[-1].warning == clips[-1].warning
    assert count_clips(data, spec) == count_clips(data, spec, exact=True) == 3


def test_own_max_clips_and_exact_fit_do_not_warn(small_clip_limit):
    spec = ClipSpec(num_frames=4, height=32, width=32, audio_stream=None)
    fewer = list(iter_clips(make_video([i / FPS for i in range(100)]), ClipSpec(
        num_frames=4, height=32, width=32, audio_stream=None, max_clips=2)))
    assert len(fewer) == 2 and all(c.warning is None for c in fewer)
    exact = list(iter_clips(make_video([i / FPS for i in range(12)]), spec))  # exactly 3 clips: nothing lost
    assert len(exact) == 3 and all(c.warning is None for c in exact)


def test_warnings_reach_the_output_rows(tmp_path, small_clip_limit):
    path = tmp_path / "gap.mp4"
    path.write_bytes(make_video([0.0, 36000.0]))
    batch = pa.Table.from_pylist([{"id": "v", "path": str(path), "label_index": None}])
    rows = pa.concat_tables(decode_videos(batch, SPEC)).to_pylist()
    assert [r["clip_index"] for r in rows] == [0, 1, 2]
    assert [r["warning"] for r in rows[:2]] == [None, None]
    assert rows[2]["warning"].startswith("MAX_CLIPS_PER_VIDEO=3 clips reached")
    assert rows[2]["error"] is None
