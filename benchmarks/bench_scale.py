"""How the driver scales: manifest, resume and summary at 10 k - 1 M inputs, text planning at 1 M - 10 M lines,
and the end-to-end overhead of a job against a plain Ray Data pipeline doing the same work.

    python benchmarks/bench_scale.py                       # everything (about 10-20 min on 2 cores)
    python benchmarks/bench_scale.py --only manifest --sizes 10000 100000
    python benchmarks/bench_scale.py --only e2e --images 256

Each driver measurement runs in a fresh Python process and reports its wall time and peak RSS
(``ru_maxrss``), so nothing measured earlier inflates a later figure.

* ``manifest``: N empty ``.mp4`` files in folders of 1,000; ``prepare_run`` of the video job (listing, ids,
  manifest files, ``_meta/job.json``; the tiny model is validated too, as in a real run).
* ``resume``: the same N-input job *finished*: one part file per shard and a commit log (as workers leave
  them); a rerun's ``prepare_run`` + summary merge, i.e. what happens before Ray would start.
* ``text``: a file of N lines; planning of the text job (range items with newline counting).
* ``e2e``: ``perceiver-jobs images`` (tiny vision model) against ``read_binary_files -> map_batches(decode +
  preprocess + model, same actor pool) -> write_parquet`` on the same images and the same local Ray, as a
  throughput ratio; on local disk and on an S3 API server (moto) when installed. Also the bytes the driver
  received, against the bytes of the output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _child(case: str, **kwargs) -> dict:
    """Run ``case`` in a fresh interpreter; returns its JSON result (+ peak RSS in MiB)."""
    cmd = [sys.executable, __file__, "--child", case, json.dumps(kwargs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_tree(root: Path, n: int, per_folder: int = 1000) -> None:
    for k in range(n):
        folder = root / f"d{k // per_folder:05d}"
        if k % per_folder == 0:
            folder.mkdir(parents=True, exist_ok=True)
        open(folder / f"v{k:08d}.mp4", "wb").close()


def _video_job(inputs: str, output: str):
    from jobs.cli import build_parser
    from jobs.video import build_job, config_from_args

    args = build_parser().parse_args(["video", "--input", inputs, "--output", output, "--model", "multimodal",
                                      "--random-init", "--tiny"])
    return build_job(config_from_args(args))


def child_manifest(inputs: str, output: str) -> dict:
    from pipelines.batch.runner import prepare_run

    base = _peak_mib()
    start = time.perf_counter()
    job = _video_job(inputs, output)
    prepared = prepare_run(job, output)
    wall = time.perf_counter() - start
    return {"items": prepared.plan.num_items, "shards": prepared.plan.num_shards, "wall_s": wall,
            "peak_rss_mib": _peak_mib(), "import_rss_mib": base}


def finish_job(output: str) -> int:
    """Leave ``output`` as a finished job's workers would: a part per shard and the commit log."""
    import pyarrow as pa

    from pipelines import storage
    from pipelines.batch import sink
    from pipelines.batch.accounting import ShardStats
    from pipelines.batch.runner import JOB_FILE
    from pipelines.batch.work_plan import PlanInfo

    out = storage.resolve(output)
    plan = PlanInfo(**json.loads(out.join(JOB_FILE).read_bytes())["plan"])
    log = sink.CommitLog(out, interval_s=1e9)
    for shard in range(plan.num_shards):
        n = min(plan.shard_size, plan.num_items - shard * plan.shard_size)
        stats = ShardStats()
        stats.counts.update(inputs=n, inputs_ok=n, rows=4 * n, rows_ok=4 * n)
        stats.sums = {"psnr_video.sum": 20.0 * 4 * n, "psnr_video.n": 4.0 * n}
        open(os.path.join(out.path, sink.part_name(shard)), "wb").close()
        log.add(pa.table({"shard": [shard], "part": [sink.part_name(shard)], "stats": [stats.to_json()]}))
    log.flush()
    return plan.num_shards


def child_resume(inputs: str, output: str) -> dict:
    from pipelines.batch import sink
    from pipelines.batch.runner import prepare_run
    from pipelines.batch.summary import summarize

    start = time.perf_counter()
    job = _video_job(inputs, output)
    prepared = prepare_run(job, output)
    merged, footers = sink.merged_stats(prepared.out, prepared.done)
    summary = summarize("video", merged, plan=prepared.plan, committed_shards=len(prepared.done),
                        items_are_inputs=True, processed_shards=0, processed_inputs=0, wall_time_s=0.0,
                        footers_read=footers)
    wall = time.perf_counter() - start
    return {"pending": len(prepared.pending), "complete": summary.complete, "inputs": summary.counts["inputs"],
            "wall_s": wall, "peak_rss_mib": _peak_mib()}


def make_text(path: Path, n: int) -> int:
    line = b"the quick brown fox jumps over the lazy dog, a line of about sixty bytes\n"
    with open(path, "wb") as f:
        f.writelines(line * 10_000 for _ in range(n // 10_000))
        f.write(line * (n % 10_000))
    return path.stat().st_size


def child_text(inputs: str, output: str) -> dict:
    from jobs.cli import build_parser
    from jobs.text import build_job, config_from_args
    from pipelines.batch.runner import prepare_run

    start = time.perf_counter()
    args = build_parser().parse_args(["text", "--task", "fill-mask", "--input", inputs, "--output", output,
                                      "--model", "language", "--random-init", "--tiny"])
    prepared = prepare_run(build_job(config_from_args(args)), output)
    wall = time.perf_counter() - start
    return {"items": prepared.plan.num_items, "shards": prepared.plan.num_shards, "wall_s": wall,
            "peak_rss_mib": _peak_mib()}


CHILDREN = {"manifest": child_manifest, "resume": child_resume, "text": child_text}


def bench_manifest(sizes: list[int], tmp: Path) -> list[dict]:
    rows = []
    for n in sizes:
        tree, out = tmp / f"tree{n}", tmp / f"out{n}"
        t0 = time.perf_counter()
        make_tree(tree, n)
        made = time.perf_counter() - t0
        first = _child("manifest", inputs=str(tree), output=str(out))
        shards = finish_job(str(out))
        again = _child("resume", inputs=str(tree), output=str(out))
        assert again["pending"] == 0 and again["complete"] and again["inputs"] == n, again
        rows.append({"n": n, "shards": shards, "manifest_s": first["wall_s"], "manifest_rss": first["peak_rss_mib"],
                     "import_rss": first["import_rss_mib"], "resume_s": again["wall_s"],
                     "resume_rss": again["peak_rss_mib"], "tree_s": made})
        print(f"manifest N={n:>9,}: {first['wall_s']:7.1f} s, peak RSS {first['peak_rss_mib']:6.0f} MiB "
              f"(after imports {first['import_rss_mib']:.0f}); resume+summary of the finished job "
              f"({shards:,} parts): {again['wall_s']:6.1f} s, peak RSS {again['peak_rss_mib']:6.0f} MiB", flush=True)
        shutil.rmtree(tree)
        shutil.rmtree(out)
    return rows


def bench_text(lines: list[int], tmp: Path) -> list[dict]:
    rows = []
    for n in lines:
        path, out = tmp / f"corpus{n}.txt", tmp / f"text{n}"
        size = make_text(path, n)
        r = _child("text", inputs=str(path), output=str(out))
        rows.append({"lines": n, "bytes": size, **r})
        print(f"text {n:>11,} lines ({size / 2**20:7.0f} MiB): plan {r['wall_s']:6.1f} s, {r['items']} items, "
              f"peak RSS {r['peak_rss_mib']:6.0f} MiB", flush=True)
        path.unlink()
        shutil.rmtree(out)
    return rows


# ----------------------------------------------------------------------------- end to end


class PlainImageModel:
    """The baseline's model stage: the same decode, preprocessing and model as the images job."""

    def __init__(self, processor) -> None:
        import torch

        from pipelines.batch.model_workers import ModelSpec

        torch.set_num_threads(1)
        self.model = ModelSpec("vision-learned", random_init=True, tiny=True).load()
        self.processor = processor

    def __call__(self, batch):
        import numpy as np
        import torch

        from perceiver_core.image_processor import preprocess_batch
        from pipelines.readers.image_io import load_image

        pixels = [preprocess_batch(torch.from_numpy(load_image(b)).permute(2, 0, 1)[None], self.processor)[0]
                  for b in batch["bytes"]]
        with torch.inference_mode():
            logits = self.model(inputs=torch.stack(pixels)).logits
        scores, ids = logits.softmax(-1).topk(5, dim=-1)
        return {"path": batch["path"], "top_k_ids": ids.numpy().astype(np.int32),
                "top_k_scores": scores.numpy()}


def plain_pipeline(paths: list[str], output: str, filesystem=None) -> float:
    import ray
    from ray.data import ActorPoolStrategy

    from perceiver_core import presets
    from perceiver_core.image_processor import PerceiverImageProcessorConfig

    size = presets.config("vision-learned", tiny=True).image_size
    processor = PerceiverImageProcessorConfig(size=(size, size), crop_size=(size, size))
    start = time.perf_counter()
    ds = ray.data.read_binary_files(paths, include_paths=True, filesystem=filesystem)
    # Two actors at half a CPU each leave the read task its CPU (with 1 CPU each, on a 2-core machine the
    # read task would wait forever behind them); our job's two actors hold 1 CPU each and read themselves.
    ds = ds.map_batches(PlainImageModel, fn_constructor_kwargs={"processor": processor}, batch_size=16,
                        compute=ActorPoolStrategy(size=2), num_cpus=0.5)
    ds.write_parquet(output, filesystem=filesystem)
    return time.perf_counter() - start


def bench_e2e(n_images: int, tmp: Path, s3: bool) -> list[dict]:
    import ray

    from jobs.cli import main as cli

    sample = sorted(p for p in (ROOT / "tests" / "data" / "images").rglob("*")
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png") and "broken" not in p.parts
                    and "truncated" not in p.name and "broken" not in p.name)
    folder = tmp / "images"
    folder.mkdir()
    for k in range(n_images):
        src = sample[k % len(sample)]
        shutil.copy(src, folder / f"img{k:06d}{src.suffix}")
    paths = sorted(str(p) for p in folder.iterdir())
    targets = [("local", None)]
    server = None
    if s3:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError:
            print("e2e on S3 skipped: moto[server] is not installed")
        else:
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server._server.server_address[:2]
            os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"})
            targets.append(("s3", f"http://{host}:{port}"))
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    rows = []
    try:
        for where, endpoint in targets:
            fs = None
            if where == "local":
                inputs, ours_out, plain_out = str(folder), str(tmp / "ours"), str(tmp / "plain")
            else:
                import boto3
                import pyarrow.fs as pafs

                client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
                client.create_bucket(Bucket="bench")
                for p in paths:
                    client.upload_file(p, "bench", f"images/{os.path.basename(p)}")
                inputs, ours_out = "s3://bench/images", "s3://bench/ours"
                fs = pafs.S3FileSystem(endpoint_override=endpoint.removeprefix("http://"), scheme="http")
                paths_s3 = [f"bench/images/{os.path.basename(p)}" for p in paths]
                plain_out = "bench/plain"
            # Alternate the two pipelines twice on fresh outputs and keep each one's best time, so neither
            # profits alone from a warm Ray (worker processes, imports, the object store).
            plain_times, ours_times = [], []
            for rep in range(2):
                plain_times.append(plain_pipeline(paths if where == "local" else paths_s3, f"{plain_out}{rep}",
                                                  filesystem=fs))
                start = time.perf_counter()
                rc = cli(["images", "--input", inputs, "--output", f"{ours_out}{rep}", "--model", "vision-learned",
                          "--random-init", "--tiny", "--num-workers", "2", "--batch-size", "16", "--no-progress"])
                ours_times.append(time.perf_counter() - start)
                assert rc == 0
            plain_s, ours_s = min(plain_times), min(ours_times)
            ours_out = f"{ours_out}1"
            from pipelines import storage

            summary = json.loads(storage.resolve(ours_out).join("_summary.json").read_bytes())
            out_bytes = sum(size for name, size in storage.list_names(storage.resolve(ours_out))
                            if name.endswith(".parquet"))
            row = {"where": where, "images": n_images, "plain_s": plain_s, "ours_s": ours_s,
                   "ratio": plain_s / ours_s, "driver_bytes": summary["run"]["driver_bytes_received"],
                   "output_bytes": out_bytes, "shards": summary["counts"]["shards"]}
            rows.append(row)
            print(f"e2e {where:5s} {n_images} images: plain Ray Data {plain_s:6.1f} s, perceiver-jobs {ours_s:6.1f} s "
                  f"(incl. planning and summary) -> throughput ratio {row['ratio']:.2f}; driver received "
                  f"{row['driver_bytes']:,} B for {row['shards']} shards, output {out_bytes:,} B", flush=True)
    finally:
        ray.shutdown()
        if server is not None:
            server.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("manifest", "text", "e2e"), action="append")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](**json.loads(args.child[1]))))
        return 0
    only = set(args.only or ("manifest", "text", "e2e"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    results: dict = {}
    try:
        if "manifest" in only:
            results["manifest"] = bench_manifest(args.sizes, tmp)
        if "text" in only:
            results["text"] = bench_text(args.lines, tmp)
        if "e2e" in only:
            results["e2e"] = bench_e2e(args.images, tmp, s3=not args.no_s3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
