"""Starting (or attaching to) Ray and deciding where model workers run, before any work is scheduled.

* ``connect(address)``: a local Ray instance sized to this machine, or an existing cluster. If Ray is
  already initialised in this process (a notebook, a test fixture), it is reused and left running.
* ``plan_compute(...)``: GPU or CPU model workers, pool size and per-worker resources, from the flags and
  ``ray.cluster_resources()``. Asking for more GPUs than the cluster has fails here, immediately, instead of
  Ray Data waiting for actors that can never start.

Token authentication: Ray 2.60 turns it on for local clusters and keeps the token in ``~/.ray/auth_token``;
we leave ``RAY_AUTH_MODE`` to the user (set it to ``disabled`` to opt out; for ``--address`` the cluster's
token must be available the same way). Ray announces the default with a warning on every start; that line
is dropped (``quiet_ray_logs``), the setting itself is untouched.

Known noise that every run would print and that says nothing about the job is silenced precisely, by exact
message, never by level: the token-auth announcement, Ray Data's "progress bars disabled" notice (we show our
own progress, ``pipelines.batch.progress``) and the core worker's "constructor arguments in the object store"
error (``silence_actor_restart_warning``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# logger name -> starts of the messages dropped from it (see the module docstring)
QUIET_MESSAGES = {
    "ray._private.authentication.authentication_token_setup": (
        "Token authentication is enabled for this Ray cluster",),
    "ray.data._internal.progress": ("Progress bars disabled", "Progress bars for operators disabled"),
}
_PLACEHOLDER_RESOURCE = "perceiver_jobs_placeholder"  # no node has it: the placeholder actor never starts
_restart_warning_silenced = False


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_ray_logs() -> None:
    """Drop the known noise lines of ``QUIET_MESSAGES`` from Ray's Python loggers (idempotent)."""
    for name, prefixes in QUIET_MESSAGES.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in target.filters):
            target.addFilter(_DropMessages(prefixes))


@contextlib.contextmanager
def _stderr_muted() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block (C++ logs bypass ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def silence_actor_restart_warning() -> None:
    """Keep Ray's core worker from printing, at ERROR level, "Actor ... has constructor arguments in the object
    store and max_restarts > 0" when Ray Data starts the model actors (ray-project/ray#57733).

    Ray Data always passes its actors object refs (the data context, the map transformer) and restarts them
    (``max_restarts=-1``, which the job relies on), so the line appears on every run although nothing is
    wrong here: the driver put those objects and the running dataset keeps them referenced, so a restarted
    actor finds them while the driver's node is up (#53727 is about arguments that went out of scope). The C++ side
    prints it once per process (``RAY_LOG_ONCE_PER_PROCESS``) and has no switch, so this creates, once, a
    placeholder actor that meets the same condition with stderr muted for that one call, and kills it; it
    asks for a resource no node has, so it never starts a process. Anything going wrong here is ignored.
    """
    global _restart_warning_silenced
    if _restart_warning_silenced:
        return
    _restart_warning_silenced = True
    try:
        import ray

        @ray.remote(num_cpus=0, max_restarts=1, resources={_PLACEHOLDER_RESOURCE: 1})
        class _Placeholder:
            def __init__(self, ref) -> None:
                pass

        ref = ray.put(None)
        with _stderr_muted():
            actor = _Placeholder.remote(ref)
        ray.kill(actor, no_restart=True)
    except Exception as e:  # noqa: BLE001 - cosmetic: never fail a job for it
        logger.debug("could not pre-empt Ray's actor restart warning: %s", e)


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
    quiet_ray_logs()
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


def configure_data_context(actor_start_timeout_s: float = 600.0, progress_bars: bool = False) -> None:
    """Ray Data settings every job shares (DataContext is per driver process).

    ``progress_bars``: Ray Data's own progress output, off by default: it counts Ray blocks, not inputs, and
    without a terminal it logs a multi-line block per update; the jobs show ``pipelines.batch.progress``.
    """
    from ray.data import DataContext

    quiet_ray_logs()
    ctx = DataContext.get_current()
    ctx.max_errored_blocks = 0  # bad inputs become error rows in our UDFs; a raised exception is a bug
    ctx.wait_for_min_actors_s = actor_start_timeout_s  # fail instead of hanging when actors cannot start
    ctx.enable_progress_bars = progress_bars
    ctx.enable_operator_progress_bars = progress_bars
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
