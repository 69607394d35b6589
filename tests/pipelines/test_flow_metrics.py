import math

import numpy as np
import pytest
import torch

from pipelines.metrics import (
    FlowMetrics,
    accuracy,
    endpoint_error,
    epe,
    fl_all,
    flow_error_sums,
    psnr,
    topk_correct,
)


def test_epe_of_constant_offset_is_its_norm():
    gt = torch.randn(5, 7, 2)
    pred = gt + torch.tensor([3.0, 4.0])
    assert epe(pred, gt) == pytest.approx(5.0)
    torch.testing.assert_close(endpoint_error(pred, gt), torch.full((5, 7), 5.0, dtype=torch.float64))
    assert epe(gt.numpy(), gt.numpy()) == 0.0  # numpy accepted


def test_masked_pixels_are_ignored():
    gt = np.zeros((2, 3, 2), np.float32)
    pred = np.zeros((2, 3, 2), np.float32)
    pred[0, 0] = [6, 8]  # EPE 10 on a valid pixel
    gt[1, 2] = [1.67e9, 1.67e9]  # Middlebury "unknown", masked by the caller
    valid = np.abs(gt).max(-1) < 1e9
    assert epe(pred, gt, valid) == pytest.approx(10 / 5)
    assert accuracy(pred, gt, 1, valid) == pytest.approx(4 / 5)
    assert math.isnan(epe(pred, gt, np.zeros((2, 3), bool)))


def test_accuracy_thresholds_are_strict():
    gt = torch.zeros(1, 4, 2)
    pred = torch.tensor([[[0.5, 0], [1.0, 0], [3.0, 0], [4.9, 0]]])
    s = flow_error_sums(pred, gt).means()
    assert s["acc_1px"] == 0.25  # 1.0 is not < 1
    assert s["acc_3px"] == 0.5
    assert s["acc_5px"] == 1.0


def test_fl_all_needs_both_absolute_and_relative_error():
    gt = torch.tensor([[[100.0, 0], [100.0, 0], [10.0, 0], [0.0, 0], [0.0, 0]]])
    pred = gt + torch.tensor([[[4.0, 0],    # > 3 px but 4 % of 100: inlier
                               [6.0, 0],    # > 3 px and 6 %: outlier
                               [2.9, 0],    # 29 % but < 3 px: inlier
                               [3.5, 0],    # |gt| = 0, > 3 px: outlier
                               [3.0, 0]]])  # exactly 3 px: inlier
    assert fl_all(pred, gt) == pytest.approx(2 / 5)
    valid = torch.tensor([[True, False, True, True, True]])
    assert fl_all(pred, gt, valid) == pytest.approx(1 / 4)


def test_accumulator_is_pixel_weighted():
    m = FlowMetrics()
    gt_a, gt_b = torch.zeros(1, 1, 2), torch.zeros(3, 1, 2)
    m.update(gt_a + torch.tensor([4.0, 0]), gt_a)  # 1 pixel, EPE 4
    m.update(gt_b, gt_b)                            # 3 pixels, EPE 0
    m.update(gt_b + 9, gt_b, torch.zeros(3, 1, dtype=torch.bool))  # nothing valid: adds nothing
    r = m.compute()
    assert r["epe"] == pytest.approx(1.0)           # (4 + 0) / 4 pixels
    assert r["epe_pair_mean"] == pytest.approx(2.0)  # (4 + 0) / 2 pairs
    assert r["acc_1px"] == pytest.approx(0.75)
    assert r["fl_all"] == pytest.approx(0.25)
    assert r["num_pixels"] == 4 and r["num_pairs"] == 2


def test_accumulator_batch_equals_pairs():
    torch.manual_seed(0)
    pred, gt = torch.randn(3, 6, 5, 2) * 4, torch.randn(3, 6, 5, 2) * 4
    valid = torch.rand(3, 6, 5) > 0.3
    batched, single = FlowMetrics(), FlowMetrics()
    batched.update(pred, gt, valid)
    for i in range(3):
        single.update(pred[i], gt[i], valid[i])
    assert batched.compute() == pytest.approx(single.compute())
    assert batched.compute()["epe"] == pytest.approx(epe(pred, gt, valid))


def test_psnr_per_example():
    x = torch.zeros(2, 3, 4)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB at data range 1
    out = psnr(x, y, data_range=1.0)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(20.0)
    assert out[1].item() == math.inf
    assert psnr(np.full((1, 8), 255.0), np.full((1, 8), 245.0), 255.0)[0].item() == pytest.approx(
        10 * math.log10(255**2 / 100))


def test_topk_correct_from_logits_and_indices():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.02, 0.08], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 1, 2])
    assert topk_correct(logits, labels, 1).tolist() == [False, False, True]
    assert topk_correct(logits, labels, 2).tolist() == [True, False, True]
    ranked = logits.argsort(dim=1, descending=True)  # integer: already ranked
    assert topk_correct(ranked, labels, 2).tolist() == [True, False, True]
    with pytest.raises(ValueError):
        topk_correct(logits, labels, 5)


def read_flo(path):
    data = np.fromfile(path, np.uint8)
    assert data[:4].tobytes() == b"PIEH"
    w, h = np.frombuffer(data[4:12].tobytes(), "<i4")
    return np.frombuffer(data[12:].tobytes(), "<f4").reshape(h, w, 2).copy()


def test_zero_flow_epe_of_a_flo_file_is_its_mean_valid_length(tmp_path):
    """A Middlebury-style .flo written here (bytes by hand): motions of length 5 and 10 on the two halves, the
    unknown marker (1.67e9) on 50 pixels of the left half. Zero flow's EPE is the mean length over the valid
    pixels, (250 * 5 + 300 * 10) / 550, and a prediction equal to the GT scores 0 there."""
    gt = np.zeros((20, 30, 2), np.float32)
    gt[:, :15] = (3.0, 4.0)
    gt[:, 15:] = (-6.0, 8.0)
    gt[:5, :10] = 1.67e9
    path = tmp_path / "gt.flo"
    path.write_bytes(b"PIEH" + np.array([30, 20], "<i4").tobytes() + gt.astype("<f4").tobytes())
    flow = read_flo(path)
    valid = np.abs(flow).max(-1) < 1e9
    assert (~valid).sum() == 50
    assert epe(np.zeros_like(flow), flow, valid) == pytest.approx((250 * 5 + 300 * 10) / 550, rel=1e-9)
    assert epe(np.where(valid[..., None], flow, 0), flow, valid) == 0.0
    assert accuracy(np.zeros_like(flow), flow, 6.0, valid) == pytest.approx(250 / 550)
