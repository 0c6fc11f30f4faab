"""Shared runtime: what K clients of one Service in one process cost the DNS server and the Pods.

K transports for the same Service run for ``--seconds`` against the LocalCluster (DNS TTL
``--ttl``, health checks every ``--interval`` s on 3 Pods), with ``share_discovery`` on (the
default) and off, in alternating rounds. The DNS server counts the queries it received and each
Pod the health probes; for the sync transports the table also gives their background threads.
Off, each client asks and probes on its own schedule (K × one client's); on, the clients share
one runtime: one DNS round per TTL, one probe per Pod per interval, one thread.

    python benchmarks/shared_discovery.py [--seconds 4] [--rounds 2] [--ttl 1] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import anyio
from _common import print_table, write_results

import headlesslb.sync
from headlesslb import HeadlessTransport, HealthCheck
from headlesslb.testing import LocalCluster

PODS = 3


@dataclass
class Measured:
    """One run: DNS queries and probes at the server and Pods, background threads started."""

    queries: int
    probes: int
    threads: int


def _discovery_threads() -> int:
    return sum(t.name == "headlesslb discovery" for t in threading.enumerate())


def _probes(cluster: LocalCluster) -> int:
    return sum(cluster.stats()["health"].values())


def _options(cluster: LocalCluster, share: bool, interval: float) -> dict[str, Any]:
    return {
        "port": cluster.port,
        "share_discovery": share,
        "health": HealthCheck(interval=interval),
        **cluster.client_kwargs(),
    }


async def _async_run(
    cluster: LocalCluster, clients: int, share: bool, seconds: float, interval: float
) -> Measured:
    """What ``clients`` async transports cost while they ran ``seconds``."""
    transports = [
        HeadlessTransport("svc-hl", **_options(cluster, share, interval)) for _ in range(clients)
    ]
    for transport in transports:
        await transport.__aenter__()
    for transport in transports:
        await transport.runtime.wait_ready()
    cluster.reset_stats()
    await anyio.sleep(seconds)
    stats = cluster.stats()
    asked, probes = stats["dns"]["total"], sum(stats["health"].values())
    for transport in transports:
        await transport.aclose()
    return Measured(asked, probes, 0)


def _sync_run(
    cluster: LocalCluster, clients: int, share: bool, seconds: float, interval: float
) -> Measured:
    """What ``clients`` sync transports cost while they ran ``seconds``, and their threads."""
    before = _discovery_threads()
    transports = [
        headlesslb.sync.HeadlessTransport("svc-hl", **_options(cluster, share, interval))
        for _ in range(clients)
    ]
    for transport in transports:
        transport.__enter__()
    threads = _discovery_threads() - before
    cluster.reset_stats()
    time.sleep(seconds)
    stats = cluster.stats()
    asked, probes = stats["dns"]["total"], sum(stats["health"].values())
    for transport in transports:
        transport.close()
    return Measured(asked, probes, threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ttl", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    sizes = (1, 4, 16)
    keys = [(flavor, k, s) for flavor in ("async", "sync") for k in sizes for s in (True, False)]
    measured: dict[tuple[str, int, bool], list[Measured]] = {key: [] for key in keys}
    with LocalCluster(ttl=args.ttl) as cluster:
        cluster.add_deployment("svc", PODS, lb=None)
        for number in range(args.rounds):
            # Alternate which goes first, so drift in machine load hits both alike.
            order = (True, False) if number % 2 == 0 else (False, True)
            for k in sizes:
                for share in order:
                    measured[("async", k, share)].append(
                        anyio.run(_async_run, cluster, k, share, args.seconds, args.interval)
                    )
                    measured[("sync", k, share)].append(
                        _sync_run(cluster, k, share, args.seconds, args.interval)
                    )
    rows: list[dict[str, object]] = []
    for flavor in ("async", "sync"):
        for k in sizes:
            on, off = measured[(flavor, k, True)], measured[(flavor, k, False)]

            def mean(runs: list[Measured], field: str) -> float:
                return statistics.mean(getattr(run, field) for run in runs)

            per_pod_s = args.seconds * PODS
            row: dict[str, object] = {
                "client": flavor,
                "clients": k,
                "dns_queries_shared": mean(on, "queries"),
                "dns_queries_unshared": mean(off, "queries"),
                "probes_per_pod_s_shared": round(mean(on, "probes") / per_pod_s, 2),
                "probes_per_pod_s_unshared": round(mean(off, "probes") / per_pod_s, 2),
            }
            if flavor == "sync":
                row["threads_shared"] = mean(on, "threads")
                row["threads_unshared"] = mean(off, "threads")
            rows.append(row)
    print_table(
        rows,
        title=f"K clients of one Service over {args.seconds:g} s: DNS queries at the server"
        f" (TTL {args.ttl} s), health probes per Pod per second (interval {args.interval:g} s),"
        f" discovery threads (sync); mean of {args.rounds} rounds",
    )
    write_results(
        "shared_discovery",
        rows,
        params=vars(args),
        raw={
            f"{flavor}-{k}-{'shared' if s else 'unshared'}": [vars(run) for run in runs]
            for (flavor, k, s), runs in measured.items()
        },
        note="one process; async on one event loop; the machine is shared with other agents' work",
    )


if __name__ == "__main__":
    main()
