"""Memory per 1,000 endpoints: pool, snapshot, pickers and hash tables, measured with tracemalloc.

A client (async ``HeadlessTransport``) discovers N DNS-only Pods of a LocalCluster over real
DNS; once the first resolution is in and one request of each kind has been picked (round-robin,
``key=`` through the Maglev table, which is built from the first membership on), the memory the
client holds is what tracemalloc counts as allocated since just before it was made, minus what a
client of 3 Pods holds (the fixed cost: httpx, locks, buffers). Connections are not counted (DNS-
only Pods have none; each Pod's connection pool is httpcore's and is made on first use).

Target (docs/architecture.md): ≤ 5 MB for 1,000 endpoints, pool and tables included.

    python benchmarks/memory.py [--sizes 100,1000,4000]
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

import anyio
from _common import print_table, write_results

from headlesslb import HeadlessTransport, RefreshPolicy
from headlesslb.core.pickers.base import PickContext
from headlesslb.testing import LocalCluster

_QUIET = RefreshPolicy(min_interval=3600, max_interval=3600, first_resolution_timeout=60)


async def _held(cluster: LocalCluster, service: str) -> tuple[int, int]:
    """(bytes held by a ready client of ``service``, members)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    async with HeadlessTransport(
        service,
        port=cluster.port,
        nameservers=[cluster.nameserver],
        namespace=cluster.namespace,
        refresh=_QUIET,
    ) as transport:
        await transport.runtime.wait_ready()
        await transport.refresher.refresh()
        balancer = transport.balancer
        balancer.pick()
        balancer.pick(PickContext(key="user-1"))
        gc.collect()
        after = tracemalloc.take_snapshot()
        members = len(transport.pool.snapshot.members)
    tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return held, members


async def _measure(cluster: LocalCluster, sizes: list[int]) -> list[dict[str, object]]:
    # The first client of a process also pays what stays once made (lazy imports, the worker
    # thread pool, registries): a warm-up client first, so that neither counts it.
    await _held(cluster, "tiny-hl")
    base, _ = await _held(cluster, "tiny-hl")
    rows = []
    for size in sizes:
        cluster.add_deployment("big", size, lb=None, serve=False)
        held, members = await _held(cluster, "big-hl")
        assert members == size
        cluster.delete_workload("big")
        per_1000 = (held - base) / size * 1000
        rows.append(
            {
                "endpoints": size,
                "client_mb": round(held / 1e6, 3),
                "fixed_mb": round(base / 1e6, 3),
                "per_1000_endpoints_mb": round(per_1000 / 1e6, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,4000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with LocalCluster(ttl=5) as cluster:
        cluster.add_deployment("tiny", 3, lb=None, serve=False)
        rows = anyio.run(_measure, cluster, sizes)
    print_table(rows, title="Memory a client holds (tracemalloc): pool, snapshot, pickers, tables")
    write_results("memory", rows, params={"sizes": sizes}, target={"per_1000_endpoints_mb": 5.0})


if __name__ == "__main__":
    main()
