"""``headlesslb top <service>``: a live table of a Service's Pods, refreshed in place.

One row per Pod: its state (healthy, ejected and for how long, unhealthy, draining); under it,
the last DNS round and the latest state changes. It is one more observer of a client's events
(:mod:`headlesslb.core.events`), so it shows what the logs and metrics say. Like ``kubectl top``
it only observes: it asks DNS and, with ``--health-path``, health-checks the Pods, but sends no
request of its own. ``--probe PATH`` (opt-in) sends GET PATH ``--rate`` times a second, and adds
the columns those requests fill: in flight, requests per second, error rate, peak-EWMA latency.

Built on rich (``pip install 'headlesslb[top]'``): its ``Live`` display redraws the table in
place in any terminal, which hand-written ANSI would have to re-implement.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import time
from dataclasses import dataclass
from typing import Any

import anyio
import httpx

from .cli import why_empty
from .core.endpoint import EndpointStatus
from .core.events import (
    AttemptFinished,
    DiscoveryRound,
    EndpointEjected,
    EndpointReadmitted,
    EndpointsChanged,
    Event,
    FallbackEngaged,
    FallbackLeft,
    HealthChanged,
)

__all__ = ["WINDOW", "Watcher", "run_top"]

WINDOW = 10.0
"""Seconds of attempts that requests/s and the error rate are computed over."""


@dataclass(frozen=True, slots=True)
class _Round:
    at: float
    event: DiscoveryRound


class Watcher:
    """An observer keeping what the table shows: recent attempts per Pod, the last DNS round and
    the latest state changes. Events arrive on the client's loop; the table reads them there."""

    def __init__(self, clock: Any = time.monotonic, ip_family: str = "ipv4") -> None:
        self._clock = clock
        self._ip_family = ip_family
        """Which addresses the client asks DNS for (what an empty answer lacked)."""
        self._since = clock()
        self.attempts: dict[str, collections.deque[tuple[float, bool]]] = {}
        self.last_round: _Round | None = None
        self.changes: collections.deque[str] = collections.deque(maxlen=5)

    def wants_attempts(self) -> bool:
        """Always: the table counts every attempt."""
        return True

    def __call__(self, event: Event) -> None:
        """Keep what the table needs from ``event``."""
        now = self._clock()
        stamp = time.strftime("%H:%M:%S")
        if isinstance(event, AttemptFinished):
            if event.address is not None and event.error != "cancelled":
                failed = event.error is not None or (event.status or 0) >= 500
                self.attempts.setdefault(event.address, collections.deque()).append((now, failed))
        elif isinstance(event, DiscoveryRound):
            self.last_round = _Round(now, event)
        elif isinstance(event, EndpointEjected):
            self.changes.append(f"{stamp} {event.endpoint} ejected: {event.reason}")
        elif isinstance(event, EndpointReadmitted):
            self.changes.append(f"{stamp} {event.endpoint} readmitted: {event.reason.value}")
        elif isinstance(event, HealthChanged):
            state = "healthy" if event.healthy else "unhealthy"
            self.changes.append(f"{stamp} {event.endpoint} is now {state}")
        elif isinstance(event, EndpointsChanged):
            for endpoint in event.added:
                self.changes.append(f"{stamp} {endpoint} joined DNS")
            for endpoint in event.removed:
                self.changes.append(f"{stamp} {endpoint} left DNS")
        elif isinstance(event, FallbackEngaged):
            self.changes.append(f"{stamp} fallback {event.fallback} engaged: {event.reason}")
        elif isinstance(event, FallbackLeft):
            self.changes.append(f"{stamp} fallback {event.fallback} left")

    def rates(self, address: str) -> tuple[float, float | None]:
        """Requests per second and error rate (None: no request) over the last :data:`WINDOW`."""
        recent = self.attempts.get(address)
        if not recent:
            return 0.0, None
        horizon = self._clock() - WINDOW
        while recent and recent[0][0] < horizon:
            recent.popleft()
        if not recent:
            return 0.0, None
        failed = sum(1 for _, bad in recent if bad)
        span = min(WINDOW, max(self._clock() - self._since, 1.0))  # just started: a shorter window
        return len(recent) / span, failed / len(recent)

    def dns_line(self) -> str:
        """The last DNS round, in words."""
        last = self.last_round
        if last is None:
            return "DNS: no round yet"
        event, ago = last.event, self._clock() - last.at
        if not event.ok:
            return f"DNS: FAILING ({event.error}); keeping {event.known} endpoints; {ago:.1f} s ago"
        if not event.endpoints:
            why = why_empty(event.nxdomain, self._ip_family)
            return f"DNS: 0 endpoints: {why}; TTL {event.ttl:g} s, {ago:.1f} s ago"
        partial = " (partial)" if event.partial else ""
        return (
            f"DNS: {event.endpoints} endpoints{partial}, TTL {event.ttl:g} s,"
            f" {event.duration * 1000:.1f} ms, {ago:.1f} s ago"
        )


def _state(status: EndpointStatus) -> str:
    if status.ejection_remaining is not None:
        return f"ejected ({status.ejection_remaining:.1f} s)"
    if status.draining:
        return "draining"
    return "healthy" if status.healthy else "unhealthy"


@dataclass(frozen=True, slots=True)
class Probes:
    """What ``--probe`` sends: GET ``path``, ``rate`` times a second."""

    path: str
    rate: float


def render(
    service: str,
    statuses: list[EndpointStatus],
    watcher: Watcher,
    probes: Probes | None = None,
    sent: int = 0,
    health_path: str | None = None,
) -> Any:
    """The table (a rich renderable) for one redraw. Without probes, only what observing shows:
    no column a request of top's own would have to fill."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"headlesslb top {service}", title_justify="left")
    columns = ["POD", "ADDRESS", "STATE"]
    if probes is not None:
        columns += ["IN-FLIGHT", "REQ/S", "ERRORS", "EWMA"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("IN-FLIGHT", "REQ/S") else "left")
    for status in statuses:
        host = f"[{status.ip}]" if ":" in status.ip else status.ip
        address = f"{host}:{status.port}"
        state = _state(status)
        style = "green" if state == "healthy" else "red"
        row: list[Any] = [status.hostname or "-", address, Text(state, style=style)]
        if probes is not None:
            rate, errors = watcher.rates(address)
            ewma = "-" if status.ewma_latency is None else f"{status.ewma_latency * 1000:.1f} ms"
            errors_text = "-" if errors is None else f"{errors:.0%}"
            row += [str(status.in_flight), f"{rate:.1f}", errors_text, ewma]
        table.add_row(*row)
    if probes is None:
        checks = "" if health_path is None else f"health checks on {health_path}, but "
        traffic = f"observing: {checks}no request sent (--probe PATH measures the Pods)"
    else:
        traffic = f"probes: GET {probes.path}, {probes.rate:g}/s, {sent} sent"
    footer = [Text(watcher.dns_line()), Text(traffic)]
    footer += [Text(line, style="dim") for line in watcher.changes]
    return Group(table, *footer)


async def _top(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from .aio.client import HeadlessClient
    from .core.health import HealthCheck

    watcher = Watcher(ip_family=args.ip_family)
    health = None if args.health_path is None else HealthCheck(path=args.health_path, interval=1)
    probes = None if args.probe is None else Probes(args.probe, args.rate)
    sent = 0
    async with HeadlessClient(
        args.service,
        port=args.port,
        nameservers=args.nameserver,
        namespace=args.namespace,
        cluster_domain=args.cluster_domain,
        ip_family=args.ip_family,
        resolv_conf=args.resolv_conf,
        discovery_timeout=args.timeout,
        health=health,
        observers=[watcher],
    ) as client:
        service = client.transport.service.host

        async def probe(probes: Probes) -> None:
            nonlocal sent
            while True:
                await anyio.sleep(1 / probes.rate)
                sent += 1
                # A failure is counted per attempt by the watcher; the next probe goes on.
                with contextlib.suppress(httpx.HTTPError):
                    await client.get(probes.path)

        def table() -> Any:
            return render(service, client.endpoints(), watcher, probes, sent, args.health_path)

        async def draw() -> None:
            await client.transport.runtime.wait_ready()
            if args.once:
                await anyio.sleep(args.interval)
                Console().print(table())
                return
            started = time.monotonic()
            with Live(auto_refresh=False, console=Console()) as live:
                while args.duration is None or time.monotonic() - started < args.duration:
                    live.update(table(), refresh=True)
                    await anyio.sleep(args.interval)

        async with anyio.create_task_group() as tg:
            if probes is not None:
                tg.start_soon(probe, probes)
            await draw()
            tg.cancel_scope.cancel()
    return 0


def run_top(args: argparse.Namespace) -> int:
    """Run ``headlesslb top`` with arguments the CLI parsed and checked; returns the exit code."""
    try:
        import rich  # noqa: F401
    except ImportError:
        print("headlesslb top needs rich: pip install 'headlesslb[top]'", file=sys.stderr)
        return 2
    return anyio.run(_top, args)
