"""Bounded load: one hot key carries 30 % of the traffic; max/mean Pod load with and without.

A StatefulSet of ``--pods`` Pods (10) answering after ``--base`` seconds (10 ms) takes
``--workers`` (16) closed-loop workers sending keyed GETs for ``--duration`` seconds (6): with
probability ``--hot`` (0.3) the key is ``"hot"``, else one of 10,000 others at random. Scenarios,
in alternating rounds (``--rounds``, 2): ``ConsistentHash()`` (strict affinity, the default) and
``ConsistentHash(balance_factor=1.25)``.

Per scenario: requests, max/mean of the requests each Pod served (the Pods' own counters), the
hot key's owner share, the share of hot-key requests served elsewhere (``hot_moved_pct``: the
price in affinity), and p50/p99 latency.

    python benchmarks/bounded_load.py [--pods 10] [--workers 16] [--hot 0.3] [--factor 1.25]
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter
from typing import Any

import anyio
import httpx
from _common import print_table, write_results

from headlesslb import ConsistentHash, HeadlessClient
from headlesslb.testing import LocalCluster

HOT = "hot"


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def _scenario(
    cluster: LocalCluster, factor: float | None, args: argparse.Namespace
) -> dict[str, Any]:
    latencies: list[float] = []
    hot_pods: Counter[str] = Counter()
    errors = 0
    rng = random.Random(7)
    async with HeadlessClient(
        "web-hl",
        port="http",
        sharding=ConsistentHash(balance_factor=factor),
        nameservers=[cluster.nameserver],
        namespace=cluster.namespace,
    ) as client:
        await client.get("/warm", key="warm")
        before = cluster.stats()["pods"]
        stop_at = time.perf_counter() + args.duration

        async def worker() -> None:
            nonlocal errors
            perf = time.perf_counter
            while (t0 := perf()) < stop_at:
                hot = rng.random() < args.hot
                key = HOT if hot else f"key-{rng.randrange(10_000)}"
                try:
                    response = await client.get("/bounded", key=key)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(perf() - t0)
                if hot:
                    hot_pods[response.json()["pod"]] += 1

        async with anyio.create_task_group() as tg:
            for _ in range(args.workers):
                tg.start_soon(worker)
        after = cluster.stats()["pods"]
    served = {pod: after[pod] - before.get(pod, 0) for pod in after}
    loads = list(served.values())
    mean = sum(loads) / len(loads)
    owner, owner_hot = hot_pods.most_common(1)[0]
    hot_total = sum(hot_pods.values())
    ordered = sorted(latencies)
    return {
        "balance_factor": factor,
        "requests": len(latencies),
        "errors": errors,
        "max_over_mean": round(max(loads) / mean, 3),
        "owner_share_pct": round(100 * served[owner] / sum(loads), 1),
        "hot_moved_pct": round(100 * (hot_total - owner_hot) / hot_total, 1),
        "p50_ms": round(_percentile(ordered, 50) * 1e3, 1),
        "p99_ms": round(_percentile(ordered, 99) * 1e3, 1),
        "served": served,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--base", type=float, default=0.01, help="every Pod's latency, s")
    parser.add_argument("--hot", type=float, default=0.3, help="share of the hot key")
    parser.add_argument("--factor", type=float, default=1.25, help="c of the bounded scenario")
    parser.add_argument("--duration", type=float, default=6.0, help="s per scenario and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    runs: dict[str, list[dict[str, Any]]] = {"strict": [], "bounded": []}
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=args.pods, headless="web-hl", lb="web-lb")
        for pod in cluster.pods("web"):
            cluster.slow(pod.name, args.base)
        for _ in range(args.rounds):
            runs["strict"].append(anyio.run(_scenario, cluster, None, args))
            runs["bounded"].append(anyio.run(_scenario, cluster, args.factor, args))

    rows = []
    for name, mine in runs.items():
        mine.sort(key=lambda r: r["max_over_mean"])
        median = mine[len(mine) // 2]  # the median round (every round is in the JSON)
        rows.append({"scenario": name, **{k: v for k, v in median.items() if k != "served"}})
    print_table(
        rows,
        title=(
            f"Bounded load: {args.pods} Pods at {args.base * 1e3:g} ms, {args.workers} workers,"
            f" key {HOT!r} = {args.hot:.0%} of requests, {args.duration:g} s × {args.rounds}"
            " rounds (median round shown)"
        ),
    )
    write_results(
        "bounded_load",
        rows,
        target={"report": "max/mean Pod load with and without bounded load"},
        params=vars(args),
        rounds=runs,
    )


if __name__ == "__main__":
    main()
