"""The batch machinery: how any job is planned, run on Ray Data, committed exactly once and summarised.

    runner.py         ``Job`` (what a job is) and ``prepare_run`` / ``run_job``: the driver's plan and books
    work_plan.py      the manifest on storage, cut into shards of consecutive items
    shard_worker.py   the one Ray Data stage: an actor that turns a shard number into a committed part file
    model_workers.py  the model actor every job subclasses: holds the model, batches rows, writes sidecars
    sink.py           the commit protocol: one part file per shard, whole or absent, deterministic name
    accounting.py     per-shard counts and metric sums, merged on the driver
    summary.py        the end-of-job summary: the exactly-once check, throughput, metrics
    schemas.py        the declared Arrow schema of every job's output and the bookkeeping columns
    ray_runtime.py    starting or attaching to Ray, and where model workers run (CPU / GPU)
"""
