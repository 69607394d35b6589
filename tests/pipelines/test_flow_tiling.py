import itertools

import pytest
import torch

from pipelines.stages.flow_tiling import (
    PERCEIVER_FLOW_TILE,
    flow_model_inputs,
    tile_starts,
    tile_weights,
    tiled_flow,
)

SHIFT_X = 3.0


def coordinate_frames(B, H, W):
    """Frames whose pixels carry their own absolute coordinates: channel 0 = x, channel 1 = y,
    channel 2 = pair index. frame2's x channel is shifted by SHIFT_X."""
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                          indexing="ij")
    f1 = torch.stack([torch.stack([x, y, torch.full_like(x, b)]) for b in range(B)])  # (B, 3, H, W)
    f2 = f1.clone()
    f2[:, 0] += SHIFT_X
    return f1, f2


def field(x, y, b):
    """A smooth flow field of absolute position (and pair index), (..., 2)."""
    u = torch.sin(x / 37.0) * 4 + 0.01 * y + b
    v = torch.cos(y / 23.0) * 2 - 0.003 * x
    return torch.stack([u, v], dim=-1)


def coordinate_predictor(calls):
    """Reads the coordinates from its tiles: any misplaced tile or frame1/frame2 misalignment
    changes the answer."""
    def predict(t1, t2):
        calls.append(t1.shape)
        x, y, b = t1[:, 0], t1[:, 1], t1[:, 2]
        flow = field(x, y, b)  # (N, th, tw, 2)
        flow[..., 0] += t2[:, 0] - t1[:, 0]  # = SHIFT_X where frames are aligned
        return flow
    return predict


@pytest.mark.parametrize("H, W", [(436, 1024), (375, 1242), (50, 50), PERCEIVER_FLOW_TILE])
def test_blend_reproduces_known_field(H, W):
    f1, f2 = coordinate_frames(2, H, W)
    calls = []
    out = tiled_flow(f1, f2, coordinate_predictor(calls), batch_size=4)
    assert out.shape == (2, H, W, 2)
    x, y, b = f1[:, 0], f1[:, 1], f1[:, 2]
    expected = field(x, y, b)
    expected[..., 0] += SHIFT_X
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert all(s[0] <= 4 and tuple(s[2:]) == PERCEIVER_FLOW_TILE for s in calls)


def test_tile_counts_and_batching():
    f1, f2 = coordinate_frames(1, 436, 1024)
    calls = []
    tiled_flow(f1, f2, coordinate_predictor(calls), batch_size=4)
    # rows [0, 68] x columns [0, 264, 528] -> 6 tiles in calls of 4 and 2
    assert [s[0] for s in calls] == [4, 2]
    calls.clear()
    f1, f2 = coordinate_frames(1, *PERCEIVER_FLOW_TILE)
    tiled_flow(f1, f2, coordinate_predictor(calls))
    assert [s[0] for s in calls] == [1]


def test_constant_flow_and_inputs_unchanged():
    f1 = torch.rand(1, 3, 400, 700)
    f2 = torch.rand(1, 3, 400, 700)
    c1, c2 = f1.clone(), f2.clone()
    const = torch.tensor([1.25, -7.5])
    out = tiled_flow(f1, f2, lambda a, b: const.expand(a.shape[0], a.shape[2], a.shape[3], 2).clone())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, const.expand_as(out), atol=1e-6, rtol=0)
    assert torch.equal(f1, c1) and torch.equal(f2, c2)


def test_batched_equals_unbatched():
    f1, f2 = torch.rand(2, 3, 380, 520), torch.rand(2, 3, 380, 520)

    def predict(a, b):  # depends on the pixels, so tiles must be cut from the right pair
        return torch.stack([a.mean(1) * 3 - b[:, 0], a[:, 2] - b.mean(1)], dim=-1)

    both = tiled_flow(f1, f2, predict, batch_size=3)
    one = torch.cat([tiled_flow(f1[i:i + 1], f2[i:i + 1], predict, batch_size=1) for i in range(2)])
    torch.testing.assert_close(both, one)


@pytest.mark.parametrize("size, tile, overlap", list(itertools.product(
    [368, 369, 400, 436, 735, 736, 1024, 1242, 3000], [368], [0, 20, 100, 367])))
def test_tiles_cover_with_min_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == size
    assert starts == sorted(set(starts))
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def test_weights_positive_and_sum_never_zero():
    w = tile_weights(PERCEIVER_FLOW_TILE)
    assert w.shape == PERCEIVER_FLOW_TILE and w.min() >= 1
    assert w[0, 0] == 1 and w[184, 248] == 184  # peak in the middle, distance to border + 1
    total = torch.zeros(1024 + 20, 1242 + 20)
    for y in tile_starts(1044, 368, 20):
        for x in tile_starts(1262, 496, 20):
            total[y:y + 368, x:x + 496] += w
    assert total.min() >= 1


def test_bad_arguments():
    f = torch.zeros(1, 3, 10, 10)
    with pytest.raises(ValueError):
        tiled_flow(f, torch.zeros(1, 3, 10, 11), lambda a, b: None)
    with pytest.raises(ValueError):  # predictor with the wrong output shape
        tiled_flow(f, f, lambda a, b: torch.zeros(a.shape[0], 2, *a.shape[2:]))
    with pytest.raises(ValueError):
        tile_starts(500, 368, 368)


def test_flow_model_inputs_order_matches_explicit_loop():
    torch.manual_seed(0)
    B, H, W = 2, 4, 5
    f1 = torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8)
    f2 = torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8)
    out = flow_model_inputs(f1, f2)
    assert out.shape == (B, 2, 27, H, W) and out.dtype == torch.float32

    expected = torch.zeros(B, 2, 27, H, W)
    for b, t in itertools.product(range(B), range(2)):
        frame = (f1, f2)[t][b].float() / 255 * 2 - 1
        padded = torch.zeros(3, H + 2, W + 2)  # zero padding after scaling
        padded[:, 1:-1, 1:-1] = frame
        for r, c, ch in itertools.product(range(3), range(3), range(3)):
            feature = (r * 3 + c) * 3 + ch  # (kernel row, kernel col, colour), colour fastest
            expected[b, t, feature] = padded[ch, r:r + H, c:c + W]
    torch.testing.assert_close(out, expected)
    # the centre tap (row 1, col 1) is the pixel itself
    torch.testing.assert_close(out[:, 0, 12:15], f1.float() / 255 * 2 - 1)
    assert out.min() >= -1 and out.max() <= 1
