"""Slow start: a cold Pod joins under load; tail latency over its first 10 s, with and without.

A StatefulSet of 3 Pods answering after ``--base`` seconds (30 ms) takes ``--workers`` (6)
closed-loop workers. Then it scales to 4: the new Pod is cold, every response of its first
``--cold`` seconds (5) taking ``--cold-latency`` (0.27 s, so 10× the base) more. DNS TTL is 1 s,
so the client finds it within about a second. From the moment the client's pool lists the new
Pod, every request started in the next ``--window`` seconds (10) is measured. Then the Pod is
removed again (the next scenario's newcomer is a fresh Pod, on a fresh address).

Scenarios, in alternating rounds (``--rounds``, 1): ``round_robin`` and ``least_request``, each
with ``slow_start=SlowStart(window=10)`` (Envoy's formula, aggression 1, 10 % floor) and
without. Per scenario: requests, p50/p90/p95/p99/p99.9 latency over the window and the share of
them the cold Pod served (``cold_share_pct``; during its cold seconds: ``cold_hits``).

The 10 % floor bounds what slow start can do for a p99: the newcomer still gets about a tenth of
a full share from the first second, so if its cold responses are more than 1 % of the window,
the p99 stays cold and only the lower percentiles and the cold share move.

    python benchmarks/slow_start.py [--workers 6] [--base 0.03] [--cold 5] [--window 10]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import anyio
import httpx
from _common import print_table, write_results

from headlesslb import HeadlessClient, SlowStart
from headlesslb.testing import LocalCluster

PICKERS = ("round_robin", "least_request")


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def _scenario(
    cluster: LocalCluster, picker: str, slow_start: SlowStart | None, args: argparse.Namespace
) -> dict[str, Any]:
    samples: list[tuple[float, float, str]] = []  # (start, latency, pod)
    joined: dict[str, Any] = {}  # when the client's pool first listed the newcomer, and who
    stop = anyio.Event()
    async with HeadlessClient(
        "web-hl",
        port="http",
        picker=picker,
        slow_start=slow_start,
        nameservers=[cluster.nameserver],
        namespace=cluster.namespace,
    ) as client:

        async def worker() -> None:
            perf = time.perf_counter
            while not stop.is_set():
                t0 = perf()
                try:
                    response = await client.get("/slow-start")
                    pod = response.json()["pod"] if response.status_code == 200 else "error"
                except httpx.HTTPError:
                    pod = "error"
                samples.append((t0, perf() - t0, pod))

        async def controller() -> None:
            await anyio.sleep(args.settle)  # the 3 Pods are old members by now
            before = {p.name for p in cluster.pods("web")}
            pods = cluster.scale("web", 4)
            new = next(p for p in pods if p.name not in before)
            cluster.slow(new.name, args.base)
            cluster.cold_start(new.name, args.cold, args.cold_latency)
            while not any(e.ip == new.ip for e in client.endpoints()):
                await anyio.sleep(0.02)
            joined.update(at=time.perf_counter(), pod=new.name)
            await anyio.sleep(args.window)
            stop.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(controller)
            for _ in range(args.workers):
                tg.start_soon(worker)
    cluster.scale("web", 3)
    t0, newcomer = joined["at"], joined["pod"]
    measured = [(s - t0, lat, pod) for s, lat, pod in samples if t0 <= s < t0 + args.window]
    ordered = sorted(lat for _, lat, _ in measured)
    n = len(ordered)
    cold = [m for m in measured if m[2] == newcomer]
    return {
        "picker": picker,
        "slow_start": "on" if slow_start else "off",
        "requests": n,
        "errors": sum(1 for m in measured if m[2] == "error"),
        "p50_ms": round(_percentile(ordered, 50) * 1e3, 1),
        "p90_ms": round(_percentile(ordered, 90) * 1e3, 1),
        "p95_ms": round(_percentile(ordered, 95) * 1e3, 1),
        "p99_ms": round(_percentile(ordered, 99) * 1e3, 1),
        "p99_9_ms": round(_percentile(ordered, 99.9) * 1e3, 1),
        "cold_share_pct": round(100 * len(cold) / n, 2) if n else 0.0,
        "cold_hits": sum(1 for t, lat, _ in cold if lat > args.cold_latency),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--base", type=float, default=0.03, help="every Pod's latency, s")
    parser.add_argument("--cold", type=float, default=5.0, help="s the newcomer is cold")
    parser.add_argument("--cold-latency", type=float, default=0.27, help="extra s while cold")
    parser.add_argument("--window", type=float, default=10.0, help="s measured after joining")
    parser.add_argument("--slow-start-window", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=1.5, help="s of load before the join")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    policy = SlowStart(window=args.slow_start_window)

    runs: list[dict[str, Any]] = []
    with LocalCluster(ttl=1) as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        for pod in cluster.pods("web"):
            cluster.slow(pod.name, args.base)
        for _ in range(args.rounds):
            for picker in PICKERS:
                for slow_start in (None, policy):
                    runs.append(anyio.run(_scenario, cluster, picker, slow_start, args))

    rows = []
    for picker in PICKERS:
        for mode in ("off", "on"):
            mine = [r for r in runs if r["picker"] == picker and r["slow_start"] == mode]
            # One row per (picker, mode): the median round by p99 (all rounds are in the JSON).
            mine.sort(key=lambda r: r["p99_ms"])
            rows.append({**mine[len(mine) // 2], "rounds": len(mine)})
    for picker in PICKERS:
        off, on = (
            next(r for r in rows if r["picker"] == picker and r["slow_start"] == m)
            for m in ("off", "on")
        )
        on["p99_vs_off"] = round(on["p99_ms"] / off["p99_ms"], 2)
        on["p95_vs_off"] = round(on["p95_ms"] / off["p95_ms"], 2)
    print_table(
        rows,
        title=(
            f"Slow start: 3 Pods at {args.base * 1e3:g} ms + 1 joining, cold for {args.cold:g} s"
            f" (+{args.cold_latency * 1e3:g} ms); {args.workers} workers; first {args.window:g} s"
            f" after it joined; SlowStart(window={args.slow_start_window:g})"
        ),
    )
    write_results(
        "slow_start",
        rows,
        target={"report": "p99 over the first 10 s, with and without slow start"},
        params=vars(args),
        rounds=runs,
    )


if __name__ == "__main__":
    main()
