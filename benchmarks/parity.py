"""Parity of perceiver_core with transformers on the same random weights, for every head.

For each head: a transformers model with seeded random weights is saved with its own ``save_pretrained`` and
loaded with ours (and the other way round), both run on the same random inputs in float32, and the maximum
absolute difference of the outputs is printed. ``--published`` uses the published checkpoint configurations
(slow: hundreds of millions of parameters); the default uses the tiny test configurations plus non-default
settings (shared blocks, qk/v overrides, padding masks, interpolated positions, subsampled points).

    python benchmarks/parity.py [--published]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "perceiver_core"))
import transformers  # noqa: E402
from _hf_helpers import hf_config, max_abs_diff, sample_inputs  # noqa: E402

import perceiver_core  # noqa: E402
from perceiver_core import presets  # noqa: E402

CASES = [  # (row label, preset, head class name, config overrides, extra forward kwargs)
    ("MaskedLM (padding mask)", "language", "PerceiverForMaskedLM", {}, {}),
    ("SequenceClassification (3 shared blocks)", "language", "PerceiverForSequenceClassification",
     {"num_blocks": 3, "num_labels": 4}, {}),
    ("ImageClassificationLearned (interpolated positions)", "vision-learned",
     "PerceiverForImageClassificationLearned", {}, {"interpolate_pos_encoding": True}),
    ("ImageClassificationFourier (qk/v overrides)", "vision-fourier", "PerceiverForImageClassificationFourier",
     {"qk_channels": 16, "v_channels": 32}, {}),
    ("ImageClassificationConvProcessing", "vision-conv", "PerceiverForImageClassificationConvProcessing", {}, {}),
    ("OpticalFlow", "optical-flow", "PerceiverForOpticalFlow", {}, {}),
    ("MultimodalAutoencoding (subsampled points)", "multimodal", "PerceiverForMultimodalAutoencoding", {}, {}),
]

PUBLISHED_INPUT_OVERRIDES = {"optical-flow": {"train_size": (96, 128)}}  # a full 368x496 tile takes ~20 s


def run_case(preset: str, head: str, overrides: dict, extra: dict, published: bool) -> tuple[float, float, int]:
    overrides = dict(overrides)
    if published:
        overrides = {k: v for k, v in overrides.items() if k in ("num_labels",)}
        overrides.update(PUBLISHED_INPUT_OVERRIDES.get(preset, {}))
    cfg = presets.config(preset, tiny=not published, **overrides)
    kwargs = sample_inputs(preset, cfg, batch=1 if published else 2)
    if preset == "vision-learned" and extra.get("interpolate_pos_encoding"):
        side = cfg.image_size + 8
        kwargs["inputs"] = torch.randn(kwargs["inputs"].shape[0], 3, side, side)
    kwargs.update(extra)
    hf_cls, our_cls = getattr(transformers, head), perceiver_core.HEADS[head]
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, torch.no_grad():
        torch.manual_seed(0)
        hf = hf_cls(hf_config(cfg)).eval()
        hf.save_pretrained(a)
        ours = our_cls.from_pretrained(a)
        forward = max_abs_diff(hf(**kwargs).logits, ours(**kwargs).logits)
        del hf
        torch.manual_seed(1)
        ours2 = our_cls(cfg).eval()
        ours2.save_pretrained(b)
        hf2 = hf_cls.from_pretrained(b).eval()
        backward = max_abs_diff(hf2(**kwargs).logits, ours2(**kwargs).logits)
        params = ours.num_parameters()
    return forward, backward, params


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", action="store_true", help="use the published checkpoint configurations")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{'published' if args.published else 'tiny'} configurations, float32")
    print("| head | parameters | transformers ckpt -> ours | ours ckpt -> transformers | seconds |")
    print("|---|---:|---:|---:|---:|")
    worst = 0.0
    for label, preset, head, overrides, extra in CASES:
        start = time.perf_counter()
        fwd, bwd, params = run_case(preset, head, overrides, extra, args.published)
        worst = max(worst, fwd, bwd)
        if args.published:
            label = label.split(" (")[0]
        print(f"| {label} | {params:,} | {fwd:.2e} | {bwd:.2e} | {time.perf_counter() - start:.1f} |", flush=True)
    print(f"worst max abs difference: {worst:.2e} (tolerance 1e-4)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
