"""End to end: ``perceiver-jobs video`` on local Ray with the tiny multimodal preset over tests/data/videos."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from _job_helpers import (
    DATA,
    TINY,
    check_output,
    check_rerun_adds_nothing,
    manifest_ids,
    part_names,
    run_cli,
    summary,
)

from pipelines.batch import schemas

VIDEOS = DATA / "videos"
# Files in videos/broken/ that yield no clip at all, by name prefix, and the reason they must report.
BROKEN = {"moviepy__result_empty": "empty_file", "truncated_no_moov": "open_failed"}
NO_AUDIO = {"torchcodec__av1_video.mkv", "torchcodec__h265_video.mp4"}


@pytest.fixture(scope="module")
def video_run(ray_local, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("video")
    labels = tmp / "labels.csv"
    labels.write_text("file,label_index\ntorchcodec__nasa_13013.mp4,3\nmoviepy__big_buck_bunny_432_433.webm,1\n")
    out = tmp / "out"
    args = ["video", "--input", VIDEOS, "--output", out, "--model", "multimodal", *TINY, "--clips-per-video", "2",
            "--batch-size", "4", "--pictures", "--labels-file", labels, "--commit-interval", "0"]
    assert run_cli(*args) == 0
    # A job killed half-way leaves some shards committed (their part files) and no _SUCCESS: remove three
    # shards' parts, then the rerun must redo exactly those three inputs (one video per shard here).
    for name in sorted(part_names(out))[-3:]:
        (out / name).unlink()
    (out / "_SUCCESS").unlink()
    first_parts = part_names(out)
    first_rows = pq.read_table([str(out / n) for n in first_parts]).num_rows
    assert run_cli(*args) == 0
    return out, args, first_parts, first_rows


def test_every_video_accounted_once(video_run):
    out, _, first_parts, first_rows = video_run
    table = check_output(out, schemas.VIDEO, manifest_ids(out), "input_id")
    assert len(manifest_ids(out)) == 8  # 4 good + 4 broken files
    assert first_parts < part_names(out)  # the resume only added parts
    assert table.num_rows > first_rows
    s = summary(out)
    assert s["run"]["processed_this_run"] == 3  # 8 files, 5 done by the first run
    assert s["counts"]["inputs_failed"] == len(BROKEN)


def test_rows(video_run):
    out = video_run[0]
    rows = check_output(out, schemas.VIDEO, manifest_ids(out), "input_id").to_pylist()
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(r["source"].rsplit("/", 1)[-1], []).append(r)
    broken = {n: reason for n in by_file for prefix, reason in BROKEN.items() if n.startswith(prefix)}
    assert len(broken) == len(BROKEN)
    for name, reason in broken.items():  # one error row carrying id, source and reason
        (row,) = by_file[name]
        assert row["error_type"] == reason and name in row["error"]
        assert row["id"] == row["input_id"] and row["clip_index"] is None and row["psnr_video"] is None
    good = [n for n in by_file if n not in broken]
    assert len(good) == 6  # incl. the two truncated files that still decode some clips
    for name in good:
        clips = sorted(by_file[name], key=lambda r: r["clip_index"])
        assert [c["clip_index"] for c in clips] == list(range(len(clips))) and 1 <= len(clips) <= 2
        for c in clips:
            assert c["error"] is None and c["id"] == f"{c['input_id']}:{c['clip_index']}"
            assert math.isfinite(c["psnr_video"]) and c["start_time_s"] >= 0
            assert c["has_audio"] == (name not in NO_AUDIO)
            assert (c["psnr_audio"] is None) == (name in NO_AUDIO)
            assert len(c["top_k_ids"]) == len(c["top_k_labels"]) == len(c["top_k_scores"]) == 5  # tiny: 5 labels
            assert c["top_k_labels"][0] == f"LABEL_{c['top_k_ids'][0]}"
            assert np.all(np.diff(c["top_k_scores"]) <= 0) and abs(sum(c["top_k_scores"]) - 1) < 1e-4
            assert (out / c["picture"]).is_file() and c["picture"].startswith("_pictures/")
    assert {r["label_index"] for r in by_file["torchcodec__nasa_13013.mp4"]} == {3}
    assert "top1_accuracy" in summary(out)["metrics"] and "psnr_video_db" in summary(out)["metrics"]


def test_pandas_reads_it(video_run):
    import pandas as pd

    frame = pd.read_parquet(video_run[0])
    assert {"id", "input_id", "source", "clip_index", "psnr_video", "top_k_labels", "error"} <= set(frame.columns)


def test_rerun_adds_nothing(video_run):
    out, args, *_ = video_run
    check_rerun_adds_nothing(out, args)


def test_changed_options_refuse_the_folder(video_run, capsys):
    _, args, *_ = video_run
    changed = list(args)
    changed[changed.index("--clips-per-video") + 1] = "3"
    assert run_cli(*changed) == 2
    assert "another run" in capsys.readouterr().err


def test_output_folder_reads_in_duckdb_and_polars(video_run):
    """The data glob ``out/*.parquet`` holds only data parts: DuckDB and Polars see the rows pyarrow sees."""
    duckdb = pytest.importorskip("duckdb")
    pl = pytest.importorskip("polars")
    out = video_run[0]
    expected = sorted(pq.read_table(out).column("id").to_pylist())
    glob = str(out / "*.parquet")
    assert sorted(r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{glob}')").fetchall()) == expected
    assert sorted(pl.read_parquet(glob)["id"].to_list()) == expected
    assert sorted(pl.scan_parquet(glob).select("id").collect()["id"].to_list()) == expected


def test_every_input_failed_exits_nonzero(ray_local, tmp_path, capsys):
    """Accounting can be complete while nothing succeeded (e.g. every path missing on the workers): the
    error rows and the summary are written, but the job exits 1 with one line naming the error types."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.mp4", "b.webm"):
        (inputs / name).write_bytes(b"")
    out = tmp_path / "out"
    assert run_cli("video", "--input", inputs, "--output", out, "--model", "multimodal", *TINY) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "perceiver-jobs video: error: every one of the 2 inputs failed (empty_file x2)"
    s = summary(out)
    assert s["complete"] and s["counts"]["inputs_failed"] == 2 and s["counts"]["inputs_ok"] == 0
    assert sorted(pq.read_table(out).column("error_type").to_pylist()) == ["empty_file", "empty_file"]


def test_odd_names_and_duplicate_names_under_two_roots(ray_local, tmp_path):
    """A Latin-1 file name (not valid UTF-8) is processed like any other, and ``--input day1 day2`` both
    holding ``cam.mp4`` gives two inputs with two ids (before: the whole job was refused)."""
    import os
    import shutil

    source = VIDEOS / "torchcodec__h265_video.mp4"
    for day in ("day1", "day2"):  # copies, not links: links to one file are one input (deduplicated)
        (tmp_path / day).mkdir()
        shutil.copy(source, tmp_path / day / "cam.mp4")
    shutil.copy(source, os.path.join(str(tmp_path / "day1"), os.fsdecode(b"caf\xe9.mp4")))
    out = tmp_path / "out"
    assert run_cli("video", "--input", tmp_path / "day1", tmp_path / "day2", "--output", out, "--model",
                   "multimodal", *TINY, "--clips-per-video", "1") == 0
    table = check_output(out, schemas.VIDEO, manifest_ids(out), "input_id")
    assert len(manifest_ids(out)) == 3 and table.num_rows == 3
    assert all(e is None for e in table.column("error").to_pylist())
    assert any("caf%E9.mp4" in s for s in table.column("source").to_pylist())


# ---------------------------------------------------------------------------------------------------------------
# Rows against the model: a few clips of the job's output recomputed here, decoded with PyAV directly (not
# through pipelines.readers.video_decode) and run through the same seeded tiny model here, one clip at a time.
T, SIDE, S = 4, 32, 64  # the tiny multimodal preset: 4 frames of 32 x 32, 64 audio samples per frame
AUDIO_RATE = 25 * S  # 1,600 Hz: S samples span one 25 fps frame
RECOMPUTED = {"torchcodec__av1_video.mkv": 2, "torchcodec__h265_video.mp4": 2, "torchcodec__nasa_13013.mp4": 2}


def pyav_frames(path, n_out: int) -> np.ndarray:
    """(n_out, 32, 32, 3) uint8: the video on a 25 fps grid from its first frame, each grid time showing the last
    frame at or before it (sample-and-hold); shorter side scaled to 32 (swscale bilinear in the frame's own
    format, then RGB), centre crop."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = []
        for frame in container.decode(stream):
            decoded.append((float(frame.pts * stream.time_base), frame))
            if decoded[-1][0] > decoded[0][0] + n_out / 25:
                break
        t0 = decoded[0][0]
        out = []
        for i in range(n_out):
            held = [f for t, f in decoded if t <= t0 + i / 25 + 1e-6][-1]
            scale = SIDE / min(held.height, held.width)
            h, w = max(SIDE, round(held.height * scale)), max(SIDE, round(held.width * scale))
            rgb = held.reformat(width=w, height=h, interpolation="BILINEAR").to_ndarray(format="rgb24")
            top, left = (h - SIDE) // 2, (w - SIDE) // 2
            out.append(rgb[top:top + SIDE, left:left + SIDE])
    return np.stack(out)


def pyav_audio(path, n: int) -> np.ndarray:
    """(n,) float32: the first audio stream, mono at 1,600 Hz, from t = 0 (the files used start their audio at 0);
    zeros for a file without audio."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros(n, np.float32)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        chunks = []
        for frame in container.decode(stream):
            assert frame.pts == 0 or chunks, "the reference assumes audio that starts at t = 0"
            chunks += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
            if sum(c.size for c in chunks) >= n:
                break
    return np.concatenate(chunks)[:n]


def direct_clip(model, frames: np.ndarray, audio: np.ndarray) -> dict:
    """The model on one clip, in this process: PSNR of video (peak 1) and audio (peak-to-peak 2), softmax top-5,
    the reconstruction as uint8."""
    video = torch.from_numpy(frames).double().div(255)  # (T, H, W, 3)
    inputs = {"image": video.float().permute(0, 3, 1, 2)[None], "audio": torch.from_numpy(audio)[None, :, None],
              "label": torch.zeros(1, model.config.num_labels)}
    with torch.inference_mode():
        logits = model(inputs).logits
    rec = logits["image"].double().reshape(T, SIDE, SIDE, 3).clamp(0, 1)  # the model's (B, T*H*W, 3) layout
    rec_audio = logits["audio"].double().reshape(-1).clamp(-1, 1)
    scores, ids = logits["label"].double().softmax(-1)[0].topk(5)
    return {"psnr_video": float(10 * torch.log10(1 / (rec - video).square().mean())),
            "psnr_audio": float(10 * torch.log10(4 / (rec_audio - torch.from_numpy(audio).double()).square().mean())),
            "top_k_ids": ids.tolist(), "top_k_scores": scores.tolist(),
            "rec": (rec * 255).round().to(torch.uint8).numpy()}


def test_rows_equal_the_model_on_pyav_decoded_clips(video_run):
    """PSNR (video and audio), top-k ids and scores, and both halves of the picture strip of six clips equal a
    direct model call on frames and audio decoded here: a frame-order, colour-scale, crop, audio-alignment or
    batching bug in the decode stage or the worker changes them.

    The random tiny model's scores sit near 1/5 and its reconstruction hardly depends on the frame order
    (reversing a clip moves the PSNR by 1e-6 dB, as much as float32 noise between batch sizes), so the scores
    are compared to 2e-7 (noise: 2e-8; BGR input: 3e-5) and the strip's top row, the clip as the stage decoded
    it, is what pins the frames and their order; the audio PSNR pins the audio (a 64-sample shift: 0.16 dB)."""
    from PIL import Image

    from pipelines.batch.model_workers import ModelSpec

    out = video_run[0]
    model = ModelSpec("multimodal", random_init=True, tiny=True).load()  # seed 0: the job's weights
    rows = {(r["source"].rsplit("/", 1)[-1], r["clip_index"]): r for r in pq.read_table(out).to_pylist()}
    for name, clips in RECOMPUTED.items():
        frames = pyav_frames(VIDEOS / name, clips * T)
        audio = pyav_audio(VIDEOS / name, clips * T * S)
        for k in range(clips):
            row = rows[(name, k)]
            want = direct_clip(model, frames[k * T:(k + 1) * T], audio[k * T * S:(k + 1) * T * S])
            assert row["start_time_s"] == pytest.approx(k * T / 25, abs=1e-6)
            assert row["psnr_video"] == pytest.approx(want["psnr_video"], abs=1e-4), (name, k)
            if name in NO_AUDIO:
                assert row["psnr_audio"] is None
            else:
                assert row["psnr_audio"] == pytest.approx(want["psnr_audio"], abs=1e-4), (name, k)
            assert row["top_k_ids"] == want["top_k_ids"], (name, k)
            np.testing.assert_allclose(row["top_k_scores"], want["top_k_scores"], rtol=0, atol=2e-7)
            strip = np.asarray(Image.open(out / row["picture"]).convert("RGB"))  # (2H, T*W, 3): input / output
            assert strip.shape == (2 * SIDE, T * SIDE, 3)
            original = frames[k * T:(k + 1) * T].transpose(1, 0, 2, 3).reshape(SIDE, T * SIDE, 3)
            np.testing.assert_array_equal(strip[:SIDE], original)
            reconstruction = want["rec"].transpose(1, 0, 2, 3).reshape(SIDE, T * SIDE, 3)
            assert np.abs(strip[SIDE:].astype(int) - reconstruction).max() <= 1  # rounding of x.5 only
