"""The background half of one client: discovery, health checks and the request path's lookups.

Both shells run one :class:`Runtime` on an event loop — the async client as one of its own
background tasks, the sync client on a private loop in a background thread — so discovery,
probing and the DNS lookups a request may need (a Pod by its own name, the fallback's address)
are one implementation for both. The runtime feeds the pure parts (pool, balancer) and tells the
shell when membership changed, so it can close connections to Pods that left.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

import anyio
import httpx

from ..assembly import Parts
from ..core.call import LookupPod
from ..core.endpoint import Endpoint
from ..core.snapshot import Snapshot
from .health import HealthChecker, probe_once
from .refresher import Refresher
from .sender import PodSender
from .shared import SharedDiscovery

__all__ = ["Runtime"]

Address = tuple[str, int]

_GIL_HAND_BACK = 0.0001
"""Seconds a table build in a worker thread sleeps every millisecond of work. Sleeping 0 would
release the GIL only to take it straight back; this long, a waiting thread (the event loop, a
request thread) surely gets it, instead of waiting out the 5 ms switch interval."""


def hand_back_gil() -> None:
    """Let other threads run for a moment (a table build's pause, in a worker thread)."""
    time.sleep(_GIL_HAND_BACK)


class Runtime:
    """Discovery and health checking for one client, on one event loop.

    ``retire(keep)`` is the shell's: close connections to every address not in ``keep`` once
    idle. It is called after each membership change.
    """

    def __init__(self, parts: Parts, retire: Callable[[set[Address]], Awaitable[None]]) -> None:
        self.parts = parts
        self._retire = retire
        self.refresher = Refresher(
            parts.discovery,
            parts.pool,
            parts.refresh,
            clock=parts.clock,
            rng=parts.rng,
            prepare=functools.partial(parts.balancer.prepare, pause=hand_back_gil),
            on_change=self._membership_changed,
            events=parts.events,
        )
        self.health = (
            None if parts.health is None else HealthChecker(parts.health, parts.pool, self._probe)
        )
        # Probes get their own connections: a probe never queues behind, or holds up, a request.
        self._probes = PodSender(
            verify=parts.verify, cert=parts.cert, http2=parts.http2, limits=parts.limits
        )
        parts.pool.on_refused = self.refused
        parts.router.last_discovery_error = lambda: self.refresher.last_error

    async def run(self) -> None:
        """Discovery and (when configured) health checks, until cancelled."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.refresher.run)
                if self.health is not None:
                    tg.start_soon(self.health.run)
        finally:
            discovery = self.parts.discovery
            if isinstance(discovery, SharedDiscovery):
                discovery.detach()  # the last client of the Service drops the shared answer
            with anyio.CancelScope(shield=True):
                await self._probes.aclose()

    @property
    def ready(self) -> bool:
        """Whether the first requests may go: the first DNS round is done and, when Pods start
        unhealthy, the first probes of them too."""
        health = self.health
        if health is not None and health.check.start_unhealthy and not health.probed.is_set():
            return False
        return self.refresher.ready

    async def wait_ready(self) -> None:
        """Wait until :attr:`ready`, at most ``RefreshPolicy.first_resolution_timeout``."""
        with anyio.move_on_after(self.parts.refresh.first_resolution_timeout):
            await self.refresher.wait_ready()
            health = self.health
            members = self.parts.pool.snapshot.members
            if health is not None and health.check.start_unhealthy and members:
                await health.probed.wait()

    async def lookup_pod(self, step: LookupPod) -> Endpoint | None:
        """A StatefulSet Pod by its own DNS name, through the capped, shared cache."""
        cache = self.parts.pinned
        if step.fresh:
            cache.invalidate(step.ordinal)
        resolve_name = getattr(self.parts.discovery, "resolve_name", None)
        if resolve_name is None:
            return None  # a discovery source that cannot look names up

        async def lookup() -> tuple[Endpoint | None, float]:
            resolution = await resolve_name(step.name, step.port)
            if not resolution.endpoints:
                return None, resolution.ttl
            found = resolution.endpoints[0]
            return Endpoint(found.ip, found.port, step.hostname, step.ordinal), resolution.ttl

        return await cache.get(step.ordinal, lookup)

    def refused(self) -> None:
        """A Pod refused a connection: ask DNS early, past the answer other clients share."""
        if self.refresher.request_refresh():
            discovery = self.parts.discovery
            if isinstance(discovery, SharedDiscovery):
                discovery.invalidate()

    async def _membership_changed(self, snapshot: Snapshot) -> None:
        if self.health is not None:
            self.health.wake()  # probe new Pods now, not an interval from now
        keep = {m.key for m in snapshot.members}
        fallback = self.parts.fallback
        if fallback is not None and fallback.cached is not None:
            keep.add(fallback.cached)
        await self._retire(keep)
        await self._probes.retire(keep)

    async def _probe(self, endpoint: Endpoint) -> bool:
        assert self.parts.health is not None
        return await probe_once(
            self._send_probe, endpoint, self.parts.health, base_url=self.parts.base_url
        )

    async def _send_probe(self, endpoint: Endpoint, request: httpx.Request) -> httpx.Response:
        return await self._probes.send_to(
            request,
            endpoint.ip,
            endpoint.port,
            scheme=self.parts.raw_scheme,
            sni=self.parts.sni,
        )
