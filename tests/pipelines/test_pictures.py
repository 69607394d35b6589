import numpy as np
import pytest
import torch
from torchvision.io import decode_png, read_file

from pipelines.pictures import (
    flow_image,
    picture_path,
    safe_filename,
    save_clip_strip,
    save_flow_png,
    save_side_by_side,
    strip_frame_indices,
)


def read_png(path):
    return decode_png(read_file(str(path))).permute(1, 2, 0)  # (H, W, 3)


CRAFTED_IDS = ["../../etc/passwd", "a/b", "a\\b", "\x00x", "", ".", "..", "...", ".hidden",
               "-rf", "/abs/path", "C:\\win\\x", "x" * 1000, "évènement/視頻", "\udcff", 12345]


@pytest.mark.parametrize("id", CRAFTED_IDS)
def test_safe_filename_stays_inside_folder(tmp_path, id):
    name = safe_filename(id)
    assert name and len(name) <= 100
    assert "/" not in name and "\\" not in name and "\x00" not in name and ".." not in name
    assert not name.startswith((".", "-"))
    path = picture_path(tmp_path, id)
    assert path.resolve().parent == tmp_path.resolve()
    save_side_by_side(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), path)
    assert path.exists()


def test_safe_filename_keeps_ids_apart_and_readable():
    assert safe_filename("a/b") != safe_filename("a_b")
    assert safe_filename("") != safe_filename(".")
    assert safe_filename("video_001.mp4").startswith("video_001.mp4-")
    assert safe_filename("same") == safe_filename("same")
    names = {safe_filename(i) for i in CRAFTED_IDS}
    assert len(names) == len(CRAFTED_IDS)


def test_side_by_side_layout(tmp_path):
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rec = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = save_side_by_side(orig, torch.from_numpy(rec), tmp_path / "sub" / "pair.png")
    img = read_png(path).numpy()
    assert img.shape == (5, 14, 3)
    assert np.array_equal(img[:, :7], orig) and np.array_equal(img[:, 7:], rec)
    with pytest.raises(ValueError):
        save_side_by_side(orig, rec[:4], tmp_path / "bad.png")
    with pytest.raises(ValueError):
        save_side_by_side(orig.astype(np.float32), rec, tmp_path / "bad.png")


def test_clip_strip_layout(tmp_path):
    T, H, W = 10, 4, 3
    orig = torch.arange(T, dtype=torch.uint8)[:, None, None, None].expand(T, H, W, 3).clone()
    rec = orig + 100
    img = read_png(save_clip_strip(orig, rec, tmp_path / "clip.png", max_frames=4))
    assert img.shape == (2 * H, 4 * W, 3)
    picked = [int(img[0, j * W, 0]) for j in range(4)]
    assert picked == strip_frame_indices(T, 4) == [0, 3, 6, 9]
    assert [int(img[H, j * W, 0]) for j in range(4)] == [p + 100 for p in picked]
    short = read_png(save_clip_strip(orig[:2], rec[:2], tmp_path / "short.png", max_frames=4))
    assert short.shape == (2 * H, 2 * W, 3)


def test_flow_png(tmp_path):
    flow = np.zeros((6, 8, 2), np.float32)
    flow[:, 4:] = [3.0, 0.0]
    flow[0, 0] = [1.67e9, 1.67e9]  # unknown, masked
    flow[1, 0] = [np.nan, 0]       # non-finite is drawn as zero
    valid = np.abs(flow).max(-1) < 1e9
    img = read_png(save_flow_png(flow, tmp_path / "flow.png", valid=valid))
    assert img.shape == (6, 8, 3) and img.dtype == torch.uint8
    assert torch.equal(img, flow_image(torch.from_numpy(flow), valid))
    assert (img[:, :4] == 255).all()  # zero flow is white on torchvision's wheel
    assert not (img[:, 4:] == 255).all()
    with pytest.raises(ValueError):
        flow_image(np.zeros((2, 6, 8)))
