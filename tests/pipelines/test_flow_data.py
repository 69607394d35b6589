"""pipelines.readers.flow_data: GT readers/writers, layout discovery on synthetic trees, video frame pairs.

FlyingChairs / KITTI / Middlebury data are research-only, so their layouts are rebuilt here from
tiny synthetic files; only the CC-BY Sintel frames are bundled (tests/data/flow/sintel).
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pipelines.readers.flow_data import (
    FLO_MAGIC,
    FlowFormatError,
    FlowPair,
    discover_flow_pairs,
    flo_valid,
    load_pair,
    read_flo,
    read_kitti_flow_png,
    video_frame_pairs,
    write_flo,
    write_kitti_flow_png,
)
from pipelines.readers.video_decode import VideoDecodeError

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED_FLOW = Path(os.environ.get("PERCEIVER_SAMPLE_DATA", "/work/shared/data")) / "flow"
H, W = 6, 8


def random_flow(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-20, 20, (h, w, 2)).astype(np.float32)


def write_image(path: Path, seed: int, h: int = H, w: int = W) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # PNG / PPM (lossless) by suffix
    return pixels


def put_flo(path: Path, flow: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_flo(path, flow)


def test_flo_round_trip(tmp_path):
    flow = random_flow(0)
    write_flo(tmp_path / "a.flo", flow)
    data = (tmp_path / "a.flo").read_bytes()
    assert len(data) == 12 + H * W * 8 and np.frombuffer(data[:4], "<f4")[0] == FLO_MAGIC
    out = read_flo(tmp_path / "a.flo")
    assert out.shape == (H, W, 2) and out.dtype == np.float32 and out.flags.writeable
    np.testing.assert_array_equal(out, flow)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: b"PIEH"[::-1] + d[4:], "magic"),
    (lambda d: d[:-8], "expected"),
    (lambda d: d + b"\0" * 8, "expected"),
    (lambda d: d[:7], "too short"),
    (lambda d: d[:4] + np.array([-1, 5], "<i4").tobytes() + d[12:], "implausible"),
])
def test_read_flo_rejects_bad_files(tmp_path, mutate, message):
    write_flo(tmp_path / "a.flo", random_flow(1))
    (tmp_path / "b.flo").write_bytes(mutate((tmp_path / "a.flo").read_bytes()))
    with pytest.raises(FlowFormatError, match=message):
        read_flo(tmp_path / "b.flo")


def test_write_flo_checks_shape(tmp_path):
    with pytest.raises(ValueError):
        write_flo(tmp_path / "a.flo", np.zeros((4, 4, 3), np.float32))


def test_unknown_flow_marker_is_invalid():
    flow = random_flow(2)
    flow[0, 0] = 1.67e9  # Middlebury's unknown value
    flow[1, 1, 1] = -2e9
    flow[2, 2, 0] = np.nan
    valid = flo_valid(flow)
    assert valid.sum() == H * W - 3 and not valid[0, 0] and not valid[1, 1] and not valid[2, 2]


def test_kitti_png_round_trip(tmp_path):
    flow = np.round(random_flow(3) * 64) / 64  # KITTI stores 1/64 px steps
    valid = np.random.default_rng(3).random((H, W)) > 0.3
    write_kitti_flow_png(tmp_path / "f.png", flow, valid)
    out, out_valid = read_kitti_flow_png(tmp_path / "f.png")
    assert out.shape == (H, W, 2) and out.dtype == np.float32 and out_valid.dtype == bool
    np.testing.assert_array_equal(out_valid, valid)
    np.testing.assert_array_equal(out[valid], flow[valid])
    assert (out[~valid] == -512).all()  # R = G = 0 where invalid
    assert Image.open(tmp_path / "f.png").mode == "RGB"  # Pillow would drop the low 8 bits


def test_kitti_reader_rejects_8bit_png(tmp_path):
    write_image(tmp_path / "f.png", 4)
    with pytest.raises(FlowFormatError, match="16-bit"):
        read_kitti_flow_png(tmp_path / "f.png")


@pytest.fixture()
def layouts(tmp_path) -> Path:
    """One tiny tree per supported layout, with GT written by the module's writers."""
    root = tmp_path / "flowdata"
    for n in (1, 2, 3):  # MPI-Sintel: training/clean/<scene>/frame_000N.png + training/flow/<scene>/*.flo
        write_image(root / f"sintel/training/clean/alley/frame_{n:04d}.png", n)
        write_image(root / f"sintel/training/occlusions/alley/frame_{n:04d}.png", 10 + n)  # masks, not frames
    for n in (1, 2):
        put_flo(root / f"sintel/training/flow/alley/frame_{n:04d}.flo", random_flow(n))
    for i in (0, 1):  # KITTI 2015: image_2/00000i_1{0,1}.png, GT flow_occ/00000i_10.png for 000000 only
        write_image(root / f"kitti/training/image_2/{i:06d}_10.png", 20 + i)
        write_image(root / f"kitti/training/image_2/{i:06d}_11.png", 30 + i)
    (root / "kitti/training/flow_occ").mkdir()
    write_kitti_flow_png(root / "kitti/training/flow_occ/000000_10.png", np.full((H, W, 2), 1.5))
    write_image(root / "kitti_flat/frame1.png", 40)  # OpticalFlowToolkit's flat KITTI sample
    write_image(root / "kitti_flat/frame2.png", 41)
    write_kitti_flow_png(root / "kitti_flat/flow_gt.png", np.full((H, W, 2), -2.0))
    for n in (7, 8, 9, 10, 11):  # Middlebury: other-data/<scene>/frameNN.png, other-gt-flow/<scene>/flow10.flo
        write_image(root / f"middlebury/other-data/Whale/frame{n:02d}.png", 50 + n)
    unknown = random_flow(10)
    unknown[0, :3] = 1.67e9
    put_flo(root / "middlebury/other-gt-flow/Whale/flow10.flo", unknown)
    write_image(root / "chairs/00001-img0.ppm", 60)  # FlyingChairs release naming
    write_image(root / "chairs/00001-img1.ppm", 61)
    put_flo(root / "chairs/00001-gt.flo", random_flow(60))
    write_image(root / "chairs/00002-img0.ppm", 62)  # pair without GT
    write_image(root / "chairs/00002-img1.ppm", 63)
    write_image(root / "chairs_mmflow/00001_img1.ppm", 64)  # mmflow fixture naming
    write_image(root / "chairs_mmflow/00001_img2.ppm", 65)
    put_flo(root / "chairs_mmflow/00001_flow.flo", random_flow(64))
    for name in ("shot_1.png", "shot_2.png", "shot_10.png"):  # any folder of frames: natural order
        write_image(root / "frames" / name, 70 + len(name))
    write_image(root / ".hidden/a_1.png", 80)
    write_image(root / ".hidden/a_2.png", 81)
    return root


def test_discover_every_layout(layouts):
    pairs = discover_flow_pairs(layouts)
    got = {p.pair_id: (p.layout, Path(p.frame2_path).name, p.flow_path and Path(p.flow_path).name, p.flow_format)
           for p in pairs}
    assert got == {
        "sintel/training/clean/alley/frame_0001": ("sintel", "frame_0002.png", "frame_0001.flo", "flo"),
        "sintel/training/clean/alley/frame_0002": ("sintel", "frame_0003.png", "frame_0002.flo", "flo"),
        "kitti/training/image_2/000000_10": ("kitti", "000000_11.png", "000000_10.png", "kitti_png"),
        "kitti/training/image_2/000001_10": ("kitti", "000001_11.png", None, None),
        "kitti_flat/frame1": ("kitti", "frame2.png", "flow_gt.png", "kitti_png"),
        "middlebury/other-data/Whale/frame07": ("middlebury", "frame08.png", None, None),
        "middlebury/other-data/Whale/frame08": ("middlebury", "frame09.png", None, None),
        "middlebury/other-data/Whale/frame09": ("middlebury", "frame10.png", None, None),
        "middlebury/other-data/Whale/frame10": ("middlebury", "frame11.png", "flow10.flo", "flo"),
        "chairs/00001-img0": ("flyingchairs", "00001-img1.ppm", "00001-gt.flo", "flo"),
        "chairs/00002-img0": ("flyingchairs", "00002-img1.ppm", None, None),
        "chairs_mmflow/00001_img1": ("flyingchairs", "00001_img2.ppm", "00001_flow.flo", "flo"),
        "frames/shot_1": ("frames", "shot_2.png", None, None),
        "frames/shot_2": ("frames", "shot_10.png", None, None),
    }
    assert [p.pair_id for p in pairs] == sorted(got)  # sorted, stable order
    assert discover_flow_pairs(layouts) == pairs


def test_load_pair_values(layouts):
    pairs = {p.pair_id: p for p in discover_flow_pairs(layouts)}
    img1, img2, flow, valid = load_pair(pairs["sintel/training/clean/alley/frame_0002"])
    assert img1.shape == img2.shape == (H, W, 3) and img1.dtype == np.uint8
    frame1 = pairs["sintel/training/clean/alley/frame_0002"].frame1_path
    np.testing.assert_array_equal(img1, np.asarray(Image.open(frame1)))
    np.testing.assert_array_equal(flow, random_flow(2))
    assert valid.all()

    loaded = load_pair(pairs["middlebury/other-data/Whale/frame10"])
    assert loaded.valid.sum() == H * W - 3 and not loaded.valid[0, :3].any()
    assert (loaded.flow[0, :3] == 0).all()  # unknown flow is zeroed, the mask carries it

    kitti = load_pair(pairs["kitti/training/image_2/000000_10"])
    assert kitti.valid.all() and (kitti.flow == 1.5).all()
    assert (load_pair(pairs["kitti_flat/frame1"]).flow == -2.0).all()

    no_gt = load_pair(pairs["frames/shot_1"])
    assert no_gt.flow is None and no_gt.valid is None


def test_load_pair_rejects_mismatched_sizes(tmp_path):
    write_image(tmp_path / "frame1.png", 1)
    write_image(tmp_path / "frame2.png", 2)
    write_flo(tmp_path / "flow.flo", random_flow(0, H + 1, W))
    pair = FlowPair("x", str(tmp_path / "frame1.png"), str(tmp_path / "frame2.png"), str(tmp_path / "flow.flo"),
                    "flo", "frames")
    with pytest.raises(FlowFormatError, match="does not match"):
        load_pair(pair)


def test_discover_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        discover_flow_pairs(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError):
        discover_flow_pairs(tmp_path / "file.txt")
    assert discover_flow_pairs(tmp_path) == []


def test_bundled_sintel_frames():
    (pair,) = discover_flow_pairs(DATA / "flow")
    assert (pair.pair_id, pair.layout, pair.flow_path) == ("sintel/frame_0016", "sintel", None)
    img1, img2, flow, valid = load_pair(pair)
    assert img1.shape == img2.shape == (436, 1024, 3) and flow is None and valid is None
    assert np.abs(img1.astype(int) - img2).mean() > 1  # consecutive but different frames


def test_video_frame_pairs_indices_and_pixels():
    path = DATA / "videos/torchcodec__h265_video.mp4"  # 10 frames at 10 fps
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    pairs = list(video_frame_pairs(path, stride=3, gap=2))
    assert [(p.pair_index, p.frame1_index) for p in pairs] == [(0, 0), (1, 3), (2, 6)]
    times = [t for p in pairs for t in (p.time1_s, p.time2_s)]
    assert times == pytest.approx([0.0, 0.2, 0.3, 0.5, 0.6, 0.8])
    for p in pairs:
        np.testing.assert_array_equal(p.frame1, frames[p.frame1_index])
        np.testing.assert_array_equal(p.frame2, frames[p.frame1_index + 2])
    assert len(list(video_frame_pairs(path))) == 9
    assert len(list(video_frame_pairs(path, max_pairs=4))) == 4


def test_video_frame_pairs_truncated_file_raises_after_partial_output():
    path = DATA / "videos/broken/truncated_mid__moviepy_smpte-2997.mp4"
    got = []
    with pytest.raises(VideoDecodeError) as info:
        for pair in video_frame_pairs(path, stride=50):
            got.append(pair.frame1_index)
    assert info.value.reason == "decode_error" and got == [0, 50, 100]
    with pytest.raises(VideoDecodeError) as info:
        next(video_frame_pairs(DATA / "videos/broken/moviepy__result_empty.webm"))
    assert info.value.reason == "empty_file"


@pytest.mark.skipif(not SHARED_FLOW.is_dir(), reason=f"sample flow data not present at {SHARED_FLOW}")
def test_real_research_samples_when_available():
    pairs = {p.pair_id: p for p in discover_flow_pairs(SHARED_FLOW)}
    kitti = load_pair(pairs["kitti/frame1"])
    assert kitti.flow.shape == (375, 1242, 2) and kitti.valid.sum() == 75453
    middlebury = load_pair(pairs["middlebury_rubberwhale/frame10"])
    assert (~middlebury.valid).sum() == 3622 and np.abs(middlebury.flow).max() < 5
    assert pairs["flyingchairs/0000000-img0"].layout == "flyingchairs"
    assert pairs["flyingchairs_crop50/00001_img1"].flow_format == "flo"


def test_discovery_and_loading_through_s3(layouts, s3):
    """The same tree on an S3 API server: the same pairs (ids, layouts, GT) as locally, paths as URIs, and
    the same decoded frames and ground truth."""
    bucket = s3.new_bucket()
    uri = s3.upload_dir(str(layouts), bucket, "flowdata")
    local = discover_flow_pairs(layouts)
    remote = discover_flow_pairs(uri)
    assert [(p.pair_id, p.layout, p.flow_format) for p in remote] == [(p.pair_id, p.layout, p.flow_format)
                                                                      for p in local]
    for r, p in zip(remote, local):
        for remote_path, local_path in ((r.frame1_path, p.frame1_path), (r.frame2_path, p.frame2_path),
                                        (r.flow_path, p.flow_path)):
            if local_path is None:
                assert remote_path is None
                continue
            assert remote_path == f"{uri}/{Path(local_path).relative_to(layouts).as_posix()}"
        loaded_remote, loaded_local = load_pair(r), load_pair(p)
        for a, b in zip(loaded_remote, loaded_local):
            if b is None:
                assert a is None
            else:
                np.testing.assert_array_equal(a, b)


def test_readers_take_uris(tmp_path, s3):
    bucket = s3.new_bucket()
    flow = random_flow(5)
    write_flo(tmp_path / "a.flo", flow)
    write_kitti_flow_png(tmp_path / "k.png", np.round(flow * 64) / 64)
    uri = s3.upload_dir(str(tmp_path), bucket, "gt")
    np.testing.assert_array_equal(read_flo(f"{uri}/a.flo"), flow)
    np.testing.assert_array_equal(read_kitti_flow_png(f"{uri}/k.png")[0], np.round(flow * 64) / 64)
    (tmp_path / "bad.flo").write_bytes(b"x" * 20)
    s3.upload_dir(str(tmp_path), bucket, "gt")
    with pytest.raises(FlowFormatError, match=f"{uri}/bad.flo: bad .flo magic"):
        read_flo(f"{uri}/bad.flo")


def test_pairs_stream_folder_by_folder(layouts, monkeypatch):
    """The first pairs come before the walk has seen the whole tree (memory: one folder's names)."""
    from pipelines import storage
    from pipelines.readers import flow_data

    total = sum(1 for _ in storage.walk_files(storage.resolve(layouts)))
    consumed = []
    real_walk = storage.walk_files

    def counting_walk(root, *args, **kwargs):
        for entry in real_walk(root, *args, **kwargs):
            consumed.append(entry.location.path)
            yield entry

    monkeypatch.setattr(flow_data.storage, "walk_files", counting_walk)
    pairs = flow_data.iter_flow_pairs(layouts)
    first = next(pairs)
    assert first.pair_id == "chairs/00001-img0" and len(consumed) < total / 2
    rest = list(pairs)
    assert len(consumed) == total
    assert sorted([first, *rest], key=lambda p: p.pair_id) == discover_flow_pairs(layouts)


def test_output_folder_inside_the_input_is_not_searched(layouts):
    from pipelines.readers.flow_data import iter_flow_pairs

    for n in (1, 2):  # what a flow job writes: pictures and .flo sidecars
        write_image(layouts / "out" / "_pictures" / f"pair_{n}.png", 90 + n)
    found = {p.pair_id for p in iter_flow_pairs(layouts)}
    assert "out/_pictures/pair_1" in found  # a folder of frames, unless it is the output
    assert {p.pair_id for p in iter_flow_pairs(layouts, exclude=str(layouts / "out"))} == found - {
        "out/_pictures/pair_1"}
