"""The benchmark tooling's own logic: row comparison of two job outputs, per-call cache handling and the
gradient-agreement measure (fast: no benchmark is run)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_common  # noqa: E402
import compare_runs  # noqa: E402

from perceiver_core.position_encoding import FourierPositionEncoding  # noqa: E402
from pipelines.readers.flow_data import write_flo  # noqa: E402


def _job(folder: Path, rows: list[dict], flows: dict[str, np.ndarray] | None = None) -> Path:
    """A finished job output folder: two part files, _SUCCESS, optional .flo sidecars."""
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows)
    half = len(rows) // 2
    pq.write_table(table.slice(0, half), folder / "part-00000000.parquet")
    pq.write_table(table.slice(half), folder / "part-00000001.parquet")
    for rel, flow in (flows or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        write_flo(folder / rel, flow)
    (folder / "_SUCCESS").write_text("")
    return folder


def _rows(psnr_shift=0.0, ids=(1, 2), label="cat"):
    return [{"id": f"v{i}:0", "psnr_video": 20.0 + i + psnr_shift, "top_k_ids": [3, 1], "top_k_labels": [label, "x"],
             "top_k_scores": [0.6, 0.3], "picture": f"_pictures/run-specific-{psnr_shift}.png", "error": None}
            for i in ids]


def test_identical_runs_agree_and_tolerance_is_respected(tmp_path):
    ref = _job(tmp_path / "cpu", _rows())
    close = _job(tmp_path / "gpu", _rows(psnr_shift=1e-4))  # within 1e-4 + 1e-3 * 21
    assert compare_runs.main([str(close), str(ref)]) == 0
    far = _job(tmp_path / "far", _rows(psnr_shift=0.5))
    assert compare_runs.main([str(far), str(ref)]) == 1
    result = compare_runs.compare_tables(compare_runs.read_rows(far), compare_runs.read_rows(ref), 1e-3, 1e-4)
    bad = {c.name: c.mismatched for c in result.columns}
    assert bad["psnr_video"] == 2 and bad["top_k_ids"] == 0 and "picture" not in bad  # pictures are skipped


def test_exact_columns_missing_rows_and_subset(tmp_path):
    ref = _job(tmp_path / "cpu", _rows(ids=(1,)))
    other_label = _job(tmp_path / "label", _rows(ids=(1,), label="dog"))
    assert compare_runs.main([str(other_label), str(ref)]) == 1
    more = _job(tmp_path / "more", _rows(ids=(1, 2)))
    assert compare_runs.main([str(more), str(ref)]) == 1  # a row the reference lacks
    assert compare_runs.main([str(more), str(ref), "--subset"]) == 0  # ... allowed for a shorter reference run
    assert compare_runs.main([str(ref), str(more), "--subset"]) == 1  # but never a reference row missing
    (tmp_path / "unfinished").mkdir()
    assert compare_runs.main([str(tmp_path / "unfinished"), str(ref)]) == 2


def test_flow_sidecars_are_compared_pixel_by_pixel(tmp_path):
    flow = np.random.default_rng(0).normal(size=(6, 8, 2)).astype(np.float32)
    row = [{"id": "p0", "flow_path": "_flow/p0.flo", "epe": None}]
    ref = _job(tmp_path / "cpu", row, {"_flow/p0.flo": flow})
    same = _job(tmp_path / "gpu", row, {"_flow/p0.flo": flow + 1e-6})
    moved = flow.copy()
    moved[3, 4, 0] += 0.5  # one pixel
    off = _job(tmp_path / "off", row, {"_flow/p0.flo": moved})
    assert compare_runs.main([str(same), str(ref)]) == 0
    assert compare_runs.main([str(off), str(ref)]) == 1


def test_cache_policy_clears_our_caches_before_every_call():
    pos = FourierPositionEncoding(num_bands=4, max_resolution=(8, 8))
    model = torch.nn.Sequential(pos)
    assert bench_common.CachePolicy.names(model) == ["FourierPositionEncoding._grid_cache"]
    sizes = []

    def call():
        sizes.append(len(pos._grid_cache))
        return pos((8, 8), 1)
    off = bench_common.CachePolicy("off").wrap_ours(model, call)
    off(), off()
    assert sizes == [0, 0]  # recomputed every call, as transformers does
    both = bench_common.CachePolicy("both").wrap_ours(model, call)
    both(), both()
    assert sizes[-1] == 1  # kept


def test_transformers_positions_memoised_only_for_full_grids():
    transformers = pytest.importorskip("transformers")
    from transformers.models.perceiver import modeling_perceiver as mp

    enc = mp.PerceiverFourierPositionEncoding(num_bands=4, max_resolution=(8, 8))
    wrapped = torch.nn.Sequential(enc)
    assert transformers is not None and bench_common.memoise_hf_positions(wrapped) == 1
    first = enc([8, 8], 1, "cpu", torch.float32)
    assert enc([8, 8], 1, "cpu", torch.float32) is first  # memoised
    pos = torch.rand(1, 5, 2) * 2 - 1
    expected = mp.PerceiverFourierPositionEncoding(num_bands=4, max_resolution=(8, 8))([8, 8], 1, "cpu",
                                                                                       torch.float32, pos)
    torch.testing.assert_close(enc([8, 8], 1, "cpu", torch.float32, pos), expected)  # never memoised


def test_grad_agreement_flags_wrong_gradients_and_ignores_zero_ones():
    transformers = pytest.importorskip("transformers")
    del transformers
    cfg, hf, ours = bench_common.build_pair("vision-fourier", "cpu", tiny=True, attention_probs_dropout_prob=0.0)
    x = torch.randn(2, 3, 16, 16)
    labels = torch.tensor([1, 2])
    for model in (hf, ours):
        model.train()(inputs=x, labels=labels).loss.backward()
    arch = type(ours).__name__
    good = bench_common.grad_agreement(ours, hf, arch)
    assert good.max_rel < 1e-4 and good.compared > 20
    assert good.negligible >= 1 and good.negligible_abs < 1e-6 * good.scale  # the key biases: zero gradients
    ours.perceiver.encoder.latents.grad.mul_(1.01)  # a 1 % error in one parameter
    bad = bench_common.grad_agreement(ours, hf, arch)
    assert bad.max_rel == pytest.approx(0.01, rel=1e-3) and bad.worst == "perceiver.encoder.latents"
