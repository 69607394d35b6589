"""Pipeline benchmark: the video job end to end against each of its stages alone, on the same clips.

    python benchmarks/bench_pipeline.py                          # tiny multimodal model, many clips
    python benchmarks/bench_pipeline.py --preset multimodal --full --repeats 1 --clips-per-video 1 \\
        --files torchcodec__nasa_13013.mp4 torchcodec__h265_video.mp4     # published config, a few clips

The corpus is the sample clips in tests/data/videos (the good ones) repeated ``--repeats`` times, each copy
a separate manifest row. Three measurements, in one run:

1. decode only: the job's decode function over the corpus in a process pool of one process per core
   (no Ray), clips/s = D;
2. model only: the job's model worker class (same batch size) over clips already decoded in memory (one
   copy of the corpus, cycled), both as one process using every core's torch thread and as one
   single-threaded process per core; the faster counts, clips/s = M;
3. end to end: ``run_job`` on local Ray (actors, object store, Parquet sink, summary), clips/s = E.
   Ray's own start-up (``ray.init``) is reported separately and not counted.

Ideal on a CPU-only machine, where decode and model share the cores: 1 / (1/D + 1/M). With a GPU, the
stages overlap: min(D, M). Efficiency = E / ideal (the issue's target: >= 0.8). With ``--scales`` the
end-to-end run is repeated at several corpus sizes and the peak memory of the whole Ray process tree
(driver, raylet, workers; PSS) is reported for each, to show it stays flat as the corpus grows. With
``--trials N`` every measurement is repeated N times, interleaved, and the best is kept (on a shared
machine the fastest run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_FILES = ["moviepy__big_buck_bunny_432_433.webm", "torchcodec__av1_video.mkv", "torchcodec__h265_video.mp4",
                 "torchcodec__nasa_13013.mp4"]


def corpus_manifest(files: list[Path], repeats: int) -> pa.Table:
    """Every file ``repeats`` times, each copy its own manifest row (id ``<name>#<k>``)."""
    rows = [{"id": f"{f.name}#{k}", "path": str(f.resolve()), "relpath": f.name, "size_bytes": f.stat().st_size,
             "label_index": None} for k in range(repeats) for f in files]
    return pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("path", pa.string()),
                                                        ("relpath", pa.string()), ("size_bytes", pa.int64()),
                                                        ("label_index", pa.int32())]))


def _decode_one(args):
    from pipelines.readers.video_decode import decode_clips

    path, spec = args
    return len(decode_clips(path, spec))


def bench_decode(files: list[Path], repeats: int, spec, processes: int) -> tuple[int, float]:
    work = [(str(f), spec) for _ in range(repeats) for f in files]
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes) as pool:
        pool.map(_decode_one, work[:processes])  # start-up and imports are not decode time
        start = time.perf_counter()
        clips = sum(pool.map(_decode_one, work, chunksize=1))
        return clips, time.perf_counter() - start


def _model_process(job, clips_ipc: bytes, n_clips: int, threads: int, barrier, results) -> None:
    """One model worker (the job's class) over in-memory clips; times only the steady state."""
    clips = pa.ipc.open_stream(clips_ipc).read_all()
    worker = job.worker_cls(spec=job.model, device="cpu", torch_threads=threads, **job.worker_kwargs)
    b = job.batch_size
    batches = [clips.slice(i, b) for i in range(0, clips.num_rows, b)]
    barrier.wait()  # every process has loaded and warmed up its model
    done, start, i = 0, time.perf_counter(), 0
    while done < n_clips:
        done += worker(batches[i % len(batches)]).num_rows
        i += 1
    results.put((done, time.perf_counter() - start))


def bench_model(job, files: list[Path], spec, total_clips: int, processes: int, threads: int
                ) -> tuple[int, float]:
    """The job's model worker on clips decoded beforehand (one copy of the corpus, cycled), in
    ``processes`` processes with ``threads`` torch threads each; returns (clips, seconds)."""
    from pipelines.stages.video import decode_videos

    manifest = corpus_manifest(files, 1)
    clips = pa.concat_tables(t for i in range(manifest.num_rows) for t in decode_videos(manifest.slice(i, 1), spec))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, clips.schema) as writer:
        writer.write_table(clips)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    share = -(-total_clips // processes)
    procs = [ctx.Process(target=_model_process, args=(job, sink.getvalue().to_pybytes(), share, threads, barrier,
                                                      results)) for _ in range(processes)]
    for p in procs:
        p.start()
    outcomes = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(n for n, _ in outcomes), max(t for _, t in outcomes)


class TreeMemory:
    """Peak memory of this process and all its descendants (the local Ray cluster), sampled in a thread.

    PSS (proportional set size): shared pages, such as the object store's, are split between the
    processes mapping them instead of being counted once per process as RSS would.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        import psutil

        self.psutil, self.interval, self.peak, self._stop = psutil, interval_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = self.psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except self.psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def bench_end_to_end(config, manifest: pa.Table) -> dict:
    from jobs.common import CommonConfig  # noqa: F401
    from jobs.video import build_job
    from pipelines.batch import ray_runtime
    from pipelines.batch.runner import RunOptions, run_job

    c = config.common
    job = build_job(config, items=lambda: iter(manifest.to_pylist()))
    ray_runtime.configure_data_context(progress_bars=False)
    plan = ray_runtime.plan_compute(c.num_gpus, c.num_workers, c.cpus_per_worker)
    with TreeMemory() as memory:
        start = time.perf_counter()
        summary = run_job(job, RunOptions(output=c.output, plan=plan))
        wall = time.perf_counter() - start
    return {"clips": summary.counts["rows_ok"], "wall": wall, "peak_rss": memory.peak, "plan": plan.describe(),
            "complete": summary.complete}


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="multimodal")
    parser.add_argument("--full", action="store_true", help="the published configuration (default: tiny)")
    parser.add_argument("--files", nargs="+", default=DEFAULT_FILES)
    parser.add_argument("--repeats", type=int, default=16, help="copies of the sample files in the corpus")
    parser.add_argument("--scales", type=int, nargs="+", default=[1],
                        help="end-to-end runs at these multiples of --repeats (memory vs corpus size)")
    parser.add_argument("--clips-per-video", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--task", default="both")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--read-cpus", type=float, default=None)
    parser.add_argument("--skip-stages", action="store_true", help="only the end-to-end run(s)")
    parser.add_argument("--trials", type=int, default=1, help="repeat every measurement, keep the best")
    parser.add_argument("--model-layouts", nargs="+", default=None, metavar="PxT",
                        help="model-only runs as P processes x T torch threads (default: 1x<cores> <cores>x1)")
    return parser


def report(results: dict[str, tuple[int, float]], runs: dict[int, dict], trials: int) -> None:
    """Print the best figures of every stage and end-to-end run, and the efficiency against the ideal."""
    runs_list = sorted(runs.items())
    print("\nbest of", trials, "trial(s):")
    for key in ("decode", "model"):
        if key in results:
            n, t = results[key]
            print(f"{key:6} only : {n / t:.3g} clips/s")
    for scale, r in runs_list:
        print(f"end to end x{scale}: {r['clips']} clips, {r['clips'] / r['wall']:.3g} clips/s, "
              f"peak PSS {r['peak_rss'] / 2**20:.0f} MiB")

    if "decode" in results:
        d = results["decode"][1] / results["decode"][0]
        m = results["model"][1] / results["model"][0]
        ideal = 1 / (d + m)
        print(f"\nper clip: decode {d * 1e3:.1f} ms + model {m * 1e3:.1f} ms -> ideal {ideal:.3g} clips/s "
              f"(CPU only: stages share the cores)")
        for scale, r in runs_list:
            e = r["clips"] / r["wall"]
            print(f"efficiency x{scale}: {e:.3g} / {ideal:.3g} = {e / ideal:.2f}")


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)

    import ray

    from jobs.cli import build_parser
    from jobs.video import config_from_args
    from pipelines.batch.ray_runtime import local_cpu_count

    files = [ROOT / "tests" / "data" / "videos" / name for name in args.files]
    cores = local_cpu_count()
    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    cli = ["video", "--input", str(files[0]), "--output", str(tmp / "out"), "--model", args.preset,
           "--random-init", "--batch-size", str(args.batch_size), "--clips-per-video", str(args.clips_per_video),
           "--task", args.task, "--cpus-per-worker", str(args.cpus_per_worker), "--no-progress"]
    cli += [] if args.full else ["--tiny"]
    cli += [] if args.num_workers is None else ["--num-workers", str(args.num_workers)]
    cli += [] if args.read_cpus is None else ["--read-cpus", str(args.read_cpus)]
    config = config_from_args(build_parser().parse_args(cli))
    from jobs.video import build_job

    job = build_job(config, items=lambda: iter(corpus_manifest(files, 1).to_pylist()))
    spec = job.read_kwargs["spec"]
    name = f"{args.preset}{'' if args.full else ' (tiny)'}"
    print(f"model: {name}; clip {spec.num_frames}x{spec.height}x{spec.width}, "
          f"{spec.audio_samples_per_clip} audio samples; batch {args.batch_size}; {cores} cores; "
          f"corpus {len(files)} files x {args.repeats}, <= {args.clips_per_video} clips each", flush=True)

    results: dict[str, tuple[int, float]] = {}

    def keep_best(key: str, clips: int, seconds: float) -> None:
        if key not in results or clips / seconds > results[key][0] / results[key][1]:
            results[key] = (clips, seconds)

    ray_up = False
    runs: dict[int, dict] = {}
    for trial in range(args.trials):
        if not args.skip_stages:
            if ray_up:  # stage-alone runs get the machine to themselves
                ray.shutdown()
                ray_up = False
            clips, t = bench_decode(files, args.repeats, spec, cores)
            keep_best("decode", clips, t)
            print(f"decode only : {clips} clips in {t:.2f} s = {clips / t:.3g} clips/s ({cores} processes)",
                  flush=True)
            layouts = ([tuple(int(v) for v in x.split("x")) for x in args.model_layouts] if args.model_layouts
                       else [(1, cores), (cores, 1)] if cores > 1 else [(1, 1)])
            for processes, threads in layouts:
                mclips, mt = bench_model(job, files, spec, clips, processes, threads)
                keep_best("model", mclips, mt)
                print(f"model only  : {mclips} clips in {mt:.2f} s = {mclips / mt:.3g} clips/s "
                      f"({processes} process(es) x {threads} torch thread(s))", flush=True)
        if not ray_up:
            t0 = time.perf_counter()
            ray.init(address="local", num_cpus=cores, include_dashboard=False)
            print(f"ray.init    : {time.perf_counter() - t0:.2f} s (not counted)", flush=True)
            ray_up = True
        for scale in args.scales:
            out = tmp / f"out_t{trial}_x{scale}"
            cli_run = cli.copy()
            cli_run[cli_run.index("--output") + 1] = str(out)
            run_config = config_from_args(build_parser().parse_args(cli_run))
            r = bench_end_to_end(run_config, corpus_manifest(files, args.repeats * scale))
            best = runs.get(scale)
            if best is None or r["clips"] / r["wall"] > best["clips"] / best["wall"]:
                runs[scale] = {**r, "peak_rss": max(r["peak_rss"], best["peak_rss"] if best else 0)}
            elif best is not None:
                best["peak_rss"] = max(best["peak_rss"], r["peak_rss"])
            print(f"end to end  : x{scale}: {r['clips']} clips in {r['wall']:.2f} s = {r['clips'] / r['wall']:.3g} "
                  f"clips/s; peak PSS of the Ray process tree {r['peak_rss'] / 2**20:.0f} MiB; {r['plan']}; "
                  f"complete={r['complete']}", flush=True)
    ray.shutdown()
    report(results, runs, args.trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
