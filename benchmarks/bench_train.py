"""Training-step benchmark: transformers' Perceiver heads against perceiver_core, same weights, one process.

A step is forward + loss + backward + AdamW, in train mode with the configuration's attention dropout (0.1).
Per head it times, interleaved after the same warm-up and with the same threads: transformers and ours in fp32
and under bf16 autocast, and ours with activation checkpointing (``gradient_checkpointing_enable``; transformers'
Perceiver has none: "n/a"). Ratios are against transformers in the SAME dtype. Optical flow and multimodal
autoencoding are timed for ours only (transformers' heads cannot train: they compute no loss), but their
gradients are still compared, through the same loss function applied to transformers' outputs.

    python benchmarks/bench_train.py                      # every head (CPU: long; run on a quiet machine)
    python benchmarks/bench_train.py --heads mlm,vision-conv --repeats 3
    python benchmarks/bench_train.py --quick              # 1 timed step, flow 184x248
    python benchmarks/bench_train.py --tiny               # tiny configs: a smoke test (< 60 s)
    python benchmarks/bench_train.py --device cuda        # + the device's loss against a CPU step
    python benchmarks/bench_train.py --heads vision-learned --reference-route   # + ours on the reference route

``--reference-route`` adds ours run inside ``kernel_options(reassociate=False, onednn_linear=False,
onednn_attention=False)`` (the textbook order on F.linear and torch's kernels), interleaved with the rest on the
same model and optimizer: the time the fast training routes save, measured in one process.

Gradient agreement: before timing, a fresh pair with dropout 0 runs one fp32 forward + backward on the CPU
(``--grad-check tiny``: on the tiny configuration);
the table gives the worst per-parameter ||g_ours - g_transformers|| / ||g_transformers|| (issue #16: <= 1e-4).
On CUDA the same pair's step also runs on the device (fp32 and bf16) and its loss is compared with the CPU one.
Memory: peak growth during one step after a warm-up step (optimizer state already allocated): CPU RSS in a
fresh process (``--memory subprocess``, the default of full runs) or in this process; CUDA max_memory_allocated.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in bench_core.py: sleeping, not spinning, threads

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_common as bc  # noqa: E402

from perceiver_core.kernels import kernel_options  # noqa: E402
from perceiver_core.losses import autoencoding_loss, endpoint_error  # noqa: E402

# head -> (preset, head class or None for the preset's); transformers cannot train the last two
HEADS = {"mlm": ("language", None), "text-classification": ("language", "PerceiverForSequenceClassification"),
         "vision-learned": ("vision-learned", None), "vision-fourier": ("vision-fourier", None),
         "vision-conv": ("vision-conv", None), "optical-flow": ("optical-flow", None),
         "multimodal": ("multimodal", None)}
OURS_ONLY = {"optical-flow", "multimodal"}
REFERENCE_ROUTE = {"reassociate": False, "onednn_linear": False, "onednn_attention": False}


# ------------------------------------------------------------------------------------------------ batches
@dataclass
class Batch:
    """One training batch: model keywords, and how each side turns its output into the loss."""

    kwargs: dict
    ours_kwargs: dict = field(default_factory=dict)  # extra keywords for ours only (labels it can take)
    hf_loss: Callable | None = None  # (model output) -> loss for transformers; None: ``output.loss``
    description: str = ""

    def to(self, device: str) -> Batch:
        def move(x):
            if isinstance(x, torch.Tensor):
                return x.to(device)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            return x
        return Batch(move(self.kwargs), move(self.ours_kwargs), self.hf_loss, self.description)


def make_batch(head: str, cfg, args, ours) -> Batch:
    """A fixed random batch on the CPU (the same one for every implementation and device)."""
    g = torch.Generator().manual_seed(1)
    b = args.batch_size
    if head in ("mlm", "text-classification"):
        length = cfg.max_position_embeddings
        ids = torch.randint(6, 262, (b, length), generator=g)
        mask = torch.ones(b, length, dtype=torch.long)
        mask[-1, length * 3 // 4:] = 0  # the last example 25 % padded
        if head == "mlm":
            labels = torch.where(torch.rand(b, length, generator=g) < 0.15, ids, torch.full_like(ids, -100))
            labels[mask == 0] = -100
        else:
            labels = torch.randint(0, cfg.num_labels, (b,), generator=g)
        return Batch({"inputs": ids, "attention_mask": mask, "labels": labels},
                     description=f"ids ({b}, {length}), last example 25 % padded")
    if head.startswith("vision"):
        size = cfg.image_size if head == "vision-learned" else (32 if args.tiny else 224)
        return Batch({"inputs": torch.randn(b, 3, size, size, generator=g),
                      "labels": torch.randint(0, cfg.num_labels, (b,), generator=g)},
                     description=f"images ({b}, 3, {size}, {size})")
    if head == "optical-flow":
        h, w = cfg.train_size
        target = torch.randn(b, h, w, 2, generator=g)
        return Batch({"inputs": torch.randn(b, 2, 27, h, w, generator=g)}, {"labels": target},
                     hf_loss=lambda out: endpoint_error(out.logits, target.to(out.logits.device)),
                     description=f"patches ({b}, 2, 27, {h}, {w}), endpoint-error loss on every pixel")
    if head == "multimodal":
        t, s = cfg.num_frames, cfg.image_size
        n_audio = t * cfg.audio_samples_per_frame
        video = torch.rand(b, t, 3, s, s, generator=g)
        audio = torch.rand(b, n_audio, 1, generator=g) * 2 - 1
        n_points = min(args.output_points, t * s * s)
        points = {"image": torch.randperm(t * s * s, generator=g)[:n_points],
                  "audio": torch.arange(n_audio // cfg.samples_per_patch), "label": None}
        labels = {"image": video, "audio": audio, "label": torch.randint(0, cfg.num_labels, (b,), generator=g)}
        inputs = {"image": video, "audio": audio, "label": torch.zeros(b, cfg.num_labels)}

        def hf_loss(out, _points=points, _labels=labels):
            dev = out.logits["image"].device
            targets = ours._targets({k: v.to(dev) for k, v in _labels.items()},
                                    {k: (v.to(dev) if v is not None else None) for k, v in _points.items()})
            return autoencoding_loss(out.logits, targets, ours.loss_weights).total
        return Batch({"inputs": inputs, "subsampled_output_points": points}, {"labels": labels}, hf_loss=hf_loss,
                     description=f"clip ({b}, {t}, 3, {s}, {s}) + audio ({b}, {n_audio}, 1); {n_points} video points, "
                                 "every audio patch and the label decoded; the paper's loss weights")
    raise KeyError(head)


def build(head: str, device: str, args, **overrides):
    preset, cls = HEADS[head]
    if head == "text-classification":
        overrides.setdefault("num_labels", 2)
    if head == "optical-flow":
        overrides.setdefault("train_size", (16, 24) if args.tiny else args.flow_size)
    if head == "vision-learned" and args.tiny:
        overrides.setdefault("image_size", 16)  # the smoke run stays short on CPUs that emulate bf16
    cfg, hf, ours = bc.build_pair(preset, device, args.tiny, head=cls, **overrides)
    return cfg, hf.train(), ours.train()


# ------------------------------------------------------------------------------------------------ steps
def loss_of(side: str, model, batch: Batch, dev: bc.Device, dtype: str) -> torch.Tensor:
    with dev.autocast(dtype):
        if side == "ours":
            out = model(**batch.kwargs, **batch.ours_kwargs)
            return out.loss
        out = model(**batch.kwargs)
        return out.loss if batch.hf_loss is None else batch.hf_loss(out)


@dataclass
class Impl:
    label: str  # "hf", "hf_bf16", "ours", "ours_bf16", "ours_ckpt", "ours_bf16_ckpt", "ours_ref", ...
    side: str
    dtype: str
    checkpointing: bool
    step: Callable[[], float]  # one training step; returns the loss
    reference: bool = False  # ours on the reference route (REFERENCE_ROUTE)

    @property
    def name(self) -> str:
        return (f"{self.side} {self.dtype}" + (" + activation checkpointing" if self.checkpointing else "")
                + (" (reference route)" if self.reference else ""))


def impl_label(side: str, dtype: str, checkpointing: bool = False, reference: bool = False) -> str:
    base = "hf" if side == "transformers" else "ours"
    return ((base if dtype == "fp32" else f"{base}_{dtype}") + ("_ckpt" if checkpointing else "")
            + ("_ref" if reference else ""))


def make_impls(head: str, dev: bc.Device, args) -> tuple[list[Impl], Batch, bool]:
    """The timed implementations of one head (models and optimizers built here, on the device)."""
    cfg, hf, ours = build(head, dev.name, args)
    batch = make_batch(head, cfg, args, ours).to(dev.name)
    models = {"ours": ours} if head in OURS_ONLY else {"transformers": hf, "ours": ours}
    optimizers = {side: torch.optim.AdamW(m.parameters(), lr=1e-5) for side, m in models.items()}
    ckpt = bc.supports_checkpointing(ours)

    def make_step(side: str, dtype: str, checkpointing: bool, reference: bool = False) -> Callable[[], float]:
        model, opt = models[side], optimizers[side]

        def step() -> float:
            if side == "ours":
                bc.set_checkpointing(model, checkpointing)
            with kernel_options(**(REFERENCE_ROUTE if reference else {})):
                loss = loss_of(side, model, batch, dev, dtype)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()
        return step

    impls = []
    for dtype in args.dtype_list:
        for side in models:
            impls.append(Impl(impl_label(side, dtype), side, dtype, False, make_step(side, dtype, False)))
        if ckpt and not args.no_checkpointing and (dtype == "fp32" or not args.tiny):
            impls.append(Impl(impl_label("ours", dtype, True), "ours", dtype, True, make_step("ours", dtype, True)))
        if args.reference_route:
            impls.append(Impl(impl_label("ours", dtype, reference=True), "ours", dtype, False,
                              make_step("ours", dtype, False, reference=True), reference=True))
    return impls, batch, ckpt


def grad_check(head: str, dev: bc.Device, args) -> dict:
    """fp32 gradients of ours against transformers' on the CPU (dropout 0, train mode, one batch), and on CUDA
    the device's fp32 / bf16 loss and fp32 gradients against the CPU step. ``--grad-check tiny`` does this on
    the tiny configuration whatever the timed size (a full-size fp32 backward on the CPU takes minutes)."""
    if args.grad_check == "tiny" and not args.tiny:
        args = copy.copy(args)
        args.tiny = True
    cpu = bc.Device("cpu", 64)
    cfg, hf, ours = build(head, "cpu", args, attention_probs_dropout_prob=0.0)
    batch = make_batch(head, cfg, args, ours)
    arch = type(ours).__name__
    result = {}
    losses = {}
    for side, model in (("transformers", hf), ("ours", ours)):
        loss = loss_of(side, model, batch, cpu, "fp32")
        loss.backward()
        losses[side] = loss.item()
    agreement = bc.grad_agreement(ours, hf, arch)
    result["grad_rel_err"], result["grad_worst"] = agreement.max_rel, agreement.worst
    result["grad_text"] = ("tiny configuration: " if args.tiny else "") + agreement.describe()
    result["grad_ok"] = agreement.max_rel <= 1e-4 and agreement.negligible_abs <= 1e-4 * agreement.scale
    result["loss_rel_diff"] = abs(losses["ours"] - losses["transformers"]) / max(abs(losses["transformers"]), 1e-30)
    result["loss_cpu"] = losses["ours"]
    if dev.type == "cuda":
        cpu_grads = {n: p.grad.clone() for n, p in ours.named_parameters() if p.grad is not None}
        hf.to(dev.name).zero_grad(set_to_none=True)
        ours.to(dev.name).zero_grad(set_to_none=True)
        on_dev = batch.to(dev.name)
        for side, model in (("transformers", hf), ("ours", ours)):
            loss_of(side, model, on_dev, dev, "fp32").backward()
        result["device_grad_rel_err"] = bc.grad_agreement(ours, hf, arch).max_rel
        scale = max(g.float().norm().item() for g in cpu_grads.values())
        worst = 0.0
        for name, p in ours.named_parameters():
            ref = cpu_grads.get(name)
            if ref is not None and p.grad is not None and ref.norm() >= bc.GradAgreement.NEGLIGIBLE * scale:
                worst = max(worst, ((p.grad.float().cpu() - ref.float()).norm() / ref.float().norm()).item())
        result["device_vs_cpu_grad_rel_err"] = worst
        for dtype in ("fp32", "bf16"):
            with torch.no_grad():
                value = loss_of("ours", ours, on_dev, dev, dtype).item()
            result[f"device_{dtype}_loss"] = value
            result[f"device_{dtype}_loss_rel_diff"] = abs(value - losses["ours"]) / max(abs(losses["ours"]), 1e-30)
    return result


# ------------------------------------------------------------------------------------------------ running
def measure(impl: Impl, dev: bc.Device) -> dict:
    """Peak memory growth of one step (run after a warm-up step, so the optimizer state already exists)."""
    with bc.PeakMemory(dev) as mem:
        impl.step()
        dev.sync()
    return {"mem": mem.peak}


def probe(spec: str, dev: bc.Device, args) -> int:
    head, label = spec.split(":")
    impls, _, _ = make_impls(head, dev, args)
    impl = next(i for i in impls if i.label == label)
    impl.step()  # warm-up: optimizer state and autograd buffers
    print("PROBE " + json.dumps(measure(impl, dev)), flush=True)
    return 0


def _probe_argv(head: str, label: str, args) -> list[str]:
    argv = ["--probe", f"{head}:{label}", "--device", args.device, "--batch-size", str(args.batch_size),
            "--flow-size", "x".join(map(str, args.flow_size)), "--output-points", str(args.output_points),
            "--threads", str(torch.get_num_threads()), "--dtypes", ",".join(args.dtype_list)]
    return argv + (["--tiny"] if args.tiny else []) + (["--reference-route"] if args.reference_route else [])


@dataclass
class Case:
    head: str
    description: str
    impls: list[Impl]
    checkpointing: bool
    grads: dict
    results: dict[str, dict] = field(default_factory=dict)


def run_case(head: str, dev: bc.Device, args, log) -> Case:
    grads = grad_check(head, dev, args) if args.grad_check != "off" else {}
    if grads:
        log(f"  gradients ours vs transformers (fp32, CPU): {grads['grad_text']}")
    bc.trim()
    impls, batch, ckpt = make_impls(head, dev, args)
    case = Case(head, batch.description, impls, ckpt, grads)
    for impl in impls:
        flops, loss = bc.counted_flops(impl.step)  # warm-up step, FLOP-counted
        dev.sync()
        stats = (bc.run_probe(Path(__file__).resolve(), _probe_argv(head, impl.label, args))
                 if args.memory == "subprocess" else measure(impl, dev))
        case.results[impl.label] = {"flops": flops, "loss": float(loss), "times": [], **stats}
        log(f"  {impl.name}: {flops / 1e9:.1f} GFLOP per step, peak +{stats['mem'] / 2**20:.0f} MiB, "
            f"loss {float(loss):.4f}")
    for r in range(args.repeats):  # interleaved, rotating the order
        order = impls[r % len(impls):] + impls[:r % len(impls)]
        for impl in order:
            dev.sync()
            start = time.perf_counter()
            impl.step()
            dev.sync()
            case.results[impl.label]["times"].append(time.perf_counter() - start)
        log(f"  step {r + 1}: " + ", ".join(f"{i.label} {case.results[i.label]['times'][-1]:.3f}s" for i in impls))
    for res in case.results.values():
        res["median"] = statistics.median(res["times"])
        res["best"] = min(res["times"])
    return case


# ------------------------------------------------------------------------------------------------ report
def _median(case: Case, label: str) -> float:
    res = case.results.get(label)
    return res["median"] if res else math.nan


def _fmt(x: float, spec: str = ".3f", suffix: str = "") -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:{spec}}{suffix}"


def summary_table(cases: list[Case], dtypes: list[str]) -> str:
    cols = ["head"]
    for d in dtypes:
        cols += [f"{d}: transformers s", f"{d}: ours s", f"{d}: speed-up"]
    cols += ["fp32 peak MiB transformers / ours / ours ckpt", "checkpointing vs not (fp32): time, memory",
             "grad max rel err fp32"]
    with_reference = any("ours_ref" in c.results for c in cases)
    if with_reference:
        cols.append("fp32 fast routes: speed-up over ours on the reference route")
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in cases:
        cells = [c.head]
        for d in dtypes:
            hf, ours = _median(c, impl_label("transformers", d)), _median(c, impl_label("ours", d))
            cells += [_fmt(hf), _fmt(ours), _fmt(hf / ours, ".2f", "x")]
        mem = {k: c.results.get(k, {}).get("mem") for k in ("hf", "ours", "ours_ckpt")}
        cells.append(" / ".join(bc.mib(mem[k]) for k in ("hf", "ours", "ours_ckpt")))
        if "ours_ckpt" in c.results:
            share = mem["ours_ckpt"] / max(mem["ours"], 1)
            cells.append(f"time {_median(c, 'ours_ckpt') / _median(c, 'ours'):.2f}x, memory {share:.2f}x")
        else:
            cells.append("n/a (not supported)" if not c.checkpointing else "n/a (not run)")
        cells.append(_fmt(c.grads.get("grad_rel_err", math.nan), ".1e"))
        if with_reference:
            cells.append(_fmt(_median(c, "ours_ref") / _median(c, "ours"), ".2f", "x"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def detail_table(cases: list[Case], dev: bc.Device) -> str:
    unit = "TFLOP/s" if dev.type == "cuda" else "GFLOP/s"
    rows = [f"| head | implementation | median step s | best s | speed-up vs transformers same dtype | peak MiB | "
            f"{unit} (% of the dtype's matmul peak) | first-step loss |", "|---|---|---|---|---|---|---|---|"]
    for c in cases:
        for impl in c.impls:
            res = c.results[impl.label]
            base = c.results.get(impl_label("transformers", impl.dtype))
            ratio = "-" if impl.side == "transformers" else (
                f"{base['median'] / res['median']:.2f}x" if base else "n/a (transformers cannot train)")
            rate = bc.rate_text(res["flops"], res["median"], dev.peak[impl.dtype], dev.type)
            rows.append(f"| {c.head} | {impl.name} | {res['median']:.4f} | {res['best']:.4f} | {ratio} | "
                        f"{bc.mib(res['mem'])} | {rate} | {res['loss']:.4f} |")
    return "\n".join(rows)


def device_table(cases: list[Case]) -> str:
    rows = ["| head | CPU fp32 loss | device fp32 loss (rel diff) | device bf16 loss (rel diff) | device fp32 grads vs "
            "CPU (max rel err) | device grads ours vs transformers (max rel err) |", "|---|---|---|---|---|---|"]
    for c in cases:
        g = c.grads
        if "device_fp32_loss" not in g:
            continue
        rows.append(f"| {c.head} | {g['loss_cpu']:.5f} | {g['device_fp32_loss']:.5f} "
                    f"({g['device_fp32_loss_rel_diff']:.1e}) | {g['device_bf16_loss']:.5f} "
                    f"({g['device_bf16_loss_rel_diff']:.1e}) | {g['device_vs_cpu_grad_rel_err']:.1e} | "
                    f"{g['device_grad_rel_err']:.1e} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def targets(cases: list[Case], dev: bc.Device) -> list[str]:
    """Issue #16's training targets, each met / not met with the measured figure."""
    lines = []

    def add(ok: bool, text: str) -> None:
        lines.append(f"- [{'MET' if ok else 'NOT MET'}] {text}")

    for c in cases:
        if "grad_rel_err" in c.grads:
            err = c.grads["grad_rel_err"]
            add(c.grads["grad_ok"], f"{c.head}: fp32 gradients equal transformers' within 1e-4 relative ({err:.1e}, "
                                    f"worst: {c.grads['grad_worst']}; zero gradients zero on both sides)")
        if c.head in OURS_ONLY:
            res = c.results.get("ours")
            if res:
                share = res["flops"] / res["median"] / 1e9 / max(dev.peak["fp32"], 1e-9)
                add(share >= 0.6, f"{c.head} fp32 training at {100 * share:.0f} % of the fp32 matmul peak (>= 60 %)")
            continue
        for d, goal in (("fp32", 1.8), ("bf16", 1.25)):
            hf, ours = _median(c, impl_label("transformers", d)), _median(c, impl_label("ours", d))
            if not math.isnan(hf / ours):
                add(hf / ours >= goal, f"{c.head} {d} step: {hf / ours:.2f}x transformers (>= {goal}x)")
        hf_mem = c.results.get("hf", {}).get("mem")
        for label, goal in (("ours", 0.6), ("ours_ckpt", 0.25)):
            mem = c.results.get(label, {}).get("mem")
            if hf_mem and mem is not None:
                add(mem / hf_mem <= goal, f"{c.head} fp32 peak memory ({label}): {mem / hf_mem:.2f} of transformers' "
                                          f"(<= {goal})")
        if "ours_ckpt" in c.results:
            cost = _median(c, "ours_ckpt") / _median(c, "ours")
            saving = c.results["ours"]["mem"] / max(c.results["ours_ckpt"]["mem"], 1)
            add(cost <= 1.35 and saving >= 3, f"{c.head} checkpointing: {cost:.2f}x time (<= 1.35x) for "
                                              f"{saving:.1f}x less memory (>= 3x)")
    return lines


def parser_() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heads", default=",".join(HEADS), help=f"comma list of {', '.join(HEADS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per implementation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16 (autocast)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 2 (--tiny: 1)")
    parser.add_argument("--flow-size", default="368x496", help="optical-flow training tile HxW")
    parser.add_argument("--output-points", type=int, default=512, help="multimodal: sampled video points")
    parser.add_argument("--no-checkpointing", action="store_true", help="skip the activation-checkpointing rows")
    parser.add_argument("--reference-route", action="store_true",
                        help="also time ours on the reference route (kernel switches off), interleaved")
    parser.add_argument("--grad-check", choices=("same", "tiny", "off"), default="same",
                        help="gradient comparison on the timed configuration (same), on the tiny one, or none")
    parser.add_argument("--memory", choices=("subprocess", "inprocess"), default=None,
                        help="CPU peak memory per implementation in a fresh process (default, except --tiny) or here")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="1 timed step, flow tile 184x248")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny configs, batch 1, 1 timed step, checkpointing in fp32 only (smoke test)")
    parser.add_argument("--peak-size", type=int, default=None, help="matmul peak GEMM edge (default 2048 / 8192)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report to this file")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    return parser


def main_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = parser_()
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.flow_size = 1, "184x248"
    args.batch_size = args.batch_size or (1 if args.tiny else 2)
    if args.tiny and not args.probe:
        args.repeats = 1
        args.peak_size = args.peak_size or 384
    args.flow_size = tuple(int(n) for n in args.flow_size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype_list = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not set(args.dtype_list) <= {"fp32", "bf16"} or not args.dtype_list:
        parser.error("--dtypes: fp32 and/or bf16 (fp16 training needs a gradient scaler; not benchmarked)")
    if args.memory is None:
        args.memory = "inprocess" if args.tiny or torch.device(args.device).type == "cuda" else "subprocess"
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if set(heads) - set(HEADS):
        parser.error(f"unknown heads {sorted(set(heads) - set(HEADS))}; choose from {list(HEADS)}")
    args.head_list = heads
    return args


def report(cases: list[Case], dev: bc.Device, args, wall: float) -> str:
    memory = ("fresh process per implementation (RSS growth of the second step)" if args.memory == "subprocess"
              else ("CUDA max_memory_allocated growth of one step" if dev.type == "cuda"
                    else "in this process (RSS growth of one step; blurred by freed pages of earlier steps)"))
    lines = [f"Environment: {bc.environment(dev)}; total wall time {wall:.0f} s" + (" (tiny configs)" if args.tiny
                                                                                   else ""), "",
             f"Training step = forward + loss + backward + AdamW, train mode, attention dropout as configured; batch "
             f"{args.batch_size}; {args.repeats} timed step(s) after one warm-up each. Speed-up = transformers' median "
             f"/ ours, same dtype (bf16 = autocast on both sides). Activation checkpointing: ours "
             f"(gradient_checkpointing_enable); transformers' Perceiver has none (n/a). Memory: {memory}.", "",
             summary_table(cases, args.dtype_list), "", detail_table(cases, dev), ""]
    table = device_table(cases)
    if table:
        lines += ["Device against CPU (dropout 0, same weights and batch; losses of one step, gradients fp32):", "",
                  table, ""]
    lines.append("Inputs and fp32 gradient agreement with transformers (CPU, dropout 0):")
    lines += [f"- **{c.head}**: {c.description}; gradients: {c.grads.get('grad_text', 'not checked')}" for c in cases]
    lines += ["", "Targets (issue #16):"] + targets(cases, dev)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = main_options(argv)
    dev = bc.Device(args.device, args.peak_size)
    if args.probe:
        return probe(args.probe, dev, args)
    start = time.perf_counter()
    log = bc.logger(start)
    dev.measure_peak(args.dtype_list)
    cases = []
    for head in args.head_list:
        log(head)
        torch.manual_seed(0)
        case = run_case(head, dev, args, log)
        case.impls = [Impl(i.label, i.side, i.dtype, i.checkpointing, lambda: 0.0, i.reference)
                      for i in case.impls]  # free the models
        cases.append(case)
        bc.trim()
    dev.measure_peak(args.dtype_list)
    return bc.publish(report(cases, dev, args, time.perf_counter() - start), args.markdown)


if __name__ == "__main__":
    raise SystemExit(main())
