"""Bad and unusual video inputs through the whole ``video`` job (CLI, local Ray, Parquet read back).

Already asserted elsewhere, not repeated here (see docs/reliability.md):
* images edge cases (broken/truncated -> error rows with a reason; CMYK, palette, grey, RGBA, EXIF -> ok):
  tests/pipelines/test_job_images.py::test_files;
* zero-byte and no-moov videos -> one error row with reason ``empty_file`` / ``open_failed``:
  tests/pipelines/test_job_video.py::test_rows;
* decoder-level partial clips and stream selection: tests/pipelines/test_video_decode.py.
New here: the *job output* flags truncated videos' last clip as partial (with a warning, not an error),
and ``--video-stream/--audio-stream`` reach the decoder through the CLI.
"""

from __future__ import annotations

import pyarrow.parquet as pq
from _reliability_helpers import VIDEOS, check_exactly_once, parts

TINY = ["--model", "multimodal", "--random-init", "--tiny", "--no-progress", "--num-workers", "1"]
BROKEN = VIDEOS / "broken"
NASA = VIDEOS / "torchcodec__nasa_13013.mp4"  # 2 video streams + 2 audio streams (8 kHz, 16 kHz)
TRUNCATED = ("truncated_mid__moviepy_smpte-2997.mp4", "truncated_tail__bbb.avi")


def run_cli(*args) -> int:
    from jobs.cli import main

    return main([str(a) for a in args])


def rows_by_file(out):
    by: dict[str, list[dict]] = {}
    for r in pq.read_table(parts(out)).to_pylist():
        by.setdefault(r["source"].rsplit("/", 1)[-1], []).append(r)
    return {k: sorted(v, key=lambda r: r["clip_index"] if r["clip_index"] is not None else -1)
            for k, v in by.items()}


def test_truncated_videos_give_partial_flagged_rows(ray_local, tmp_path):
    out = tmp_path / "out"
    assert run_cli("video", "--input", BROKEN, "--output", out, *TINY, "--clips-per-video", 0,
                   "--batch-size", 4) == 0
    check_exactly_once(out)
    by = rows_by_file(out)
    for name in TRUNCATED:
        clips = by[name]
        assert len(clips) > 1 and all(c["error"] is None for c in clips), clips
        assert [c["partial"] for c in clips] == [False] * (len(clips) - 1) + [True], name
        last = clips[-1]
        assert 0 < last["num_valid_frames"] < 16 and last["warning"], last  # says why it is partial
    for name, rows in by.items():  # the files that yield nothing stay single error rows (reasons: test_job_video)
        if name not in TRUNCATED:
            assert len(rows) == 1 and rows[0]["error_type"] and rows[0]["partial"] is None


def test_stream_selection_reaches_the_decoder(ray_local, tmp_path):
    results = {}
    for stream in (0, 1):
        out = tmp_path / f"out{stream}"
        assert run_cli("video", "--input", NASA, "--output", out, *TINY, "--clips-per-video", 1,
                       "--video-stream", stream, "--audio-stream", stream) == 0
        check_exactly_once(out)
        (row,) = rows_by_file(out)[NASA.name]
        assert row["error"] is None and row["has_audio"]
        results[stream] = row
    a, b = results[0], results[1]
    assert a["id"] == b["id"]  # the same input ...
    assert a["psnr_video"] != b["psnr_video"]  # ... but other frames
    assert a["psnr_audio"] != b["psnr_audio"]  # ... and other audio
    # a stream the file does not have is an error row, not a silent fallback to stream 0 (the only input
    # failed, so the job exits 1; the output is still complete)
    out = tmp_path / "out2"
    assert run_cli("video", "--input", NASA, "--output", out, *TINY, "--clips-per-video", 1,
                   "--video-stream", 2) == 1
    check_exactly_once(out)
    (row,) = rows_by_file(out)[NASA.name]
    assert row["error_type"] == "stream_missing", row
