"""How long one DNS refresh holds the event loop (async) or the GIL (sync), at 100-4,000 Pods.

A LocalCluster serves a Deployment of N DNS-only Pods (A records, numeric port). For each size:

- ``changed``: one Pod is added or removed before each round (the answer and membership change);
- ``unchanged``: the same answer again, byte for byte (an authoritative server such as CoreDNS
  without ``loadbalance``);
- ``reordered``: the same records in another order each round (CoreDNS's ``loadbalance`` plugin
  shuffles A records): replies captured from the cluster, shuffled, replayed by the benchmark;
- ``disjoint, keyed``: every Pod replaced each round (a blue/green selector switch, a Recreate
  rollout: N records of their own, ``add_record``, alternating between two address ranges)
  while ``key=`` requests are in use: the ticker picks a key's owner at every tick, so a pick
  that waited for the new membership's hash table would show as a gap that long (each measured
  round starts from a full garbage collection: see ``_swap``).

Async: a ticker task runs ``await anyio.lowlevel.checkpoint()`` in a loop on the client's event
loop; the longest gap between two ticks during a round is the longest stall the round caused
(every other task waits that long). Sync: a "request thread" loops on ``time.sleep(0)`` (which
releases the GIL) while the discovery thread refreshes; its longest gap is how long the refresh
held the GIL against request threads, or the machine did not run it. ``held_cpu_ms_max`` tells
the two apart: the longest CPU time the refresh's threads ran between two ticks (async: the
loop's thread; sync: every other thread of the process, read from ``/proc``; while the request
thread waits for the GIL only its holder runs Python). The ``idle (noise)`` rows are the same
ticker over windows as long as a changed round with nothing to do: a gap there is the
machine's (sync: alternating with the changed rounds). ``loop_cpu_ms`` is the CPU time one
round costs the loop's thread (Python and the kernel's socket calls), measured in rounds without
the ticker.
``gc_ms_max`` is the longest garbage collection that ran inside a measured round: CPython
stops every thread for it, so a gap that size is the collector's, not the refresh's.
``dnspython_parse_ms`` is what the replaced code spent parsing the same reply with
``dns.message.from_wire`` on the loop, for comparison. Targets (issue #12): ≤ 5 ms at 1,000 and
≤ 20 ms at 4,000 when changed (disjoint included), ≤ 1 ms unchanged.

    python benchmarks/refresh_stall.py [--rounds 7] [--sizes 100,1000,4000]
    python benchmarks/refresh_stall.py --marker-ab [--rounds 30] [--sizes 1000]

``--marker-ab`` measures only whether the sync discovery thread's GIL hand-over between steps
(``pauses.shares_gil_with_request_threads``) earns its keep: changed rounds with the hand-over,
without it, and idle windows, taking turns in one run, and the distribution of each one's gaps.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import os
import random
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import dns.message
import dns.query
import dns.rrset
from _common import print_table, write_results

import headlesslb.io.pauses as pauses_module
import headlesslb.sync
from headlesslb import HeadlessTransport, RefreshPolicy
from headlesslb.core.balancer import Balancer
from headlesslb.core.pickers.base import PickContext
from headlesslb.io.dns import DnsDiscovery
from headlesslb.testing import LocalCluster

# Rounds are triggered by the benchmark, never by the TTL.
_QUIET = RefreshPolicy(min_interval=3600, max_interval=3600, first_resolution_timeout=30)


class _Shuffling(DnsDiscovery):
    """Replays the cluster's reply with its records in a new order every time (CoreDNS's
    ``loadbalance``), so every round's bytes differ while the records do not."""

    variants: list[bytes]

    async def _exchange(
        self, server: tuple[str, int], qname: str, rdtype: int
    ) -> tuple[bytes, int]:
        wire = self.variants[0]
        self.variants.append(self.variants.pop(0))
        return wire, int.from_bytes(wire[:2], "big")


def _shuffled_replies(cluster: LocalCluster, fqdn: str, count: int) -> list[bytes]:
    ip, port = cluster.dns_address
    reply = dns.query.tcp(dns.message.make_query(fqdn, "A"), ip, port=port, timeout=60)
    (rrset,) = reply.answer
    out = []
    rng = random.Random(7)
    for _ in range(count):
        items = list(rrset)
        rng.shuffle(items)
        shuffled = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
        shuffled.update_ttl(rrset.ttl)
        for rd in items:
            shuffled.add(rd)
        reply.answer = [shuffled]
        out.append(reply.to_wire(max_size=65535))
    return out


def _dnspython_parse_ms(wire: bytes) -> float:
    start = time.perf_counter()
    dns.message.from_wire(wire)
    return (time.perf_counter() - start) * 1e3


def _warm(cluster: LocalCluster, fqdn: str) -> bytes:
    """Ask as the client will (UDP, then TCP), so the server has rendered the reply already."""
    ip, port = cluster.dns_address
    query = dns.message.make_query(fqdn, "A", use_edns=0, payload=1232)
    dns.query.udp(query, ip, port=port, timeout=60)
    reply = dns.query.tcp(dns.message.make_query(fqdn, "A"), ip, port=port, timeout=60)
    return reply.to_wire(max_size=65535)


class _Holds:
    """The longest CPU stretch a table build ran between two pauses, or from its start to its
    first pause, or from its last pause to its end (it holds the GIL throughout one)."""

    longest = 0.0

    @classmethod
    def install(cls) -> None:
        real_pause = pauses_module._hand_over
        real_prepare = Balancer.prepare
        last = threading.local()  # thread_time() is per thread: so is the last pause

        def stretch_ends() -> None:
            cls.longest = max(cls.longest, time.thread_time() - last.cpu)

        def pause() -> None:
            if getattr(last, "building", False):
                stretch_ends()
            real_pause()
            last.cpu = time.thread_time()

        def prepare(self: Balancer, *args: Any, **kwargs: Any) -> None:
            last.building, last.cpu = True, time.thread_time()
            try:
                real_prepare(self, *args, **kwargs)
            finally:
                stretch_ends()
                last.building = False

        pauses_module._hand_over = pause
        Balancer.prepare = prepare  # type: ignore[method-assign]

    @classmethod
    def take(cls) -> float:
        longest, cls.longest = cls.longest, 0.0
        return longest * 1e3


class _Collections:
    """The longest garbage collection inside the measured rounds of a case: CPython stops every
    thread for one, whatever the loop was doing, so a gap the size of one is the collector's.
    """

    longest = 0.0
    _started = 0.0
    measuring = False

    @classmethod
    def install(cls) -> None:
        def callback(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                cls._started = time.perf_counter()
            elif cls.measuring:
                cls.longest = max(cls.longest, time.perf_counter() - cls._started)

        gc.callbacks.append(callback)

    @classmethod
    def take(cls) -> float:
        longest, cls.longest = cls.longest, 0.0
        return longest * 1e3


async def _async_stall(
    refresh: Callable[[], Awaitable[object]], tick: Callable[[], object] = lambda: None
) -> tuple[float, float, float]:
    """(longest gap between ticks, longest loop-thread CPU between ticks, wall time) in ms.

    The gap is what every other task waited, machine noise included; the CPU between two
    ticks is what the refresh's longest step cost the loop, which descheduling cannot inflate.
    ``tick`` runs at every tick (a request's pick).
    """
    longest = longest_cpu = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal longest, longest_cpu
        last = time.perf_counter()
        last_cpu = time.thread_time()
        while not stop:
            tick()
            await anyio.lowlevel.checkpoint()
            now = time.perf_counter()
            now_cpu = time.thread_time()
            longest = max(longest, now - last)
            longest_cpu = max(longest_cpu, now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.01)
        longest = longest_cpu = 0.0
        start = time.perf_counter()
        _Collections.measuring = True
        await refresh()
        _Collections.measuring = False
        wall = time.perf_counter() - start
        stop = True
    return longest * 1e3, longest_cpu * 1e3, wall * 1e3


async def _loop_cpu(refresh: Callable[[], Awaitable[object]]) -> float:
    """CPU time (ms) one refresh costs the thread whose event loop runs it (no ticker running):
    Python's work and the kernel's socket calls; descheduling by other processes does not count,
    unlike a gap."""
    start = time.thread_time()
    await refresh()
    return (time.thread_time() - start) * 1e3


async def _idle_gap(seconds: float) -> tuple[float, float, float]:
    """The ticker's longest gap with nothing else running: the machine's noise floor."""
    return await _async_stall(lambda: anyio.sleep(seconds))


class _OtherThreadsCpu:
    """The CPU time (ns) every other thread of this process has run so far, from ``/proc``
    (``thread_time()`` reads only the calling thread's). A thread that ends keeps its last."""

    def __init__(self) -> None:
        me = threading.get_native_id()
        self._fds = [
            os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
            for tid in os.listdir("/proc/self/task")
            if int(tid) != me
        ]
        self._last = [0] * len(self._fds)

    def read(self) -> int:
        last = self._last
        for i, fd in enumerate(self._fds):
            with contextlib.suppress(ProcessLookupError):  # the thread has ended
                last[i] = int(os.pread(fd, 64, 0).split(maxsplit=1)[0])
        return sum(last)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)


def _sync_stall(
    refresh: Callable[[], object] | None,
    idle: float = 0.0,
    tick: Callable[[], object] = lambda: None,
) -> tuple[float, float, float]:
    """(longest gap of a request thread looping on time.sleep(0), longest CPU the process's other
    threads ran between two of its ticks, wall time) in ms. ``refresh=None`` measures ``idle``
    seconds of nothing: the noise floor. ``tick`` runs at every tick (a request's pick).

    While the request thread waits for the GIL, only its holder runs Python: the other threads'
    CPU during a gap is how long they held the GIL against it. A gap much longer than that is
    the machine's (the request thread was not scheduled), not the refresh's.
    """
    longest = longest_held = 0.0
    stop = threading.Event()
    started = threading.Event()

    def ticker() -> None:
        nonlocal longest, longest_held
        others = _OtherThreadsCpu()
        last, last_cpu = time.perf_counter(), others.read()
        started.set()
        while not stop.is_set():
            tick()
            time.sleep(0)
            now, now_cpu = time.perf_counter(), others.read()
            longest = max(longest, now - last)
            longest_held = max(longest_held, (now_cpu - last_cpu) / 1e9)
            last, last_cpu = now, now_cpu
        others.close()

    thread = threading.Thread(target=ticker)
    thread.start()
    started.wait()
    time.sleep(0.01)
    longest = longest_held = 0.0
    start = time.perf_counter()
    if refresh is None:
        time.sleep(idle)
    else:
        _Collections.measuring = True
        refresh()
        _Collections.measuring = False
    wall = time.perf_counter() - start
    stop.set()
    thread.join()
    return longest * 1e3, longest_held * 1e3, wall * 1e3


def _row(
    size: int,
    case: str,
    client: str,
    samples: list[tuple[float, float, float]],
    cpu: list[float],
    parse: float,
    holds: float | None = None,
) -> dict[str, object]:
    stalls = [s for s, _, _ in samples]
    return {
        "pods": size,
        "case": case,
        "client": client,
        "gap_ms_median": round(statistics.median(stalls), 2),
        "gap_ms_max": round(max(stalls), 2),
        "held_cpu_ms_max": round(max(c for _, c, _ in samples), 2),
        "build_hold_cpu_ms_max": None if holds is None else round(holds, 2),
        "gc_ms_max": round(_Collections.take(), 2),
        "loop_cpu_ms": round(statistics.median(cpu), 2) if cpu else None,
        "round_ms_median": round(statistics.median(w for _, _, w in samples), 1),
        "dnspython_parse_ms": round(parse, 1),
    }


def _options(cluster: LocalCluster, port: int) -> dict[str, Any]:
    """A client of the cluster's DNS whose rounds only the benchmark triggers."""
    return {
        "port": port,
        "nameservers": [cluster.nameserver],
        "namespace": cluster.namespace,
        "refresh": _QUIET,
    }


@contextlib.contextmanager
def _started_sync(
    service: str, cluster: LocalCluster, port: int
) -> Iterator[tuple[headlesslb.sync.HeadlessTransport, anyio.from_thread.BlockingPortal]]:
    """A sync transport with its first round in, and its discovery thread's portal."""
    with headlesslb.sync.HeadlessTransport(service, **_options(cluster, port)) as transport:
        portal = transport._host._portal  # the discovery thread's loop (benchmark only)
        assert portal is not None
        portal.call(transport.refresher.wait_ready)
        yield transport, portal


async def _measure_async(cluster: LocalCluster, size: int, rounds: int) -> list[dict[str, object]]:
    fqdn = cluster.fqdn("big-hl")
    rows = []
    async with HeadlessTransport("big-hl", **_options(cluster, cluster.port)) as transport:
        await transport.refresher.wait_ready()
        refresh = transport.refresher.refresh
        # changed: one Pod more or fewer each round.
        samples, cpu, parse = [], [], []
        _Holds.take()
        for i in range(2 * rounds):
            cluster.scale("big", size + (1 if i % 2 == 0 else 0))
            parse.append(_dnspython_parse_ms(_warm(cluster, fqdn)))
            if i < rounds:
                samples.append(await _async_stall(refresh))
            else:
                cpu.append(await _loop_cpu(refresh))
        rows.append(
            _row(size, "changed", "async", samples, cpu, statistics.median(parse), _Holds.take())
        )
        changed_wall = statistics.median(w for _, _, w in samples)
        cluster.scale("big", size)
        _warm(cluster, fqdn)
        await refresh()
        assert len(transport.pool.snapshot.members) == size
        samples = [await _async_stall(refresh) for _ in range(rounds)]
        cpu = [await _loop_cpu(refresh) for _ in range(rounds)]
        rows.append(_row(size, "unchanged", "async", samples, cpu, statistics.median(parse)))
        # The machine's own noise over windows as long as a changed round: a process that is
        # descheduled shows a gap too, whatever it was doing.
        idle = [await _idle_gap(changed_wall / 1e3) for _ in range(3)]
        rows.append(_row(size, "idle (noise)", "async", idle, [], 0.0))
    shuffling = _Shuffling(
        transport.parts.service, port=cluster.port, nameservers=[cluster.dns_address]
    )
    shuffling.variants = _shuffled_replies(cluster, fqdn, 3)
    shuffled_parse = statistics.median(_dnspython_parse_ms(w) for w in shuffling.variants)
    async with HeadlessTransport(
        "big-hl", discovery=shuffling, refresh=_QUIET, namespace=cluster.namespace
    ) as transport:
        await transport.refresher.wait_ready()
        refresh = transport.refresher.refresh
        samples = [await _async_stall(refresh) for _ in range(rounds)]
        cpu = [await _loop_cpu(refresh) for _ in range(rounds)]
        assert len(transport.pool.snapshot.members) == size
        rows.append(_row(size, "reordered", "async", samples, cpu, shuffled_parse))
    return rows


def _measure_sync(cluster: LocalCluster, size: int, rounds: int) -> list[dict[str, object]]:
    fqdn = cluster.fqdn("big-hl")
    rows = []
    with _started_sync("big-hl", cluster, cluster.port) as (transport, portal):

        def refresh() -> object:
            return portal.call(transport.refresher.refresh)

        def cpu() -> float:
            return portal.call(_loop_cpu, transport.refresher.refresh)

        samples, cpus, parse, idle = [], [], [], []
        _Holds.take()
        for i in range(2 * rounds):
            cluster.scale("big", size + (1 if i % 2 == 0 else 0))
            parse.append(_dnspython_parse_ms(_warm(cluster, fqdn)))
            if i < rounds:
                samples.append(_sync_stall(refresh))
                # Alternating with it, as long a window of nothing: the machine's noise.
                idle.append(_sync_stall(None, idle=samples[-1][2] / 1e3))
            else:
                cpus.append(cpu())
        rows.append(
            _row(size, "changed", "sync", samples, cpus, statistics.median(parse), _Holds.take())
        )
        rows.append(_row(size, "idle (noise)", "sync", idle, [], 0.0))
        cluster.scale("big", size)
        _warm(cluster, fqdn)
        refresh()
        samples = [_sync_stall(refresh) for _ in range(rounds)]
        cpus = [cpu() for _ in range(rounds)]
        rows.append(_row(size, "unchanged", "sync", samples, cpus, statistics.median(parse)))
    return rows


def _percentile(values: list[float], q: float) -> float:
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, round(q * (len(ranked) - 1))))]


def _marker_ab(cluster: LocalCluster, size: int, rounds: int) -> list[dict[str, object]]:
    """Changed sync rounds with the discovery thread's hand-over, without it, and as long an
    idle window, in turns: the longest gap of each round, summarised per kind."""
    fqdn = cluster.fqdn("big-hl")
    gaps: dict[str, list[float]] = {"hand-over on": [], "hand-over off": [], "idle (noise)": []}
    with _started_sync("big-hl", cluster, cluster.port) as (transport, portal):

        def marked(on: bool) -> None:
            pauses_module._thread.hands_back = on  # runs on the discovery thread: its mark

        def refresh() -> object:
            return portal.call(transport.refresher.refresh)

        for i in range(2 * rounds):
            # Every round adds or removes a Pod; on and off take turns over both kinds.
            on = i % 4 in (0, 3)
            portal.start_task_soon(_on_loop, marked, on).result()
            cluster.scale("big", size + (1 if i % 2 == 0 else 0))
            _warm(cluster, fqdn)
            gap, _, wall = _sync_stall(refresh)
            gaps["hand-over on" if on else "hand-over off"].append(gap)
            if on:
                gaps["idle (noise)"].append(_sync_stall(None, idle=wall / 1e3)[0])
        portal.start_task_soon(_on_loop, marked, True).result()
    return [
        {
            "pods": size,
            "rounds": kind,
            "n": len(values),
            "gap_ms_median": statistics.median(values),
            "gap_ms_p80": _percentile(values, 0.8),
            "gap_ms_max": max(values),
        }
        for kind, values in gaps.items()
    ]


async def _on_loop(function: Callable[[bool], None], value: bool) -> None:
    function(value)


SWAPPED = "swap-hl"
"""The Service whose every Pod is replaced each round: records of its own, no workload."""


def _swap(cluster: LocalCluster, size: int, generation: int) -> float:
    """Replace every record of :data:`SWAPPED` by ``size`` addresses of ``generation`` (two
    ranges taking turns, so each set shares nothing with the one before); the reply's dnspython
    parse time (ms).

    Each such round leaves thousands of new long-lived objects (endpoints, their states), which
    in this small process makes CPython's next full collection due within a round or two: 19-25
    ms with every thread stopped, whatever runs (``gc_ms_max``). The measured rounds start from
    a collection, so that the gap is the round's own, as in the other cases, where few objects
    change and a full collection seldom lands.
    """
    fqdn = f"{SWAPPED}.{cluster.namespace}.svc.{cluster.domain}"
    second = 1 + generation % 2
    cluster.remove_record(fqdn, "A")
    cluster.add_record(fqdn, "A", [f"10.{second}.{i // 250}.{i % 250 + 1}" for i in range(size)])
    return _dnspython_parse_ms(_warm(cluster, fqdn))


def _disjoint_rounds(
    cluster: LocalCluster, size: int, rounds: int, parse: list[float]
) -> Iterator[bool]:
    """Every Pod replaced before each of 2 × ``rounds`` rounds: yields True for the first
    ``rounds`` (measure the stall, from a full collection: see :func:`_swap`), False for the
    rest (measure the loop's CPU); the replies' parse times go to ``parse``."""
    for i in range(2 * rounds):
        parse.append(_swap(cluster, size, i + 1))
        if i < rounds:
            gc.collect()
        yield i < rounds


def _keyed_pick(balancer: Balancer) -> Callable[[], object]:
    """A ``key=`` request's pick, another key each time."""
    keys = itertools.cycle([f"user-{i}" for i in range(1000)])
    return lambda: balancer.pick(PickContext(key=next(keys)))


async def _measure_disjoint_async(
    cluster: LocalCluster, size: int, rounds: int
) -> dict[str, object]:
    parse = [_swap(cluster, size, 0)]
    async with HeadlessTransport(SWAPPED, **_options(cluster, 80)) as transport:
        await transport.refresher.wait_ready()
        refresh = transport.refresher.refresh
        pick = _keyed_pick(transport.balancer)
        pick()  # key= in use: the sharding picker is installed with every snapshot from now on
        samples, cpu = [], []
        _Holds.take()
        for measured in _disjoint_rounds(cluster, size, rounds, parse):
            if measured:
                samples.append(await _async_stall(refresh, pick))
            else:
                cpu.append(await _loop_cpu(refresh))
        assert len(transport.pool.snapshot.members) == size
    return _row(
        size, "disjoint, keyed", "async", samples, cpu, statistics.median(parse), _Holds.take()
    )


def _measure_disjoint_sync(cluster: LocalCluster, size: int, rounds: int) -> dict[str, object]:
    parse = [_swap(cluster, size, 0)]
    with _started_sync(SWAPPED, cluster, 80) as (transport, portal):
        pick = _keyed_pick(transport.balancer)
        pick()

        def refresh() -> object:
            return portal.call(transport.refresher.refresh)

        samples, cpus = [], []
        _Holds.take()
        for measured in _disjoint_rounds(cluster, size, rounds, parse):
            if measured:
                samples.append(_sync_stall(refresh, tick=pick))
            else:
                cpus.append(portal.call(_loop_cpu, transport.refresher.refresh))
        assert len(transport.pool.snapshot.members) == size
    return _row(
        size, "disjoint, keyed", "sync", samples, cpus, statistics.median(parse), _Holds.take()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sizes", default="100,1000,4000")
    parser.add_argument("--marker-ab", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.marker_ab:
        ab: list[dict[str, object]] = []
        with LocalCluster(ttl=5) as cluster:
            for size in sizes:
                cluster.add_deployment("big", size, lb=None, serve=False)
                ab += _marker_ab(cluster, size, args.rounds)
                cluster.delete_workload("big")
        print_table(ab, title="Sync changed rounds: the discovery thread's GIL hand-over, A/B")
        write_results("refresh_stall_marker_ab", ab, params={"rounds": args.rounds})
        return
    rows: list[dict[str, object]] = []
    _Holds.install()
    _Collections.install()
    with LocalCluster(ttl=5) as cluster:
        for size in sizes:
            cluster.add_deployment("big", size, lb=None, serve=False)
            rows += anyio.run(_measure_async, cluster, size, args.rounds)
            rows += _measure_sync(cluster, size, args.rounds)
            cluster.delete_workload("big")
            rows.append(anyio.run(_measure_disjoint_async, cluster, size, args.rounds))
            rows.append(_measure_disjoint_sync(cluster, size, args.rounds))
    print_table(rows, title="Event-loop (async) / GIL (sync) stall per DNS refresh")
    write_results(
        "refresh_stall",
        rows,
        params={"rounds": args.rounds, "sizes": sizes},
        target={
            "changed_1000_ms": 5,
            "changed_4000_ms": 20,
            "disjoint_keyed_1000_ms": 5,
            "disjoint_keyed_4000_ms": 20,
            "unchanged_ms": 1,
        },
    )


if __name__ == "__main__":
    main()
