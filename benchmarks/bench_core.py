"""Core inference benchmark: transformers' Perceiver heads against perceiver_core, same weights, one process.

For each head at its published checkpoint configuration (random weights, transformers' initialisation, loaded
into ours through ``perceiver_core.convert``) this times, interleaved in one process after the same warm-up and
with the same threads: transformers fp32 (eager) and under bf16 autocast, ours fp32 and bf16 autocast; with
``--dtypes ...,fp16`` (default on CUDA) both under fp16 autocast; with ``--compile`` also ``torch.compile``d
ours. Ratios are against transformers in the SAME dtype; errors are against transformers' fp32 output.

    python benchmarks/bench_core.py                       # everything (CPU: ~20-30 min on 2 cores)
    python benchmarks/bench_core.py --heads language,vision-conv --repeats 3
    python benchmarks/bench_core.py --quick               # 1 timed run, flow at 184x248
    python benchmarks/bench_core.py --tiny                # tiny configs: a smoke test (< 60 s)
    python benchmarks/bench_core.py --device cuda --compile bf16

Heads: language (MaskedLM, 2048 bytes, 25 % padding), vision-learned / vision-fourier / vision-conv (224x224),
optical-flow (one 368x496 tile), multimodal-chunk (1 of transformers' 128 decode chunks, encoder re-run, as
transformers does), multimodal-clip (every output point of a 16-frame clip: ours encodes once and decodes in
chunks; transformers' 128 chunk calls are timed as one chunk x 128 and labelled "extrapolated", or all 128
with ``--clip-all-chunks``).

Measurement notes. Time: median of the timed runs after one warm-up. FLOPs: the dispatch-mode counter of
``bench_common.counted_flops`` on one call (matmul, conv and attention kernels), each implementation its own
(ours does fewer because of the projection re-association in ``kernels.reassociation``). Memory: on CPU the peak
resident-set growth during one call in a fresh process (``--memory subprocess``, the default of full runs);
on CUDA ``max_memory_allocated`` above the allocated memory before the call. Caches: see ``--cache``.
"""

from __future__ import annotations

import os

# Threads sleep instead of spinning when they wait (must be set before torch loads libgomp). On a shared machine a
# spinning OpenMP thread whose partner was descheduled stalls every small op for milliseconds; this applies to both
# implementations alike. Export OMP_WAIT_POLICY=ACTIVE to benchmark with spinning threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402
from bench_common import Device  # noqa: E402,F401  (profile_core.py uses bench_core.Device)

from perceiver_core.kernels import attention as attention_kernels  # noqa: E402

HEADS = ["language", "vision-learned", "vision-fourier", "vision-conv", "optical-flow", "multimodal-chunk",
         "multimodal-clip"]
TEXT_IMAGE = {"language", "vision-learned", "vision-fourier", "vision-conv"}
NUM_CHUNKS = 128  # transformers' (and DeepMind's) decode chunks per 16-frame clip
COMPILE_CHOICES = {"none": (), "fp32": ("fp32",), "bf16": ("bf16",), "both": ("fp32", "bf16")}


# ------------------------------------------------------------------------------------------------ cases
@dataclass
class Impl:
    label: str  # "hf", "hf_bf16", "hf_fp16", "ours", "ours_bf16", "ours_fp16", "ours_compiled", ...
    side: str  # "transformers" or "ours"
    dtype: str  # compute dtype name: "fp32", "bf16", "fp16"
    run: Callable[[], object]
    scale: int = 1  # the workload is ``scale`` calls of ``run`` (transformers' 128 decode chunks, extrapolated)
    compiled: bool = False

    @property
    def name(self) -> str:
        return f"{self.side} {self.dtype}" + (" compiled" if self.compiled else "")


def impl_label(side: str, dtype: str, compiled: bool = False) -> str:
    base = "hf" if side == "transformers" else "ours"
    label = base if dtype == "fp32" else f"{base}_{dtype}"
    return label + ("_compiled" if compiled else "")


@dataclass
class Case:
    head: str
    description: str
    impls: list[Impl]
    view: Callable[[str, object], object]  # (impl label, output) -> structure comparable with transformers fp32's
    repeats: int
    caches: list[str] = field(default_factory=list)  # per-call caches of our model (``Class.attribute``)
    hf_basis: str = "measured"
    kernels: list[str] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)
    note: str = ""


def head_inputs(head: str, device: str, tiny: bool, args) -> SimpleNamespace:
    """The pair of models of one head and its seeded inputs: cfg, hf, ours, kw (the call's keywords), desc,
    ours_extra (keywords only ours takes) and, for the multimodal heads, the chunking of the output points."""
    ours_extra: dict = {}
    inputs = chunks = img_chunk = aud_chunk = chunk_points = None
    g = torch.Generator().manual_seed(1)
    if head == "language":
        cfg, hf, ours = bc.build_pair("language", device, tiny)
        length = cfg.max_position_embeddings
        ids = torch.randint(6, 262, (1, length), generator=g).to(device)
        mask = torch.ones(1, length, dtype=torch.long, device=device)
        mask[:, length * 3 // 4:] = 0
        kw = {"inputs": ids, "attention_mask": mask}
        desc = f"ids (1, {length}), 25 % padded"
    elif head.startswith("vision"):
        cfg, hf, ours = bc.build_pair(head, device, tiny)
        size = cfg.image_size if head == "vision-learned" else (32 if tiny else 224)
        kw = {"inputs": torch.randn(1, 3, size, size, generator=g).to(device)}
        desc = f"image (1, 3, {size}, {size})"
    elif head == "optical-flow":
        h, w = (32, 48) if tiny else args.flow_size
        cfg, hf, ours = bc.build_pair("optical-flow", device, tiny, train_size=(h, w))
        kw = {"inputs": torch.randn(1, 2, 27, h, w, generator=g).to(device)}
        desc = f"patches (1, 2, 27, {h}, {w})"
        if args.flow_chunk:
            ours_extra = {"decode_chunk_size": args.flow_chunk}
            desc += f"; ours decodes {args.flow_chunk} pixels at a time"
    elif head.startswith("multimodal"):
        cfg, hf, ours = bc.build_pair("multimodal", device, tiny)
        t, s = cfg.num_frames, cfg.image_size
        n_audio = t * cfg.audio_samples_per_frame
        inputs = {"image": torch.randn(1, t, 3, s, s, generator=g).to(device),
                  "audio": torch.randn(1, n_audio, 1, generator=g).to(device),
                  "label": torch.zeros(1, cfg.num_labels, device=device)}
        chunks = NUM_CHUNKS if not tiny else 4
        img_chunk = t * s * s // chunks
        aud_chunk = n_audio // cfg.samples_per_patch // chunks

        def chunk_points(i: int) -> dict:
            return {"image": torch.arange(i * img_chunk, (i + 1) * img_chunk, device=device),
                    "audio": torch.arange(i * aud_chunk, (i + 1) * aud_chunk, device=device), "label": None}
        kw = {"inputs": inputs, "subsampled_output_points": chunk_points(0)}
        desc = f"video (1, {t}, 3, {s}, {s}) + audio (1, {n_audio}, 1)"
    else:
        raise KeyError(head)
    return SimpleNamespace(cfg=cfg, hf=hf, ours=ours, kw=kw, desc=desc, ours_extra=ours_extra, inputs=inputs,
                           chunks=chunks, img_chunk=img_chunk, aud_chunk=aud_chunk, chunk_points=chunk_points)


def make_case(head: str, dev: Device, args) -> Case:
    heavy = max(1, min(args.repeats, args.heavy_repeats))
    policy = bc.CachePolicy(args.cache)
    h = head_inputs(head, dev.name, args.tiny, args)
    cfg, hf, ours, kw, desc, ours_extra = h.cfg, h.hf, h.ours, h.kw, h.desc, h.ours_extra
    inputs, chunks, img_chunk, aud_chunk, chunk_points = h.inputs, h.chunks, h.img_chunk, h.aud_chunk, h.chunk_points
    policy.prepare_hf(hf)
    compiled = {d: bc.compiled_copy(ours) for d in COMPILE_CHOICES[args.compile]}

    def ours_model(dtype: str, is_compiled: bool):
        return compiled[dtype] if is_compiled else ours

    scale, hf_basis = 1, "measured"
    if head == "multimodal-clip":
        chunk = args.clip_chunk
        if args.clip_all_chunks:
            def hf_call():
                first = None
                for i in range(chunks):
                    out = hf(inputs=inputs, subsampled_output_points=chunk_points(i)).logits
                    first = out if first is None else first
                return first
            hf_basis = f"measured: all {chunks} chunk calls"
        else:
            def hf_call():
                return hf(**kw).logits
            scale, hf_basis = chunks, f"extrapolated: 1 chunk call x {chunks}"

        def ours_call(model):
            return lambda: model.autoencode(inputs, chunk_size=chunk)

        def view(label: str, out):
            if label.startswith("hf"):
                return out
            return {"image": out["image"].reshape(1, -1, 3)[:, :img_chunk],
                    "audio": out["audio"][:, :aud_chunk * cfg.samples_per_patch], "label": out["label"]}
        desc += (f"; every output point: transformers {chunks} chunk calls ({hf_basis}), ours encode once + "
                 f"decode {chunk} points at a time")
        repeats = heavy
    else:
        def hf_call():
            return hf(**kw).logits

        def ours_call(model):
            return lambda: model(**kw, **ours_extra).logits

        def view(label: str, out):
            return out
        repeats = heavy if head in ("optical-flow", "multimodal-chunk") else args.repeats
        if head == "multimodal-chunk":
            desc += f"; 1 of {chunks} chunks ({img_chunk} image + {aud_chunk} audio + 1 label queries), " \
                    "encoder re-run by both"

    def under(dtype: str, fn: Callable[[], object]) -> Callable[[], object]:
        def run():
            with dev.autocast(dtype):
                return fn()
        return run

    impls = []
    for dtype in args.dtype_list:
        impls.append(Impl(impl_label("transformers", dtype), "transformers", dtype, under(dtype, hf_call), scale))
        impls.append(Impl(impl_label("ours", dtype), "ours", dtype,
                          under(dtype, policy.wrap_ours(ours, ours_call(ours)))))
    for dtype in COMPILE_CHOICES[args.compile]:
        model = ours_model(dtype, True)
        impls.append(Impl(impl_label("ours", dtype, True), "ours", dtype,
                          under(dtype, policy.wrap_ours(model, ours_call(model))), compiled=True))
    return Case(head, desc, impls, view, repeats, caches=policy.names(ours), hf_basis=hf_basis)


# ------------------------------------------------------------------------------------------------ measuring
def measure(impl: Impl, dev: Device) -> dict:
    """FLOPs and peak memory growth of one call (in this process). Compiled graphs are not FLOP-counted
    (their count is the eager one's)."""
    with torch.no_grad(), bc.PeakMemory(dev) as mem:  # FLOP counting needs no_grad (not inference_mode)
        if impl.compiled:
            flops = 0
            impl.run()
        else:
            flops, _ = bc.counted_flops(impl.run)
        dev.sync()
    return {"flops": flops * impl.scale, "mem": mem.peak}


def _probe_argv(head: str, label: str, args) -> list[str]:
    argv = ["--probe", f"{head}:{label}", "--device", args.device, "--flow-size", "x".join(map(str, args.flow_size)),
            "--flow-chunk", str(args.flow_chunk), "--clip-chunk", str(args.clip_chunk), "--cache", args.cache,
            "--threads", str(torch.get_num_threads()), "--dtypes", ",".join(args.dtype_list)]
    return argv + (["--tiny"] if args.tiny else []) + (["--clip-all-chunks"] if args.clip_all_chunks else [])


def run_case(case: Case, dev: Device, args, log) -> None:
    before = dev.measure_peak()
    outs = {}
    for impl in case.impls:  # warm-up, then FLOPs and memory (a fresh process with --memory subprocess)
        recorded = impl.side == "ours" and not impl.compiled
        record = attention_kernels.record_attention_calls() if recorded else contextlib.nullcontext()
        with torch.inference_mode(), record as calls:
            outs[impl.label] = case.view(impl.label, impl.run())  # warm-up (compiles the compiled ones)
        if calls is not None:
            case.kernels += [f"{impl.dtype} {line}" for line in dict.fromkeys(calls)]
        if args.memory == "subprocess" and not impl.compiled:
            stats = bc.run_probe(Path(__file__).resolve(), _probe_argv(case.head, impl.label, args))
        else:
            stats = measure(impl, dev)
        case.results[impl.label] = {**stats, "times": []}
        log(f"  {impl.name}: {stats['flops'] / 1e9:.1f} GFLOP, peak +{stats['mem'] / 2**20:.0f} MiB")
    reference = outs["hf"]
    for impl in case.impls:
        res = case.results[impl.label]
        res["max_abs"] = bc.max_abs_diff(outs[impl.label], reference)
        res["rel_err"] = bc.rel_err(outs[impl.label], reference)
        if impl.compiled:  # same FLOPs as the eager model of our side
            res["flops"] = case.results["ours"]["flops"]
    del outs
    with torch.inference_mode():
        for r in range(case.repeats):  # interleaved, rotating the order
            order = case.impls[r % len(case.impls):] + case.impls[:r % len(case.impls)]
            for impl in order:
                dev.sync()
                start = time.perf_counter()
                impl.run()
                dev.sync()
                case.results[impl.label]["times"].append((time.perf_counter() - start) * impl.scale)
            log(f"  run {r + 1}: " + ", ".join(f"{i.label} {case.results[i.label]['times'][-1]:.3f}s"
                                               for i in case.impls))
    after = dev.measure_peak()
    for res in case.results.values():
        res["median"] = statistics.median(res["times"])
        res["best"] = min(res["times"])
    case.note = f"fp32 matmul {before['fp32 matmul']:.0f}/{after['fp32 matmul']:.0f} GFLOP/s before/after"


def probe(spec: str, dev: Device, args) -> int:
    head, label = spec.split(":")
    case = make_case(head, dev, args)
    impl = next(i for i in case.impls if i.label == label)
    print("PROBE " + json.dumps(measure(impl, dev)), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------ report
def speedup(case: Case, label: str) -> float:
    """transformers' median time in the same dtype / this implementation's (> 1: ours is faster)."""
    impl = next(i for i in case.impls if i.label == label)
    base = case.results.get(impl_label("transformers", impl.dtype))
    return base["median"] / case.results[label]["median"] if base else math.nan


def summary_table(cases: list[Case], dtypes: list[str]) -> str:
    """Per head: speed-up of ours over transformers in each dtype (same dtype on both sides)."""
    head = "| head | " + " | ".join(f"{d}: transformers s | {d}: ours s | {d}: speed-up" for d in dtypes) + \
        " | transformers timing |"
    rows = [head, "|" + "---|" * (2 + 3 * len(dtypes))]
    for c in cases:
        cells = []
        for d in dtypes:
            hf, ours = c.results[impl_label("transformers", d)], c.results[impl_label("ours", d)]
            cells += [f"{hf['median']:.3f}", f"{ours['median']:.3f}", f"**{hf['median'] / ours['median']:.2f}x**"]
        rows.append(f"| {c.head} | " + " | ".join(cells) + f" | {c.hf_basis} |")
    return "\n".join(rows)


def detail_table(cases: list[Case], dev: Device) -> str:
    unit = "TFLOP/s" if dev.type == "cuda" else "GFLOP/s"
    rows = [f"| head | implementation | median s | best s | speed-up vs transformers same dtype | max abs err vs "
            f"transformers fp32 | rel err vs transformers fp32 | peak MiB | {unit} (% of the dtype's matmul peak) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        for impl in c.impls:
            res = c.results[impl.label]
            name = impl.name + (" (extrapolated)" if impl.scale > 1 else "")
            ratio = "-" if impl.side == "transformers" else f"{speedup(c, impl.label):.2f}x"
            rows.append(f"| {c.head} | {name} | {res['median']:.4f} | {res['best']:.4f} | {ratio} | "
                        f"{res['max_abs']:.1e} | {res['rel_err']:.1e} | {bc.mib(res['mem'])} | "
                        f"{bc.rate_text(res['flops'], res['median'], dev.peak[impl.dtype], dev.type)} |")
    return "\n".join(rows)


def targets(cases: list[Case], dev: Device) -> list[str]:
    """Issue #16's CPU targets or issue #20's GPU targets, each met / not met with the measured figure."""
    lines = []

    def add(ok: bool | None, text: str) -> None:
        mark = "n/a" if ok is None else ("MET" if ok else "NOT MET")
        lines.append(f"- [{mark}] {text}")

    has_bf16 = all("ours_bf16" in c.results and "hf_bf16" in c.results for c in cases)
    if dev.type == "cuda":
        for c in cases:
            ours = [i for i in c.impls if i.side == "ours"]
            best = min(ours, key=lambda i: c.results[i.label]["median"])
            t = c.results[best.label]["median"]
            vs32 = c.results["hf"]["median"] / t
            text = f"GPU {c.head}: best of ours ({best.name}) {vs32:.2f}x transformers fp32 eager (>= 4x)"
            ok = vs32 >= 4.0
            if "hf_bf16" in c.results:
                vs16 = c.results["hf_bf16"]["median"] / t
                text += f", {vs16:.2f}x transformers bf16 autocast (>= 1.5x)"
                ok = ok and vs16 >= 1.5
            add(ok, text)
        for c in cases:
            if c.head in ("optical-flow", "multimodal-clip") and "ours_bf16" in c.results:
                res = c.results["ours_bf16"]
                share = res["flops"] / res["median"] / 1e9 / max(dev.peak["bf16"], 1e-9)
                add(share >= 0.4, f"GPU {c.head}: ours bf16 at {100 * share:.0f} % of the bf16 matmul peak (>= 40 %)")
                for d in ("fp32", "bf16"):
                    hf, ours = c.results.get(impl_label("transformers", d)), c.results.get(impl_label("ours", d))
                    if hf and ours:
                        ratio = ours["mem"] / max(hf["mem"], 1)
                        add(ratio <= 1 / 3, f"GPU {c.head} {d}: peak memory {ratio:.2f} of transformers' (<= 1/3)")
        return lines
    for c in cases:
        fp32 = speedup(c, "ours")
        goal = 6.0 if c.head == "multimodal-clip" else 1.7
        add(fp32 >= goal, f"fp32 {c.head}: {fp32:.2f}x transformers fp32 (>= {goal}x)")
        if has_bf16:
            b16 = speedup(c, "ours_bf16")
            goal = 1.25 if c.head in TEXT_IMAGE else (8.0 if c.head == "multimodal-clip" else 2.0)
            err = c.results["ours_bf16"]["rel_err"]
            add(b16 >= goal and err <= 2e-2, f"bf16 {c.head}: {b16:.2f}x transformers bf16 (>= {goal}x), rel err vs "
                                              f"fp32 {err:.1e} (<= 2e-2)")
    if has_bf16:
        for c in cases:
            if c.head in TEXT_IMAGE:
                res = c.results["ours_bf16"]
                share = res["flops"] / res["median"] / 1e9 / max(dev.peak["bf16"], 1e-9)
                add(share >= 0.8, f"bf16 {c.head}: ours at {100 * share:.0f} % of the bf16 matmul peak (>= ~80 %)")
    add(None, "GPU targets: not measured in this run (use --device cuda)")
    return lines


def parser_() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", default=",".join(HEADS), help=f"comma list of {', '.join(HEADS)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (light heads)")
    parser.add_argument("--heavy-repeats", type=int, default=3,
                        help="timed runs for optical-flow and the multimodal heads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default=None,
                        help="comma list of fp32, bf16, fp16 (default fp32,bf16; on CUDA fp32,bf16,fp16)")
    parser.add_argument("--compile", choices=sorted(COMPILE_CHOICES), default="none",
                        help="also time torch.compile'd ours in these dtypes")
    parser.add_argument("--cache", choices=("off", "both"), default="off",
                        help="per-call caches in timed calls: off = cleared before every call of ours (transformers "
                             "has none); both = ours keeps them and transformers' Fourier features are memoised too")
    parser.add_argument("--memory", choices=("subprocess", "inprocess"), default=None,
                        help="CPU peak memory per implementation in a fresh process (default, except --tiny) or here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="1 timed run, flow tile 184x248")
    parser.add_argument("--tiny", action="store_true", help="tiny configs, 2 timed runs (smoke test of this script)")
    parser.add_argument("--flow-size", default="368x496", help="optical-flow tile HxW")
    parser.add_argument("--flow-chunk", type=int, default=32768,
                        help="ours: decode the flow tile N pixels at a time (0: all at once)")
    parser.add_argument("--clip-chunk", type=int, default=16384, help="ours: output points per decode chunk")
    parser.add_argument("--clip-all-chunks", action="store_true",
                        help="multimodal-clip: time all of transformers' chunk calls instead of 1 chunk x 128")
    parser.add_argument("--peak-size", type=int, default=None, help="matmul peak GEMM edge (default 2048 / 8192)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report to this file")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # HEAD:LABEL, used by the script itself
    return parser


def main_options(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed and normalised options (also used by ``profile_core.py``)."""
    parser = parser_()
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.heavy_repeats, args.flow_size = 1, 1, "184x248"
    if args.tiny and not args.probe:
        args.repeats, args.heavy_repeats = min(args.repeats, 2), 1
        args.peak_size = args.peak_size or 384
    args.flow_size = tuple(int(n) for n in args.flow_size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.device(args.device).type == "cuda"
    args.dtype_list = [d.strip() for d in (args.dtypes or ("fp32,bf16,fp16" if cuda else "fp32,bf16")).split(",")]
    if "fp32" not in args.dtype_list or set(args.dtype_list) - set(bc.DTYPES):
        parser.error(f"--dtypes must include fp32 (the reference) and only name {sorted(bc.DTYPES)}")
    if args.memory is None:
        args.memory = "inprocess" if args.tiny or cuda else "subprocess"
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    unknown = set(heads) - set(HEADS)
    if unknown:
        parser.error(f"unknown heads {sorted(unknown)}; choose from {HEADS}")
    args.head_list = heads
    return args


def report(cases: list[Case], dev: Device, args, wall: float) -> str:
    found: dict[str, list[str]] = {}
    for c in cases:
        for name in c.caches:
            found.setdefault(name, []).append(c.head)
    lines = [f"Environment: {bc.environment(dev)}; total wall time {wall:.0f} s"
             + (" (tiny configs)" if args.tiny else ""), "",
             "Speed-up = transformers' median / ours, both in the same dtype (bf16/fp16 = autocast on both sides).", "",
             summary_table(cases, args.dtype_list), "", detail_table(cases, dev), "",
             f"Caches (--cache {args.cache}): {bc.CachePolicy(args.cache).describe(found)}. Memory: "
             + ("fresh process per implementation (RSS growth of one call)" if args.memory == "subprocess"
                else ("CUDA max_memory_allocated growth of one call" if dev.type == "cuda"
                      else "in this process (RSS growth of one call; blurred by freed pages of earlier calls)"))
             + ". Errors are against transformers fp32 on the same input; the whole clip compares its first chunk.",
             "", "Inputs and attention kernels (ours, per dtype):"]
    for c in cases:
        lines.append(f"- **{c.head}**: {c.description} ({c.note})")
        lines.extend(f"  - {k}" for k in c.kernels)
    lines += ["", "Targets (issue #16 on CPU, issue #20 on GPU):"] + targets(cases, dev)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = main_options(argv)
    dev = Device(args.device, args.peak_size)
    if args.probe:
        return probe(args.probe, dev, args)
    start = time.perf_counter()
    log = bc.logger(start)
    dev.measure_peak()
    cases = []
    for head in args.head_list:
        log(head)
        case = make_case(head, dev, args)
        run_case(case, dev, args, log)
        for line in case.kernels:
            log(f"  attention: {line}")
        cases.append(case)
        for impl in case.impls:
            impl.run = None  # free the models
        bc.trim()
    return bc.publish(report(cases, dev, args, time.perf_counter() - start), args.markdown)


if __name__ == "__main__":
    raise SystemExit(main())
