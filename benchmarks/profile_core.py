"""Where our time goes: ``torch.profiler`` over one call of ours (fp32) per head, at bench_core's inputs.

    python benchmarks/profile_core.py vision-learned language

Prints, per head, the share of self CPU time spent in GEMM-like kernels (oneDNN linear, matmul, flash attention,
convolution) and the top operators.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core  # noqa: E402

GEMM_LIKE = ("linear_pointwise", "addmm", "aten::mm", "bmm", "matmul", "flash_attention", "convolution")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("heads", nargs="+", choices=bench_core.HEADS)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args(argv)
    options = bench_core.main_options([] + (["--tiny"] if args.tiny else []))
    dev = bench_core.Device("cpu")
    for head in args.heads:
        case = bench_core.make_case(head, dev, options)
        ours = next(i for i in case.impls if i.label == "ours")
        with torch.inference_mode():
            ours.run()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                ours.run()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        gemm = sum(e.self_cpu_time_total for e in events if any(s in e.key for s in GEMM_LIKE))
        print(f"{head}: {total / 1e6:.3f} s, {100 * gemm / total:.0f} % in GEMM-like kernels")
        print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
