"""Picker cost, Maglev build time, and event-loop stalls while a table is rebuilt.

    python benchmarks/pickers.py [--repeat 7]

1. Pick cost (µs per pick, best of ``--repeat`` timeit runs, loop overhead subtracted) for
   round-robin, least-request, peak-EWMA, Maglev, jump and ordinal at 10 / 100 / 1,000 endpoints.
   Keyed and ordinal picks cycle through 1,000 different keys/ordinals, so jump's key-dependent
   loop is averaged. Targets (design §7): ≤ 0.3 µs RR, ≤ 0.5 µs P2C, ≤ 1 µs Maglev and ordinal,
   ≤ 2 µs jump, flat in N.
2. Maglev table build time (ms, best of 3) — ours next to the paper's loop written plainly.
3. The longest gap of an asyncio loop that ticks every 1 ms while a 1,000-member table is rebuilt
   after a membership change: in a worker thread (what the refresher does) vs inline on the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import statistics
import sys
import time
import timeit
from collections.abc import Sequence

from _common import print_table, write_results

from headlesslb.core.balancer import Balancer
from headlesslb.core.clock import monotonic
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pickers import ConsistentHash, LeastRequest, Ordinal, PeakEwma, RoundRobin
from headlesslb.core.pickers.base import NO_CONTEXT, PickContext, PickerFactory
from headlesslb.core.pickers.hashing import identity
from headlesslb.core.pickers.hashtables import MaglevTable, endpoint_hashes, maglev_table_size
from headlesslb.core.pool import Pool
from headlesslb.io import pauses

SIZES = (10, 100, 1000)
TARGETS_US = {
    "round_robin": 0.3,
    "least_request": 0.5,
    "peak_ewma": 0.5,
    "maglev": 1.0,
    "ordinal": 1.0,
    "jump": 2.0,
}


def endpoints(n: int, start: int = 0) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 8080, f"web-{i}", i)
        for i in range(start, start + n)
    )


def make_pool(n: int) -> Pool:
    pool = Pool(rng=random.Random(0))
    pool.update(Resolution(endpoints(n), ttl=5))
    rng = random.Random(1)
    now = monotonic()
    for state in pool.snapshot.members:  # realistic latencies for peak-EWMA, answered just now
        pool.latency.observe(state, rng.uniform(0.005, 0.05), now)
    return pool


def pick_cost_us(
    factory: PickerFactory, pool: Pool, contexts: Sequence[PickContext], repeat: int
) -> float:
    pick = factory.build(pool.snapshot).pick
    namespace = {"pick": pick, "contexts": contexts}
    timer = timeit.Timer("for c in contexts: pick(c)", globals=namespace)
    empty = timeit.Timer("for c in contexts: pass", globals=namespace)
    number = 20
    best = min(timer.repeat(repeat, number))
    overhead = min(empty.repeat(repeat, number))
    return (best - overhead) / (number * len(contexts)) * 1e6


def bench_picks(repeat: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    keys = [PickContext(key=f"user-{i}") for i in range(1000)]
    for n in SIZES:
        pool = make_pool(n)
        plain = [NO_CONTEXT] * 1000
        ordinals = [PickContext(ordinal=i % n) for i in range(1000)]
        cases: list[tuple[str, PickerFactory, Sequence[PickContext]]] = [
            ("round_robin", RoundRobin(random.Random(0)), plain),
            ("least_request", LeastRequest(random.Random(0)), plain),
            ("peak_ewma", PeakEwma(random.Random(0)), plain),
            ("maglev", ConsistentHash(), keys),
            ("jump", ConsistentHash("ordinal"), keys),
            ("ordinal", Ordinal(), ordinals),
        ]
        row: dict[str, object] = {"endpoints": n}
        for name, factory, contexts in cases:
            row[name] = round(pick_cost_us(factory, pool, contexts, repeat), 3)
        rows.append(row)
    return rows


def textbook_maglev(identities: Sequence[str], m: int) -> list[int]:
    """The population loop as the paper writes it (modulo per probe, next[] per member)."""
    perms = []
    for ident in identities:
        h1, h2 = endpoint_hashes(ident)
        perms.append((h1 % m, h2 % (m - 1) + 1))
    nxt = [0] * len(identities)
    table = [-1] * m
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(perms):
            c = (offset + nxt[i] * skip) % m
            while table[c] >= 0:
                nxt[i] += 1
                c = (offset + nxt[i] * skip) % m
            table[c] = i
            nxt[i] += 1
            filled += 1
            if filled == m:
                return table


def best_ms(fn: object, runs: int = 3) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        timings.append(time.perf_counter() - start)
    return min(timings) * 1e3


def bench_builds() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for n in SIZES:
        states = make_pool(n).snapshot.members
        ids = [identity(s) for s in states]
        m = maglev_table_size(n)
        rows.append(
            {
                "endpoints": n,
                "table_size": m,
                "build_ms": round(best_ms(lambda: MaglevTable(states, ids, m)), 1),  # noqa: B023
                "textbook_ms": round(best_ms(lambda: textbook_maglev(ids, m)), 1),  # noqa: B023
            }
        )
    return rows


async def _max_gap(mode: str, n: int) -> dict[str, float]:
    """Tick every 1 ms (doing a keyed pick each time) while membership changes and the table is
    rebuilt ``mode`` = "thread" (as the runtime does it: a worker thread pausing to hand the GIL
    back) | "thread, no pauses" | "inline" | "none"; returns the longest gap between ticks."""
    pool = Pool(rng=random.Random(0))
    pool.update(Resolution(endpoints(n), ttl=5))
    balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=ConsistentHash())
    balancer.pick(PickContext(key="warm-up"))  # first keyed request: table built
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        i = 0
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            balancer.pick(PickContext(key=f"k{i}"))  # served from the old table meanwhile
            i += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    snapshot = pool.update(Resolution(endpoints(n + 1), ttl=5))  # one Pod joins
    start = time.perf_counter()
    if mode == "thread":
        prepare = functools.partial(balancer.prepare, snapshot, pause=pauses.hand_back_gil)
        await loop.run_in_executor(None, prepare)
    elif mode == "thread, no pauses":
        await loop.run_in_executor(None, balancer.prepare, snapshot)
    elif mode == "inline":
        ConsistentHash().prepare(snapshot)  # the same work, on the loop
    else:
        await asyncio.sleep(0.05)
    busy = time.perf_counter() - start
    await asyncio.sleep(0.05)
    stop.set()
    await task
    return {"max_gap_ms": max(gaps) * 1e3, "rebuild_ms": busy * 1e3}


def bench_stalls(runs: int = 5, n: int = 1000) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for mode in ("none", "thread", "thread, no pauses", "inline"):
        results = [asyncio.run(_max_gap(mode, n)) for _ in range(runs)]
        gaps = [r["max_gap_ms"] for r in results]
        rows.append(
            {
                "rebuild": {
                    "none": "no rebuild (baseline)",
                    "thread": "worker thread (pausing)",
                    "thread, no pauses": "worker thread, no pauses",
                    "inline": "inline on the loop",
                }[mode],
                "endpoints": n,
                "max_gap_ms_worst": round(max(gaps), 1),
                "max_gap_ms_median": round(statistics.median(gaps), 1),
                "rebuild_ms_median": round(statistics.median(r["rebuild_ms"] for r in results), 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    picks = bench_picks(args.repeat)
    print_table(
        picks,
        title="Pick cost, µs per pick (best of runs; targets: "
        + ", ".join(f"{k} ≤ {v}" for k, v in TARGETS_US.items())
        + ")",
    )
    builds = bench_builds()
    print_table(builds, title="Maglev table build, ms (best of 3)")
    stalls = bench_stalls()
    print_table(
        stalls,
        title=f"Event-loop stall during a 1,000-member rebuild (ticks every 1 ms, "
        f"switch interval {sys.getswitchinterval() * 1e3:.0f} ms, 5 runs; target ≤ 20 ms)",
    )
    write_results(
        "pickers",
        picks,
        target={"pick_us": TARGETS_US, "max_gap_ms": 20},
        params=vars(args),
        builds=builds,
        stalls=stalls,
    )


if __name__ == "__main__":
    main()
