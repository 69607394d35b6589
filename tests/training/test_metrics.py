import itertools
import math

import numpy as np
import pytest
import torch

from pipelines.metrics import bits_per_byte, byte_histogram, psnr_from_mse, unigram_bits_per_byte
from pipelines.training.optim import build_optimizer, build_scheduler, warmup_cosine
from pipelines.training.reporting import MetricsCSV, add_stats, progress_line, read_metrics_csv


def test_bits_per_byte_is_nats_over_ln2():
    assert bits_per_byte(math.log(2) * 10, 10) == pytest.approx(1.0)
    assert bits_per_byte(math.log(256) * 4, 4) == pytest.approx(8.0)


def test_unigram_baseline_is_the_cross_entropy_of_the_training_distribution():
    uniform = np.ones(256)
    assert unigram_bits_per_byte(uniform * 1e6, uniform, alpha=0) == pytest.approx(8.0)
    train = np.zeros(256)
    train[[10, 20]] = [3, 1]  # p = 3/4, 1/4
    ev = np.zeros(256)
    ev[[10, 20]] = [1, 1]
    expected = -(np.log2(0.75) + np.log2(0.25)) / 2
    assert unigram_bits_per_byte(train, ev, alpha=0) == pytest.approx(expected)
    assert np.isfinite(unigram_bits_per_byte(train, np.ones(256)))  # smoothing: unseen bytes cost finite bits


def test_byte_histogram_skips_special_ids():
    ids = np.array([[0, 3, 6, 6, 7, 261]])
    counts = byte_histogram(ids)
    assert counts[0] == 2 and counts[1] == 1 and counts[255] == 1 and counts.sum() == 4


def test_psnr():
    assert float(psnr_from_mse(0.01)) == pytest.approx(20.0)
    assert float(psnr_from_mse(torch.tensor([1e-4]), data_range=1.0)[0]) == pytest.approx(40.0)
    assert float(psnr_from_mse(4e-2, data_range=2.0)) == pytest.approx(20.0)
    assert float(psnr_from_mse(0.0)) == float("inf")


def test_metrics_csv_appends_and_keeps_its_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsCSV(path, ["loss", "accuracy"], attempt=1)
    log.write(10, 0, "train", {"loss": 1.5, "accuracy": 0.25}, lr=1e-3, samples_per_s=100.0)
    log.write(10, 0, "eval", {"loss": 1.7, "unknown_metric": 3.0})
    MetricsCSV(path, ["other"], attempt=2).write(20, 1, "train", {"loss": 1.0})  # a resumed run
    rows = read_metrics_csv(path)
    assert [r["split"] for r in rows] == ["train", "eval", "train"]
    assert rows[0]["loss"] == "1.5" and rows[0]["lr"] == "0.001" and rows[1]["accuracy"] == ""
    assert rows[2]["attempt"] == "2" and "other" not in rows[2]


def test_progress_line():
    line = progress_line("mlm", 120, 1000, {"loss": 2.3104}, lr=4e-4, samples_per_s=85.3, eta_s=80)
    assert line.startswith("[mlm] step 120/1000 (12%) loss 2.31")
    assert "lr 4.00e-04" in line and "85.3 samples/s" in line and "eta 1m20s" in line


def test_add_stats():
    total = add_stats({}, {"a": 1, "b": 2})
    assert add_stats(total, {"a": 3}) == {"a": 4.0, "b": 2.0}


def test_warmup_then_cosine():
    lrs = [warmup_cosine(s, warmup_steps=10, max_steps=110, min_ratio=0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[9] == pytest.approx(10 / 11)
    assert all(a < b for a, b in itertools.pairwise(lrs[:11]))  # rising during warm-up
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[110] == pytest.approx(0.1) and lrs[119] == pytest.approx(0.1)


def test_optimizer_groups_and_scheduler():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, lr_multipliers={"2.": 10.0})
    by_lr = {(g["lr"], g["weight_decay"]): len(g["params"]) for g in opt.param_groups}
    assert by_lr == {(1e-3, 0.1): 1, (1e-3, 0.0): 3, (1e-2, 0.1): 1, (1e-2, 0.0): 1}
    sched = build_scheduler(opt, warmup_steps=2, max_steps=10, min_ratio=0.0)
    assert sched.get_last_lr()[0] == pytest.approx(1e-3 / 3)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups][-1] == pytest.approx(1e-2 * 2 / 3)
