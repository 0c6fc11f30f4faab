"""Request overhead: headlesslb vs plain httpx against the same Pods, async and sync.

The baseline is what the issue names: a plain httpx client to one Pod (``base_url`` = that Pod,
the same relative paths). headlesslb balances over the 3 Pods of the same LocalCluster, whose Pods
all run on one event loop in the cluster's process, so the server side costs the same. Rounds
alternate plain / headless so machine noise hits both equally (the sync rows also take turns
going first), and the ratio of medians is the figure (target ≥ 0.95).

- async: ``HeadlessClient`` vs ``httpx.AsyncClient``, on asyncio and trio, 1 and 16 concurrent;
- sync: ``headlesslb.sync.HeadlessClient`` and ``httpx.Client(transport=headlesslb.sync.
  HeadlessTransport(...))`` vs ``httpx.Client``, sequentially and with 8 threads.

A reference row, plain ``httpx.Client`` instances taking the 3 Pods in turn, shows what
spreading the same load over 3 Pods costs by itself, with no headlesslb code at all: with 8
threads it is most of the gap between one Pod and three. Its cost is in the client process
(about half again as many voluntary context switches per request, GIL hand-offs, with the same
Pod-side CPU per request: the sync rows report voluntary context switches per request), so a
last row sends through the sync transport pinned to the very Pod of the baseline
(``ordinal=0``, parsed from the request's extensions each time): headlesslb's own cost, without
the spreading.

    python benchmarks/overhead.py [--rounds 7] [--requests 1500]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
from _common import print_table, write_results

import headlesslb.sync
from headlesslb import HeadlessClient
from headlesslb.core.limits import DEFAULT_LIMITS
from headlesslb.core.options import EXTENSION
from headlesslb.testing import LocalCluster

Send = Callable[[], Awaitable[httpx.Response]]


def _as_headlesslb() -> httpx.Limits:
    """The plain clients' limits: those of each of headlesslb's per-Pod pools."""
    return httpx.Limits(
        max_connections=DEFAULT_LIMITS.max_connections,
        max_keepalive_connections=DEFAULT_LIMITS.max_keepalive_connections,
        keepalive_expiry=DEFAULT_LIMITS.keepalive_expiry,
    )


async def _rate(send: Send, requests: int, concurrency: int) -> float:
    """Requests per second for ``requests`` sends split over ``concurrency`` workers."""
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            response = await send()
            assert response.status_code == 200

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return per_worker * concurrency / (time.perf_counter() - start)


async def _compare(
    cluster: LocalCluster, rounds: int, requests: int, concurrency: int
) -> dict[str, float]:
    one_pod = cluster.url(cluster.pods("web")[0].name)
    limits = _as_headlesslb()
    async with (
        httpx.AsyncClient(base_url=one_pod, limits=limits) as plain,
        HeadlessClient(
            "web-hl", port="http", nameservers=[cluster.nameserver], namespace=cluster.namespace
        ) as headless,
    ):

        async def send_plain() -> httpx.Response:
            return await plain.get("/bench")

        async def send_headless() -> httpx.Response:
            return await headless.get("/bench")

        await _rate(send_plain, 200, concurrency)  # warm up connections on both
        await _rate(send_headless, 200, concurrency)
        plain_rates, headless_rates = [], []
        for _ in range(rounds):
            plain_rates.append(await _rate(send_plain, requests, concurrency))
            headless_rates.append(await _rate(send_headless, requests, concurrency))
    plain_rps = statistics.median(plain_rates)
    headless_rps = statistics.median(headless_rates)
    return {
        "plain_rps": round(plain_rps, 1),
        "headless_rps": round(headless_rps, 1),
        "ratio": round(headless_rps / plain_rps, 3),
        "ratio_of_best": round(max(headless_rates) / max(plain_rates), 3),
    }


def _switches() -> int:
    """Voluntary context switches of this process so far (threads blocking: GIL hand-offs)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def _sync_rate(
    send: Callable[[], httpx.Response], requests: int, threads: int, switches: list[float]
) -> float:
    """Requests per second for ``requests`` blocking sends split over ``threads`` threads;
    appends the voluntary context switches per request to ``switches``."""
    per_thread = requests // threads

    def worker() -> None:
        for _ in range(per_thread):
            assert send().status_code == 200

    before = _switches()
    start = time.perf_counter()
    if threads == 1:
        worker()
    else:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(worker) for _ in range(threads)]:
                future.result()
    elapsed = time.perf_counter() - start
    switches.append((_switches() - before) / (per_thread * threads))
    return per_thread * threads / elapsed


def _compare_sync(
    cluster: LocalCluster, rounds: int, requests: int, threads: int
) -> list[dict[str, object]]:
    first = cluster.pods("web")[0]
    assert first.name.endswith("-0")  # the Pod that ordinal=0 pins to
    one_pod = cluster.url(first.name)
    limits = _as_headlesslb()
    where = {"nameservers": [cluster.nameserver], "namespace": cluster.namespace}
    every_pod = [
        httpx.Client(base_url=cluster.url(pod.name), limits=limits) for pod in cluster.pods("web")
    ]
    in_turn = itertools.cycle(every_pod)  # next() on a cycle is atomic under the GIL
    with (
        contextlib.ExitStack() as stack,
        httpx.Client(base_url=one_pod, limits=limits) as plain,
        headlesslb.sync.HeadlessClient("web-hl", port="http", **where) as client,  # type: ignore[arg-type]
        httpx.Client(
            transport=headlesslb.sync.HeadlessTransport("web-hl", port="http", **where),  # type: ignore[arg-type]
            base_url="http://web-hl",
        ) as via_transport,
    ):
        for each in every_pod:
            stack.enter_context(each)
        sends: dict[str, Callable[[], httpx.Response]] = {
            "plain": lambda: plain.get("/bench"),
            "plain, 3 Pods in turn (reference)": lambda: next(in_turn).get("/bench"),
            "sync client": lambda: client.get("/bench"),
            "httpx.Client + sync transport": lambda: via_transport.get("/bench"),
            "sync transport, pinned to that Pod (reference)": lambda: via_transport.get(
                "/bench", extensions={EXTENSION: {"ordinal": 0}}
            ),
        }
        for send in sends.values():
            _sync_rate(send, 200, threads, [])  # warm up connections everywhere
        rates: dict[str, list[float]] = {name: [] for name in sends}
        switches: dict[str, list[float]] = {name: [] for name in sends}
        names = list(sends)
        for round_ in range(rounds):
            # Each round starts one row later: no row always runs right after another.
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                rates[name].append(_sync_rate(sends[name], requests, threads, switches[name]))
    plain_rps = statistics.median(rates["plain"])
    rows: list[dict[str, object]] = []
    for name in (
        "plain, 3 Pods in turn (reference)",
        "sync client",
        "httpx.Client + sync transport",
        "sync transport, pinned to that Pod (reference)",
    ):
        rps = statistics.median(rates[name])
        rows.append(
            {
                "backend": "sync",
                "client": name,
                "concurrency": threads,
                "plain_rps": round(plain_rps, 1),
                "headless_rps": round(rps, 1),
                "ratio": round(rps / plain_rps, 3),
                "ratio_of_best": round(max(rates[name]) / max(rates["plain"]), 3),
                "switches_per_request": round(statistics.median(switches[name]), 2),
                "plain_switches_per_request": round(statistics.median(switches["plain"]), 2),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    rows = []
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        for backend in ("asyncio", "trio"):
            for concurrency in (1, 16):
                result = anyio.run(
                    _compare, cluster, args.rounds, args.requests, concurrency, backend=backend
                )
                rows.append(
                    {"backend": backend, "client": "HeadlessClient", "concurrency": concurrency}
                    | result
                )
        for threads in (1, 8):
            rows.extend(_compare_sync(cluster, args.rounds, args.requests, threads))
    print_table(rows, title="headlesslb vs plain httpx (3 Pods, req/s, medians, alternating)")
    write_results("overhead", rows, target={"ratio": ">= 0.95"}, params=vars(args))


if __name__ == "__main__":
    main()
