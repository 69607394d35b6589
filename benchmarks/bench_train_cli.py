"""Samples/s of ``perceiver-jobs train`` at steady state against the raw step rate of the same model, batch and task
in one process (issue #16: the CLI should reach >= 90 % of the raw rate).

    python benchmarks/bench_train_cli.py                              # tiny language MLM on tests/data/text/prose
    python benchmarks/bench_train_cli.py --batch-size 32 --cpus-per-worker 2
    python benchmarks/bench_train_cli.py --log-every 20                # the CLI's reporting cost, 5x as often
    python benchmarks/bench_train_cli.py --num-workers 0              # the CLI's in-process mode (no Ray Train)

CLI: ``perceiver-jobs train --task mlm`` on local text with ``--log-every``, so that ``metrics.csv`` gets a row
(time, step) every few steps. Its steady rate is the samples between the first row at or after ``--skip-steps``
and the last row over the time between them: Ray's start-up, data listing, the first batches and the final
checkpoint are outside that window; the per-step work of the CLI (data streaming, span masking, gradient
clipping, the schedule, metric sums) and every report (``ray.train.report``, the CSV row, the progress line)
are inside. The CLI's own ``samples_per_s`` column, printed beside it, leaves the reports out.

Raw: the same head and configuration (``run.json``'s model config and head), batch size and sequence length, with
``torch.set_num_threads`` at the worker's thread count: a plain loop of forward + MLM loss + backward + AdamW on a
fixed batch (15 % of the bytes masked). It is timed before and after the CLI run (the machine may be shared), and
the ratio uses the mean of the two.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench_train.py; the CLI run inherits it (same threads)

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perceiver_core import PerceiverConfig, presets  # noqa: E402
from perceiver_core.heads import HEADS  # noqa: E402

TARGET = 0.9  # issue #16: CLI samples/s >= 90 % of the raw step rate
MASK_ID, FIRST_BYTE_ID = 3, 6  # PerceiverTokenizer: [MASK] and the first of the 256 byte ids


@dataclass(frozen=True)
class ModelSpec:
    """What the raw loop builds: head class name, model config (``to_dict``), sequence length, torch threads."""

    head: str
    config: str  # the config dict as sorted JSON, so that two specs compare by value
    seq_len: int
    threads: int

    @classmethod
    def of(cls, head: str, config: dict, seq_len: int, threads: int) -> ModelSpec:
        return cls(head, json.dumps(config, sort_keys=True, default=str), int(seq_len), int(threads))


def preset_spec(args: argparse.Namespace) -> ModelSpec:
    """The spec the CLI should build, from the preset alone (for the raw loop before the CLI run)."""
    config = presets.config(args.preset, tiny=args.tiny)
    return ModelSpec.of("PerceiverForMaskedLM", config.to_dict(), config.max_position_embeddings, args.cpus_per_worker)


@dataclass
class CliRun:
    """What one CLI run gave: the steady window and the whole run's wall time."""

    samples_per_s: float  # steady state, from metrics.csv timestamps
    logged_rate: float | None  # median of the samples_per_s column over the same rows (the CLI's own figure)
    first_step: int
    last_step: int
    window_s: float
    startup_s: float  # process start -> first metrics row
    wall_s: float
    spec: ModelSpec  # run.json's head and model config, the sequence length and the worker's threads


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m jobs train``."""
    script = Path(sys.executable).with_name("perceiver-jobs")
    return [str(script), "train"] if script.exists() else [sys.executable, "-m", "jobs", "train"]


def run_cli(args: argparse.Namespace, out: Path) -> CliRun:
    name = "bench-cli"
    command = cli_command() + [
        "--task", "mlm", "--data", *[str(p) for p in args.data], "--preset", args.preset,
        "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--log-every", str(args.log_every),
        "--checkpoint-every", str(args.steps), "--warmup-steps", "1", "--output-dir", str(out), "--name", name,
        "--num-workers", str(args.num_workers), "--cpus-per-worker", str(args.cpus_per_worker), "--seed", "0"]
    if args.tiny:
        command.append("--tiny")
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.time() - start
    if done.returncode:
        raise SystemExit(f"perceiver-jobs train failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                         f"{done.stderr[-4000:]}")
    run = out / name
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    steady = [r for r in rows if int(r["step"]) >= args.skip_steps]
    if len(steady) < 2:
        raise SystemExit(f"metrics.csv has {len(steady)} train rows at or after step {args.skip_steps}; raise --steps")
    first, last = steady[0], steady[-1]
    steps = int(last["step"]) - int(first["step"])
    window = float(last["time"]) - float(first["time"])
    world = max(args.num_workers, 1)
    logged = [float(r["samples_per_s"]) for r in steady[1:] if r.get("samples_per_s")]
    record = json.loads((run / "run.json").read_text())
    train_config, model_config = record["train_config"], record["model_config"]
    seq_len = (train_config.get("text") or {}).get("seq_len") or model_config["max_position_embeddings"]
    return CliRun(samples_per_s=steps * args.batch_size * world / window,
                  logged_rate=statistics.median(logged) if logged else None, first_step=int(first["step"]),
                  last_step=int(last["step"]), window_s=window, startup_s=float(rows[0]["time"]) - start,
                  wall_s=wall, spec=ModelSpec.of(record["head"], model_config, seq_len,
                                                 train_config.get("cpus_per_worker") or args.cpus_per_worker))


def raw_rate(spec: ModelSpec, batch_size: int, steps: int, warmup: int) -> float:
    """Samples/s of a plain forward + loss + backward + AdamW loop on this model, batch and task (MLM)."""
    torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    model = HEADS[spec.head](PerceiverConfig.from_dict(json.loads(spec.config))).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(FIRST_BYTE_ID, FIRST_BYTE_ID + 256, (batch_size, spec.seq_len), generator=g)
    masked = torch.rand(batch_size, spec.seq_len, generator=g) < 0.15
    inputs = torch.where(masked, torch.full_like(ids, MASK_ID), ids)
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    attention_mask = torch.ones_like(ids)

    def step() -> None:
        loss = model(inputs=inputs, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def report(cli: CliRun, raws: list[float], args: argparse.Namespace, note: str) -> str:
    raw = statistics.mean(raws)
    ratio = cli.samples_per_s / raw
    logged = "n/a" if cli.logged_rate is None else f"{cli.logged_rate:.1f}"
    return "\n".join([
        f"perceiver-jobs train --task mlm --preset {args.preset}{' --tiny' if args.tiny else ''} --batch-size "
        f"{args.batch_size} --num-workers {args.num_workers} --cpus-per-worker {args.cpus_per_worker}; "
        f"{cli.spec.head}, seq_len {cli.spec.seq_len}, {cli.spec.threads} torch threads; torch {torch.__version__}",
        f"CLI: steps {cli.first_step}-{cli.last_step} in {cli.window_s:.1f} s -> {cli.samples_per_s:.1f} samples/s "
        f"(its own samples_per_s column, median: {logged}); start-up to the first row {cli.startup_s:.0f} s, "
        f"whole run {cli.wall_s:.0f} s",
        f"raw loop (same model, batch, task; {args.raw_steps} steps after {args.raw_warmup}): "
        + ", ".join(f"{r:.1f}" for r in raws) + f" samples/s ({note}); mean {raw:.1f}",
        f"ratio CLI / raw: {ratio:.2f} (target >= {TARGET}: {'MET' if ratio >= TARGET else 'NOT MET'})"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", default=[ROOT / "tests" / "data" / "text" / "prose"])
    parser.add_argument("--preset", default="language")
    parser.add_argument("--full-size", dest="tiny", action="store_false",
                        help="the preset itself, not its tiny variant")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1000, help="CLI --max-steps")
    parser.add_argument("--skip-steps", type=int, default=200, help="steady window starts at this step")
    parser.add_argument("--log-every", type=int, default=100,
                        help="CLI --log-every; every report costs the CLI ray.train.report + a CSV row")
    parser.add_argument("--num-workers", type=int, default=1, help="CLI --num-workers (0: in-process)")
    parser.add_argument("--cpus-per-worker", type=int, default=torch.get_num_threads())
    parser.add_argument("--raw-steps", type=int, default=150)
    parser.add_argument("--raw-warmup", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the CLI run here (default: a temp dir)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    expected = preset_spec(args)
    before = raw_rate(expected, args.batch_size, args.raw_steps, args.raw_warmup)
    if args.output_dir:
        cli = run_cli(args, args.output_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-train-cli-") as tmp:
            cli = run_cli(args, Path(tmp))
    after = raw_rate(cli.spec, args.batch_size, args.raw_steps, args.raw_warmup)
    if cli.spec == expected:
        raws, note = [before, after], "before, after the CLI run"
    else:  # the CLI changed the preset's config: only the loop on run.json's config counts
        raws, note = [after], "after the CLI run, on run.json's config (the preset's differs)"
    text = report(cli, raws, args, note)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
