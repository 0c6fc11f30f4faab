"""Overload: offered load at 2× capacity, answered with 429s, with and without client throttling.

A StatefulSet of ``--pods`` Pods (3), each rate-limited to ``--per-pod`` requests a second (20)
with ``429`` + ``Retry-After: 1`` past it, so capacity is pods × per-pod. An open-loop generator
offers ``--overload`` × capacity (2×) as evenly spaced GETs for ``--duration`` seconds (8) per
scenario, each request on its own task, whatever the answers do (as users do). Scenarios, in
alternating rounds (``--rounds``, 2) so that machine noise hits all of them alike:

- ``retries, no throttle`` — the defaults: a 429 is retried on another Pod (idempotent GET)
  within the retry budget (20 % of requests plus 10/s);
- ``retries + throttle`` — the same with ``throttle=AdaptiveThrottle()`` (K = 2);
- ``no retries`` — ``RetryPolicy(max_attempts=1)``: what reaches the Pods without any retry.

The rates are kept low on purpose: the generator must keep up on a shared 2-core machine
(``offered_per_s`` is what it actually achieved), or the table would measure the client's CPU.

Per scenario: user requests, goodput (200s per second), the share of user requests answered
200, 429 or shed locally (``Throttled``), and **amplification**: requests that reached the Pods
(their own counters, rejected ones included) per user request. Target: ≤ 1.1× with throttling.

    python benchmarks/overload.py [--pods 3] [--per-pod 50] [--overload 2] [--duration 8]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from typing import Any

import anyio
import httpx
from _common import print_table, write_results

from headlesslb import AdaptiveThrottle, HeadlessClient, RetryPolicy, Throttled
from headlesslb.testing import LocalCluster

SCENARIOS: dict[str, dict[str, Any]] = {
    "retries, no throttle": {},
    "retries + throttle": {"throttle": AdaptiveThrottle()},
    "no retries": {"retry": RetryPolicy(max_attempts=1)},
}


async def _run(
    cluster: LocalCluster, options: dict[str, Any], rate: float, duration: float
) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    async with HeadlessClient(
        "web-hl",
        port="http",
        nameservers=[cluster.nameserver],
        namespace=cluster.namespace,
        timeout=5.0,
        **options,
    ) as client:
        await client.get("/warm")  # discovery done, one connection up; not counted
        await anyio.sleep(1.2)  # let the rate limiters' buckets and hold-offs settle
        before = cluster.stats()
        total = math.floor(rate * duration)

        async def one() -> None:
            try:
                response = await client.get("/overload")
                outcomes[str(response.status_code)] += 1
            except Throttled:
                outcomes["shed"] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(total):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                tg.start_soon(one)
            issued = time.perf_counter() - start
        elapsed = time.perf_counter() - start
        after = cluster.stats()
    reached = sum(after["pods"].values()) - sum(before["pods"].values())
    rejected = sum(after["rejected"].values()) - sum(before["rejected"].values())
    return {
        "user_requests": total,
        "offered_per_s": round(total / issued, 1),
        "goodput_per_s": round(outcomes["200"] / elapsed, 1),
        "ok_pct": round(100 * outcomes["200"] / total, 1),
        "429_pct": round(100 * outcomes["429"] / total, 1),
        "shed_pct": round(100 * outcomes["shed"] / total, 1),
        "errors": sum(n for k, n in outcomes.items() if k not in ("200", "429", "shed")),
        "pod_requests": reached,
        "pod_rejected": rejected,
        "amplification": round(reached / total, 3),
    }


def _merge(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the rounds of one scenario into one row."""
    total = sum(r["user_requests"] for r in rows)
    reached = sum(r["pod_requests"] for r in rows)
    merged: dict[str, Any] = {"rounds": len(rows), "user_requests": total}
    for key in ("offered_per_s", "goodput_per_s"):
        merged[key] = round(sum(r[key] for r in rows) / len(rows), 1)
    for key in ("ok_pct", "429_pct", "shed_pct"):
        merged[key] = round(sum(r[key] * r["user_requests"] for r in rows) / total, 1)
    merged["errors"] = sum(r["errors"] for r in rows)
    merged["pod_requests"] = reached
    merged["pod_rejected"] = sum(r["pod_rejected"] for r in rows)
    merged["amplification"] = round(reached / total, 3)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--per-pod", type=float, default=20.0, help="req/s each Pod serves")
    parser.add_argument("--overload", type=float, default=2.0, help="offered ÷ capacity")
    parser.add_argument("--duration", type=float, default=8.0, help="s per scenario and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    capacity = args.pods * args.per_pod
    rate = capacity * args.overload

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SCENARIOS}
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=args.pods, headless="web-hl", lb="web-lb")
        for pod in cluster.pods("web"):
            cluster.rate_limit(pod.name, args.per_pod, retry_after=1)
        for _ in range(args.rounds):
            for name, options in SCENARIOS.items():
                runs[name].append(anyio.run(_run, cluster, options, rate, args.duration))

    rows = [{"scenario": name, **_merge(r)} for name, r in runs.items()]
    print_table(
        rows,
        title=(
            f"Overload: {args.pods} Pods × {args.per_pod:g} req/s = {capacity:g} req/s capacity,"
            f" offered {rate:g} req/s ({args.overload:g}×), {args.duration:g} s × {args.rounds}"
            " rounds per scenario"
        ),
    )
    throttled = next(r for r in rows if r["scenario"] == "retries + throttle")
    verdict = "meets" if throttled["amplification"] <= 1.1 else "MISSES"
    print(f"\nthrottled amplification = {throttled['amplification']}×: {verdict} target ≤ 1.1×")
    write_results(
        "overload",
        rows,
        target={"retries + throttle.amplification": "<= 1.1"},
        params={**vars(args), "capacity_per_s": capacity, "offered_per_s": rate},
        rounds=runs,
    )


if __name__ == "__main__":
    main()
