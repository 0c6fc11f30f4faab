"""Stragglers: 5 % of responses 10× slower; tail latency with and without hedged requests.

A StatefulSet of 3 Pods answers after ``--base`` seconds (20 ms); on every Pod, ``--fraction``
(5 %) of responses take ``--factor`` (10) × that (the LocalCluster's stragglers control).
``--workers`` (4) closed-loop async workers send GETs for ``--seconds`` (8) per scenario.

Scenarios, in alternating rounds (``--rounds``, 3):

* ``none``: a ``HeadlessClient`` without hedging;
* ``headlesslb``: ``hedge=HedgePolicy(delay=--delay)`` (50 ms): a second attempt to *another*
  Pod, the first answer wins, the other is cancelled, hedges charged to the retry budget;
* ``headlesslb-p90``: ``hedge=HedgePolicy(quantile=0.9, min_samples=20)``, the learned delay;
* ``clusterip``: a plain ``httpx.AsyncClient`` on the ClusterIP Service ``web-lb`` sending the
  same URL a second time after the same ``--delay`` and taking the first answer.

Per scenario: requests, p50/p90/p99 latency, and ``extra_pct``: requests the Pods served beyond
the ones the workers asked for, as a share of those (what hedging costs the Pods).

    python benchmarks/stragglers.py [--workers 4] [--base 0.02] [--delay 0.05] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
from _common import print_table, write_results

from headlesslb import HeadlessClient, HedgePolicy
from headlesslb.testing import LocalCluster

SCENARIOS = ("none", "headlesslb", "headlesslb-p90", "clusterip")


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def _same_url_hedge(client: httpx.AsyncClient, delay: float) -> None:
    """The naive hedge: the same request again after ``delay``; the first answer wins."""
    done: list[httpx.Response] = []

    async def one() -> None:
        response = await client.get("/stragglers")
        if not done:
            done.append(response)
            group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(one)
        await anyio.sleep(delay)
        group.start_soon(one)
        await anyio.sleep_forever()


async def _load(send: Callable[[], Awaitable[None]], args: argparse.Namespace) -> list[float]:
    latencies: list[float] = []
    stop = time.perf_counter() + args.seconds

    async def worker() -> None:
        perf = time.perf_counter
        while perf() < stop:
            t0 = perf()
            await send()
            latencies.append(perf() - t0)

    async with anyio.create_task_group() as group:
        for _ in range(args.workers):
            group.start_soon(worker)
    return latencies


async def _scenario(cluster: LocalCluster, name: str, args: argparse.Namespace) -> dict[str, Any]:
    served_before = sum(cluster.stats()["pods"].values())
    if name == "clusterip":
        async with httpx.AsyncClient(
            base_url=cluster.service_url("web-lb"), trust_env=False, timeout=10
        ) as plain:
            latencies = await _load(lambda: _same_url_hedge(plain, args.delay), args)
    else:
        hedge = {
            "none": None,
            "headlesslb": HedgePolicy(delay=args.delay),
            "headlesslb-p90": HedgePolicy(quantile=0.9, min_samples=20),
        }[name]
        async with HeadlessClient(
            "web-hl", port="http", hedge=hedge, **cluster.client_kwargs()
        ) as client:

            async def send() -> None:
                (await client.get("/stragglers")).raise_for_status()

            latencies = await _load(send, args)
    served = sum(cluster.stats()["pods"].values()) - served_before
    ordered = sorted(latencies)
    n = len(ordered)
    return {
        "scenario": name,
        "requests": n,
        "p50_ms": round(_percentile(ordered, 50) * 1e3, 1),
        "p90_ms": round(_percentile(ordered, 90) * 1e3, 1),
        "p99_ms": round(_percentile(ordered, 99) * 1e3, 1),
        "extra_pct": round(100 * (served - n) / n, 1) if n else math.nan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--base", type=float, default=0.02, help="every Pod's latency, s")
    parser.add_argument("--fraction", type=float, default=0.05, help="share of stragglers")
    parser.add_argument("--factor", type=float, default=10.0, help="how much slower they are")
    parser.add_argument("--delay", type=float, default=0.05, help="fixed hedge delay, s")
    parser.add_argument("--seconds", type=float, default=8.0, help="per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    runs: list[dict[str, Any]] = []
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        for pod in cluster.pods("web"):
            cluster.slow(pod.name, args.base)
            cluster.stragglers(pod.name, args.fraction, args.factor)
        for _ in range(args.rounds):
            for name in SCENARIOS:
                runs.append(anyio.run(_scenario, cluster, name, args))

    rows = []
    for name in SCENARIOS:
        mine = sorted((r for r in runs if r["scenario"] == name), key=lambda r: r["p99_ms"])
        rows.append({**mine[len(mine) // 2], "rounds": len(mine)})  # the median round by p99
    base = rows[0]
    for row in rows:
        row["p99_vs_none"] = round(row["p99_ms"] / base["p99_ms"], 2)
    print_table(
        rows,
        title=(
            f"Stragglers: 3 Pods at {args.base * 1e3:g} ms, {args.fraction:.0%} of responses"
            f" {args.factor:g}x slower; {args.workers} workers; hedge delay {args.delay * 1e3:g} ms"
        ),
    )
    write_results(
        "stragglers",
        rows,
        target={"headlesslb.p99_vs_none": "<= 0.5", "headlesslb.extra_pct": "<= 10"},
        params=vars(args),
        rounds=runs,
    )


if __name__ == "__main__":
    main()
