"""A local multi-node Ray cluster (ray.cluster_utils.Cluster) for the reliability tests, run as a subprocess.

    python _cluster_script.py --control DIR [--head-cpus 1] [--worker-cpus 1] [--object-store-memory B]
                              [--remove-worker-after-part OUT | --remove-worker-on-request]

Writes ``DIR/address`` when the cluster is up. With ``--remove-worker-after-part OUT`` it waits for the
first committed part file in the local folder OUT (with ``--remove-worker-on-request``: for the file
``DIR/remove``, which the test writes, e.g. once it sees a part on object storage), kills the worker node
(non-graceful, as a lost machine), writes ``DIR/removed``, then adds a fresh node (as an autoscaler would)
and writes ``DIR/replaced``.
Shuts everything down when ``DIR/stop`` appears (or after an hour).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--control", type=Path, required=True)
    p.add_argument("--head-cpus", type=int, default=1)
    p.add_argument("--worker-cpus", type=int, default=0)
    p.add_argument("--object-store-memory", type=int, default=None)
    p.add_argument("--remove-worker-after-part", type=Path, default=None)
    p.add_argument("--remove-worker-on-request", action="store_true")
    a = p.parse_args()

    from ray.cluster_utils import Cluster

    store = {"object_store_memory": a.object_store_memory} if a.object_store_memory else {}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": a.head_cpus, "include_dashboard": False,
                                                             **store})
    try:
        worker = cluster.add_node(num_cpus=a.worker_cpus, **store) if a.worker_cpus else None
        cluster.wait_for_nodes()
        (a.control / "address").write_text(cluster.address)
        deadline = time.monotonic() + 3600
        if (a.remove_worker_after_part is not None or a.remove_worker_on_request) and worker is not None:
            def triggered() -> bool:
                if a.remove_worker_on_request:
                    return (a.control / "remove").exists()
                return bool(list(a.remove_worker_after_part.glob("part-*.parquet")))

            while not triggered():
                if (a.control / "stop").exists() or time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            cluster.remove_node(worker, allow_graceful=False)
            (a.control / "removed").write_text(str(time.time()))
            cluster.add_node(num_cpus=a.worker_cpus, **store)
            (a.control / "replaced").write_text(str(time.time()))
        while not (a.control / "stop").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
