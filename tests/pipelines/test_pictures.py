import numpy as np
import pytest
import torch
from torchvision.io import decode_png

from pipelines.stages.pictures import clip_strip, flow_image, png_bytes, safe_filename, strip_frame_indices


def read_png(data: bytes) -> torch.Tensor:
    return decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8)).permute(1, 2, 0)  # (H, W, 3)


CRAFTED_IDS = ["../../etc/passwd", "a/b", "a\\b", "\x00x", "", ".", "..", "...", ".hidden",
               "-rf", "/abs/path", "C:\\win\\x", "x" * 1000, "évènement/視頻", "\udcff", 12345]


@pytest.mark.parametrize("id", CRAFTED_IDS)
def test_safe_filename_stays_inside_folder(tmp_path, id):
    name = safe_filename(id)
    assert name and len(name) <= 100
    assert "/" not in name and "\\" not in name and "\x00" not in name and ".." not in name
    assert not name.startswith((".", "-"))
    path = tmp_path / f"{name}.png"
    assert path.resolve().parent == tmp_path.resolve()
    path.write_bytes(png_bytes(torch.zeros((2, 2, 3), dtype=torch.uint8)))
    assert path.exists()


def test_safe_filename_keeps_ids_apart_and_readable():
    assert safe_filename("a/b") != safe_filename("a_b")
    assert safe_filename("") != safe_filename(".")
    assert safe_filename("video_001.mp4").startswith("video_001.mp4-")
    assert safe_filename("same") == safe_filename("same")
    names = {safe_filename(i) for i in CRAFTED_IDS}
    assert len(names) == len(CRAFTED_IDS)


def test_clip_strip_layout():
    T, H, W = 10, 4, 3
    orig = torch.arange(T, dtype=torch.uint8)[:, None, None, None].expand(T, H, W, 3).clone()
    rec = orig + 100
    img = read_png(png_bytes(clip_strip(orig, rec, max_frames=4)))
    assert img.shape == (2 * H, 4 * W, 3)
    picked = [int(img[0, j * W, 0]) for j in range(4)]
    assert picked == strip_frame_indices(T, 4) == [0, 3, 6, 9]
    assert [int(img[H, j * W, 0]) for j in range(4)] == [p + 100 for p in picked]
    short = read_png(png_bytes(clip_strip(orig[:2], rec[:2], max_frames=4)))
    assert short.shape == (2 * H, 2 * W, 3)


def test_flow_png():
    flow = np.zeros((6, 8, 2), np.float32)
    flow[:, 4:] = [3.0, 0.0]
    flow[0, 0] = [1.67e9, 1.67e9]  # unknown, masked
    flow[1, 0] = [np.nan, 0]       # non-finite is drawn as zero
    valid = np.abs(flow).max(-1) < 1e9
    img = read_png(png_bytes(flow_image(flow, valid=valid)))
    assert img.shape == (6, 8, 3) and img.dtype == torch.uint8
    assert torch.equal(img, flow_image(torch.from_numpy(flow), valid))
    assert (img[:, :4] == 255).all()  # zero flow is white on torchvision's wheel
    assert not (img[:, 4:] == 255).all()
    with pytest.raises(ValueError):
        flow_image(np.zeros((2, 6, 8)))
