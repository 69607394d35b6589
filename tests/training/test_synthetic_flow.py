import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.training.synthetic_flow import SyntheticFlowSpec, bilinear_sample, make_batch, make_pair


def warp_backward(frame2: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """frame2 sampled at x + flow(x) with torch's grid_sample (an implementation independent of the generator)."""
    h, w = flow.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    f = torch.from_numpy(flow)
    grid = torch.stack([(xs + f[..., 0]) / (w - 1) * 2 - 1, (ys + f[..., 1]) / (h - 1) * 2 - 1], dim=-1)
    img = torch.from_numpy(frame2).permute(2, 0, 1)[None].float()
    return F.grid_sample(img, grid[None], mode="bilinear", align_corners=True)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("seed", range(4))
def test_warping_frame2_by_the_flow_reproduces_frame1(seed):
    spec = SyntheticFlowSpec(height=48, width=64, noise=0.0)
    pair = make_pair(spec, seed)
    warped = warp_backward(pair["frame2"], pair["flow"])
    interior = ~pair["occluded"]
    interior[:3], interior[-3:], interior[:, :3], interior[:, -3:] = False, False, False, False
    err = np.abs(warped - pair["frame1"].astype(np.float32)).mean(-1)
    zero = np.abs(pair["frame2"].astype(np.float32) - pair["frame1"].astype(np.float32)).mean(-1)
    assert interior.mean() > 0.6
    # rounding to uint8 and soft object edges leave ~1 grey level; a wrong sign or swapped (u, v) leaves ~zero error
    assert np.median(err[interior]) < 1.0
    assert err[interior].mean() < 0.35 * zero[interior].mean()


def test_flow_is_u_then_v_in_pixels():
    # pure horizontal translation: u = t, v = 0 and frame1(x) = frame2(x + t)
    spec = SyntheticFlowSpec(height=32, width=48, max_translation=3.0, max_rotation_deg=0, max_scale=0, deform=0,
                             max_objects=0, noise=0.0)
    for seed in range(20):
        pair = make_pair(spec, seed)
        u, v = pair["flow"][..., 0], pair["flow"][..., 1]
        assert np.allclose(u, u.mean(), atol=1e-5) and np.allclose(v, v.mean(), atol=1e-5)
        if abs(u.mean()) > 1.0:
            break
    shifted = bilinear_sample(pair["frame2"].astype(np.float64), *np.meshgrid(
        np.arange(48) + u.mean(), np.arange(32) + v.mean()))
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(shifted[inner] - pair["frame1"][inner]).mean() < 1.0


def test_pairs_are_reproducible_and_shaped():
    spec = SyntheticFlowSpec(height=24, width=40)
    a, b = make_pair(spec, 7), make_pair(spec, 7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(make_pair(spec, 8)["flow"], a["flow"])
    batch = make_batch(spec, [1, 2, 3])
    assert batch["frame1"].shape == (3, 24, 40, 3) and batch["frame1"].dtype == np.uint8
    assert batch["flow"].shape == (3, 24, 40, 2) and batch["flow"].dtype == np.float32
    assert batch["valid"].shape == (3, 24, 40) and batch["valid"].all()


def test_motion_magnitudes_follow_the_spec():
    flows = np.stack([make_pair(SyntheticFlowSpec(height=32, width=32, max_translation=2.0), s)["flow"]
                      for s in range(30)])
    mag = np.linalg.norm(flows, axis=-1)
    assert 0.2 < mag.mean() < 3.0 and mag.max() < 10.0
    still = make_pair(SyntheticFlowSpec(height=32, width=32, max_translation=0, max_rotation_deg=0, max_scale=0,
                                        deform=0), 0)
    assert np.abs(still["flow"]).max() == 0


def test_spec_validation():
    with pytest.raises(ValueError):
        SyntheticFlowSpec(height=4)
    with pytest.raises(ValueError):
        SyntheticFlowSpec(max_translation=-1)
