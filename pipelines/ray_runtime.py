"""Starting (or attaching to) Ray and deciding where model workers run, before any work is scheduled.

* ``connect(address)``: a local Ray instance sized to this machine, or an existing cluster. If Ray is
  already initialised in this process (a notebook, a test fixture), it is reused and left running.
* ``plan_compute(...)``: GPU or CPU model workers, pool size and per-worker resources, from the flags and
  ``ray.cluster_resources()``. Asking for more GPUs than the cluster has fails here, immediately, instead of
  Ray Data waiting for actors that can never start.

Token authentication: Ray 2.60 turns it on for local clusters and keeps the token in ``~/.ray/auth_token``;
we leave ``RAY_AUTH_MODE`` to the user (set it to ``disabled`` to opt out; for ``--address`` the cluster's
token must be available the same way).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class ResourceError(RuntimeError):
    """The cluster cannot provide what the job asks for."""


def local_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def connect(address: str | None = None, num_cpus: int | None = None, env: dict[str, str] | None = None) -> bool:
    """Make sure Ray is initialised; returns True when this call started it (the caller shuts it down).

    ``env``: environment variables the workers need (storage endpoint and credentials,
    ``storage.worker_env()``), passed as the job's ``runtime_env`` so that workers on every node get them.

    ``ray.init`` replaces the driver's SIGTERM handler (with ``sys.exit`` and a C++ crash handler that aborts
    the process 3 s after the signal); a Python handler the caller installed (``jobs.cli``: a clean stop)
    is put back.
    """
    import ray

    if ray.is_initialized():
        return False
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        _init(ray, address, num_cpus, env)
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)
    return True


def _init(ray, address: str | None, num_cpus: int | None, env: dict[str, str] | None) -> None:
    runtime_env = {"env_vars": dict(env)} if env else None
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
    else:
        # address="local": always a new instance of our own, never a cluster someone else started on this
        # machine with `ray start` (plain ray.init() would attach to that one).
        ray.init(address="local", num_cpus=num_cpus or local_cpu_count(), include_dashboard=False,
                 runtime_env=runtime_env)


def configure_data_context(actor_start_timeout_s: float = 600.0, progress_bars: bool = True) -> None:
    """Ray Data settings every job shares (DataContext is per driver process)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.max_errored_blocks = 0  # bad inputs become error rows in our UDFs; a raised exception is a bug
    ctx.wait_for_min_actors_s = actor_start_timeout_s  # fail instead of hanging when actors cannot start
    ctx.enable_progress_bars = progress_bars
    ctx.execution_options.preserve_order = False  # rows carry ids; order is never relied on


@dataclass(frozen=True)
class ComputePlan:
    """Where the model stage runs: ``pool_size`` actors, each with these resources and torch threads."""

    device: str  # "cuda" or "cpu"
    pool_size: int
    num_gpus_per_worker: float | None
    num_cpus_per_worker: float
    torch_threads: int

    def describe(self) -> str:
        gpus = f", {self.num_gpus_per_worker:g} GPU" if self.num_gpus_per_worker else ""
        return (f"{self.pool_size} model worker(s) on {self.device} ({self.num_cpus_per_worker:g} CPU{gpus}, "
                f"{self.torch_threads} torch threads each)")


def check_local_gpus(num_gpus: int | None) -> None:
    """Before starting a local Ray: fail at once when more GPUs are asked for than this machine has."""
    if not num_gpus:
        return
    import torch

    available = torch.cuda.device_count()
    if num_gpus > available:
        raise ResourceError(f"asked for {num_gpus} GPU(s) but this machine has {available}; use --num-gpus 0 "
                            "for CPU workers or attach to a GPU cluster with --address")


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def plan_compute(num_gpus: int | None, num_workers: int | None, cpus_per_worker: float = 1.0,
                 torch_threads: int | None = None) -> ComputePlan:
    """Decide the model stage's resources from the flags and the cluster.

    num_gpus: None = every GPU the cluster has (CPU workers when it has none); 0 = CPU only; N = N GPUs,
        an error if the cluster has fewer.
    num_workers: model actors; None = one per GPU, or as many as the cluster's CPUs hold on CPU. On CPU the
        read/decode stage should ask for the same CPUs per task (``cpus_per_worker``): Ray then fuses it
        into the model actors, so every core alternates decoding and inference instead of a core waiting
        on the slower stage (measured in benchmarks/RESULTS.md).
    """
    available = cluster_gpus()
    if num_gpus is not None and num_gpus < 0:
        raise ResourceError(f"--num-gpus must be >= 0, got {num_gpus}")
    if num_workers is not None and num_workers < 1:
        raise ResourceError(f"--num-workers must be >= 1, got {num_workers}")
    wanted = available if num_gpus is None else num_gpus
    if wanted > available:
        raise ResourceError(f"asked for {wanted} GPU(s) but the Ray cluster has {available}; "
                            "use --num-gpus 0 for CPU workers or attach to a GPU cluster with --address")
    if wanted > 0:
        pool = num_workers or wanted
        return ComputePlan("cuda", pool, wanted / pool, cpus_per_worker, torch_threads or 1)
    cpus = cluster_cpus()
    pool = num_workers or max(1, int(cpus // cpus_per_worker))
    if pool * cpus_per_worker > cpus:
        raise ResourceError(f"{pool} model worker(s) x {cpus_per_worker:g} CPU need more than the cluster's "
                            f"{cpus} CPUs; lower --num-workers")
    return ComputePlan("cpu", pool, None, cpus_per_worker, torch_threads or max(1, int(cpus_per_worker)))
