"""The background half of a client: discovery, health checks and the request path's lookups.

Both shells run one :class:`Runtime` on an event loop — the async client as a background task of
the loop, the sync client on a loop in a background thread — so discovery, probing and the DNS
lookups a request may need (a Pod by its own name, the fallback's address) are one
implementation for both. The runtime feeds the pure parts (pool, balancer) and tells each client
attached to it when membership changed, so it can close its connections to Pods that left.

Clients of the same Service with the same configuration (``Parts.share_key``) share one runtime
(:meth:`Runtime.attach`): one refresher, one pool and balancer (so in-flight counts, latencies
and ejections are everybody's), one health checker and its probe connections. Each client keeps
its own connections, router (retry budget, throttle, hedging), fallback and event stream. A
shared runtime emits into a hub of its own (:meth:`Runtime.share`): its log observer writes one
line per state change, and every attached client's other observers get each event too.
"""

from __future__ import annotations

import functools
import logging
import threading
import types
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import anyio
import httpx

from ..compose import Parts
from ..core.call import LookupPod
from ..core.endpoint import Endpoint
from ..core.events import EndpointsChanged, Event, EventHub
from ..core.snapshot import Snapshot
from ..telemetry.logs import LogObserver
from . import pauses
from .health import HealthChecker, probe_once
from .refresher import Refresher
from .sender import PodSender
from .shared import SharedDiscovery

__all__ = ["Runtime"]

Address = tuple[str, int]
Retire = Callable[[set[Address]], Awaitable[None]]

log = logging.getLogger("headlesslb.background")
events_log = logging.getLogger("headlesslb.events")


@dataclass(frozen=True, slots=True, eq=False)
class Attached:
    """One client of a runtime: its parts (fallback, events) and its connections' retire."""

    parts: Parts
    retire: Retire


class Runtime:
    """Discovery and health checking for the clients attached to it, on one event loop.

    ``parts`` are the first client's: the runtime's pool, balancer, discovery and policies.
    ``retire(keep)`` is that client's shell's: close connections to every address not in
    ``keep`` once idle. It is called after each membership change, for every attached client.
    """

    def __init__(self, parts: Parts, retire: Retire) -> None:
        self.parts = parts
        self._clients: tuple[Attached, ...] = ()
        self._clients_lock = threading.Lock()
        self.hub: EventHub | None = None
        """The shared runtime's own event stream (:meth:`share`); None while it has one client."""
        self.refresher = Refresher(
            parts.discovery,
            parts.pool,
            parts.refresh,
            clock=parts.clock,
            rng=parts.rng,
            prepare=functools.partial(parts.balancer.prepare, pause=pauses.hand_back_gil),
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
        self.detach_first = self.attach(parts, retire)
        """Detaches the client the runtime was built for (see :meth:`attach`)."""

    # -- sharing ---------------------------------------------------------------------------------
    @property
    def clients(self) -> int:
        """How many clients are attached."""
        return len(self._clients)

    def share(self) -> None:
        """Emit into a hub of the runtime's own from now on (before other clients attach): one
        log line per change, and each attached client's other observers get every event."""
        if self.hub is not None:
            return
        hub = self.hub = EventHub(self.parts.events.service)
        hub.subscribe(LogObserver())
        hub.subscribe(self._fan_out)
        self.parts.pool.events = hub
        self.refresher.events = hub

    def attach(self, parts: Parts, retire: Retire) -> Callable[[], None]:
        """Attach a client: it uses this runtime's pool and balancer from now on, its
        connections are retired on membership changes, its observers get the runtime's events
        (with the current membership at once, as Pods added). Returns the detach function,
        which stops all that (the client is closing); safe from any thread, and twice."""
        mine = self.parts
        if parts is not mine:
            parts.pool = mine.pool
            parts.balancer = mine.balancer
            parts.router.pool = mine.pool
            parts.router.balancer = mine.balancer
        parts.router.last_discovery_error = lambda: self.refresher.last_error
        client = Attached(parts, retire)
        with self._clients_lock:
            self._clients = (*self._clients, client)
        members = mine.pool.snapshot.members
        if parts is not mine and members:
            pool = mine.pool
            added = tuple(m.endpoint for m in members)
            event = EndpointsChanged(parts.events.service, added, (), pool.counts())
            # An observer another attached client has too saw the membership come already.
            known = {
                _identity(o)
                for c in self._clients
                if c is not client
                for o in c.parts.events.observers
            }
            _tell((parts.events,), event, known)

        def detach() -> None:
            with self._clients_lock:
                self._clients = tuple(c for c in self._clients if c is not client)

        return detach

    def _fan_out(self, event: Event) -> None:
        _tell([client.parts.events for client in self._clients], event, set())

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
        for client in self._clients:
            fallback = client.parts.fallback
            mine = keep
            if fallback is not None and fallback.cached is not None:
                mine = keep | {fallback.cached}
            try:
                await client.retire(mine)
            except Exception:  # one client's connections never stop the others' discovery
                log.exception("headlesslb: retiring connections to Pods that left failed")
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


def _identity(observer: object) -> tuple[int, str]:
    """What makes two subscriptions one observer: the object, or a method's object and name
    (``metrics.observe`` is a new bound method at each access)."""
    owner = getattr(observer, "__self__", None)
    if owner is None or isinstance(owner, types.ModuleType):
        return id(observer), ""
    return id(owner), getattr(observer, "__name__", "")


def _tell(hubs: Iterable[EventHub], event: Event, told: set[tuple[int, str]]) -> None:
    """Hand a shared runtime's ``event`` to the observers of clients' ``hubs``: each observer
    once (one subscribed to several clients gets one event, not several), none in ``told``
    (see :func:`_identity`), and no log observer (the runtime's own logs it, once for all)."""
    for events in hubs:
        for observer in events.observers:
            identity = _identity(observer)
            if isinstance(observer, LogObserver) or identity in told:
                continue
            told.add(identity)
            try:
                observer(event)
            except Exception:
                events_log.exception("headlesslb observer %r failed on %r", observer, event)
