"""The background half of a client: discovery, health checks and the request path's lookups.

A :class:`Runtime` is built from a :class:`RuntimeSpec`, a frozen record of what the user passed
that shapes it, and owns everything it builds: the pool and balancer, the discovery source, the
refresher feeding the pool, the health checker and its probe connections, the cache of Pods
looked up by their own name, and an event stream. Both shells run one on an event loop (the async
client as a task of the loop, the sync client on a loop in a background thread), so discovery,
probing and the DNS lookups a request may need are one implementation for both.

Clients hold a lease on a runtime (:class:`~headlesslb.io.shared.Lease`) and attach to it. Two
clients share one exactly when their specs are equal: then one refresher, pool and balancer (so
in-flight counts, latencies and ejections are everybody's), one health checker and its probe
connections serve both. A spec that is not :attr:`~RuntimeSpec.shareable` gets a runtime of its
client's own. Each client keeps its connections, its router (bound to the runtime's pool and
balancer), its fallback and its event stream. The runtime's stream logs each change once and
hands every event to each attached client's other observers, each observer once.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import threading
import types
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass

import anyio
import httpx

from ..core.balancer import Balancer
from ..core.call import LookupPod
from ..core.clock import Clock
from ..core.endpoint import EMPTY_WORDS, NXDOMAIN_WORDS, Endpoint
from ..core.events import EndpointsChanged, Event, EventHub, LoadReported, LoadReportRejected
from ..core.health import HealthCheck
from ..core.limits import ConnectionLimits
from ..core.names import ServiceName
from ..core.orca import LoadReport, LoadReports
from ..core.pickers import ConsistentHash, Ordinal, PickerName, SlowStart, make_picker
from ..core.pickers.base import PickerFactory, ReadsLoad
from ..core.pool import OutlierPolicy, Pool
from ..core.resolv import DnsTries
from ..core.schedule import RefreshPolicy
from ..core.snapshot import Snapshot
from ..core.subset import ClientPlace, Subsetter
from ..errors import (
    DnsUnreachable,
    EmptyAnswer,
    NoHealthyPods,
    NotReady,
    NotReadyInTime,
    ServiceNotFound,
)
from ..telemetry.logs import LogObserver
from . import pauses
from .cache import LookupCache
from .dns import DnsDiscovery, IpFamily
from .fallback import DEFAULT_PORTS, Fallback, authority
from .health import HealthChecker, probe_once
from .kube import EndpointSliceDiscovery, EndpointSlices
from .refresher import Discovery, PushDiscovery, Refresher
from .sender import PodSender
from .shared import ServiceKey, SharedDiscovery
from .tasks import scheduler

__all__ = ["ConnectionLimits", "Runtime", "RuntimeSpec", "SubsetPlace"]

Address = tuple[str, int]
Retire = Callable[[set[Address]], Awaitable[None]]

log = logging.getLogger("headlesslb.background")
events_log = logging.getLogger("headlesslb.events")

PINNED_CACHE_SIZE = 1024
"""Pods looked up by their own name kept at once."""


@dataclass(frozen=True, slots=True)
class SubsetPlace:
    """``subset=`` for one client: how many Pods, counted clockwise from which place on the
    ring (from the client's identity, or random: then no other client's is equal)."""

    size: int
    place: ClientPlace


@dataclass(frozen=True, slots=True)
class RuntimeSpec:
    """What a runtime is built from, as the user gave it: two clients whose specs are equal may
    share one runtime (when :attr:`shareable`).

    Names, numbers, the frozen policies and :class:`ConnectionLimits` compare by value; an
    ``ssl.SSLContext``, a clock, and a discovery source or picker factory of the user's own by
    identity (their own ``==``): the same object shares. The pickers are held as passed (a name
    or a factory; ``sharding`` None for the default), so that every default client's spec is
    equal; the runtime builds its own from them.
    """

    service: ServiceName
    scheme: str
    port: int | str
    """A number (A/AAAA) or a named port (SRV)."""
    nameservers: tuple[tuple[str, int], ...]
    ip_family: IpFamily
    discovery_timeout: float
    """What bounds one DNS round (``discovery_timeout=``, or what resolv.conf's options need)."""
    dns_tries: DnsTries
    """How each DNS query asks the nameservers (resolv.conf's timeout, attempts, rotate)."""
    statefulset: str | None
    refresh: RefreshPolicy
    outlier: OutlierPolicy
    health: HealthCheck | None
    subset: SubsetPlace | None
    """Deterministic subsetting, placed (None: every Pod)."""
    picker: PickerName | PickerFactory
    sharding: PickerFactory | None
    """The factory for keyed requests (None: ``ConsistentHash()``)."""
    slow_start: SlowStart | None
    verify: ssl.SSLContext | str | bool
    """What probes verify TLS with (and ``cert``, ``limits``, ``http2``: what they connect with)."""
    cert: Hashable
    limits: ConnectionLimits | None
    http2: bool
    clock: Clock
    pool_class: type[Pool]
    """:class:`Pool`, or the sync shell's thread-safe one."""
    discovery: Discovery | None = None
    """A discovery source of the user's own instead of DNS: such a runtime is never shared."""
    rng: random.Random | None = None
    """A random source of the user's own: such a runtime is never shared (a seeded client must
    see its own sequence)."""
    share: bool = True
    """``share_discovery``: share DNS answers (:mod:`.shared`) and, when shareable, the runtime."""
    endpointslices: EndpointSlices | None = None
    """``discovery=EndpointSlices(...)``, its API filled in: push discovery from the Kubernetes
    API instead of DNS (clients with equal specs share one watch)."""

    @property
    def shareable(self) -> bool:
        """Whether clients with equal specs use one runtime (else each builds its own)."""
        return self.share and self.discovery is None and self.rng is None

    @property
    def dns(self) -> ServiceKey:
        """The DNS question and its schedule: what clients sharing DNS answers agree on."""
        return ServiceKey(
            self.service.fqdn,
            self.port,
            self.nameservers,
            self.ip_family,
            self.discovery_timeout,
            self.dns_tries,
            self.statefulset,
            self.refresh,
        )

    @property
    def raw_scheme(self) -> bytes:
        """The scheme as httpcore takes it."""
        return self.scheme.encode("ascii")

    @property
    def sni(self) -> str | None:
        """The name TLS verifies for the Pods (https only): the Service's, never a Pod IP."""
        return self.service.host if self.scheme == "https" else None

    @property
    def base_url(self) -> str:
        """``scheme://host[:port]`` naming the Service, as a client's base URL and probes use."""
        default_port = DEFAULT_PORTS[self.scheme]
        port = self.port if isinstance(self.port, int) else default_port
        return f"{self.scheme}://{authority(self.service.host, port, default_port)}"


@dataclass(frozen=True, slots=True, eq=False)
class Attached:
    """One client of a runtime: its event stream (whose observers get the runtime's events), how
    its connections to Pods that left are closed, and its fallback (whose address stays)."""

    events: EventHub
    retire: Retire
    fallback: Fallback | None


class Runtime:
    """Discovery and health checking on one event loop, for the clients attached to it; it
    builds and owns the pool, the balancer and every background part from ``spec``."""

    def __init__(self, spec: RuntimeSpec) -> None:
        self.spec = spec
        self._ready = False
        """Whether :attr:`ready` was seen true (it never turns false again)."""
        rng = spec.rng or random.Random()
        self._clients: tuple[Attached, ...] = ()
        self._clients_lock = threading.Lock()
        self.events = EventHub(spec.service.host)
        """The runtime's event stream: the pool's and the refresher's events, logged once here
        and handed to every attached client's other observers."""
        self.events.subscribe(LogObserver())
        self.events.subscribe(self._fan_out)
        self.pool = spec.pool_class(
            spec.outlier,
            clock=spec.clock,
            rng=rng,
            new_endpoints_healthy=spec.health is None or not spec.health.start_unhealthy,
            events=self.events,
            subset=None if spec.subset is None else Subsetter(spec.subset.size, spec.subset.place),
            on_refused=self.refused,
            zone=None if spec.endpointslices is None else spec.endpointslices.zone_policy(),
        )
        picker = make_picker(spec.picker, rng=rng, clock=spec.clock, slow_start=spec.slow_start)
        sharding = spec.sharding or ConsistentHash()
        self.balancer = Balancer(self.pool, picker, sharding=sharding, ordinal=Ordinal())
        readers = [f for f in (picker, sharding) if isinstance(f, ReadsLoad)]
        if readers:
            # Only now are responses' load reports asked for and read: nobody else pays.
            self.pool.load_reports = LoadReports(
                spec.clock,
                max_age=max(f.report_max_age for f in readers),
                rejected=self._report_rejected,
                reported=self._report_taken,
            )
        self.discovery = spec.discovery or (
            _dns(spec) if spec.endpointslices is None else _endpointslices(spec, rng)
        )
        self.refresher = Refresher(
            self.discovery,
            self.pool,
            spec.refresh,
            clock=spec.clock,
            rng=rng,
            prepare=functools.partial(self.balancer.prepare, pause=pauses.hand_back_gil),
            on_change=self._membership_changed,
            events=self.events,
        )
        self.health = (
            None if spec.health is None else HealthChecker(spec.health, self.pool, self._probe)
        )
        # Probes get their own connections: a probe never queues behind, or holds up, a request.
        self._probes = PodSender(
            verify=spec.verify,
            cert=spec.cert,
            http2=spec.http2,
            limits=spec.limits,
        )
        self.pinned: LookupCache[int, Endpoint] = LookupCache(
            spec.refresh, spec.clock, max_entries=PINNED_CACHE_SIZE
        )
        """Pods found by their own DNS name, for ``ordinal=`` when SRV gives no hostnames."""

    def _report_rejected(self, endpoint: Endpoint, reason: str) -> None:
        self.events.emit(LoadReportRejected(self.events.service, endpoint, reason))

    def _report_taken(self, endpoint: Endpoint, report: LoadReport) -> None:
        self.events.emit(LoadReported(self.events.service, endpoint, report))

    # -- clients ---------------------------------------------------------------------------------
    @property
    def clients(self) -> int:
        """How many clients are attached."""
        return len(self._clients)

    def attach(
        self, events: EventHub, retire: Retire, fallback: Fallback | None = None
    ) -> Callable[[], None]:
        """Attach a client: ``events``' observers get the runtime's events from now on (with the
        current membership at once, as Pods added), ``retire(keep)`` closes its connections to
        every address not in ``keep`` after each membership change (its ``fallback``'s address
        is kept). Returns the detach function, which stops all that (the client is closing);
        safe from any thread, and twice."""
        client = Attached(events, retire, fallback)
        with self._clients_lock:
            others = self._clients
            self._clients = (*others, client)
        members = self.pool.snapshot.members
        if members:
            added = tuple(m.endpoint for m in members)
            event = EndpointsChanged(events.service, added, (), self.pool.counts())
            # An observer another attached client has too saw the membership come already.
            known = {_identity(o) for c in others for o in c.events.observers}
            _tell((events,), event, known)

        def detach() -> None:
            with self._clients_lock:
                self._clients = tuple(c for c in self._clients if c is not client)

        return detach

    def last_discovery_error(self) -> BaseException | None:
        """Why discovery has nothing, if it failed (for the routers of attached clients)."""
        return self.refresher.last_error

    def _fan_out(self, event: Event) -> None:
        _tell([client.events for client in self._clients], event, set())

    # -- running ---------------------------------------------------------------------------------
    async def run(self) -> None:
        """Discovery and (when configured) health checks, until cancelled."""
        self._probes.reap_on(scheduler())  # probe bodies dropped unclosed: released here
        try:
            async with anyio.create_task_group() as tg:
                discovery = self.discovery
                if isinstance(discovery, PushDiscovery):
                    tg.start_soon(discovery.watch, self.refresher.notify)
                tg.start_soon(self.refresher.run)
                if self.health is not None:
                    tg.start_soon(self.health.run)
        finally:
            discovery = self.discovery
            if isinstance(discovery, SharedDiscovery):
                discovery.detach()  # the last runtime of the Service drops the shared answer
            with anyio.CancelScope(shield=True):
                await self._probes.aclose()

    @property
    def ready(self) -> bool:
        """Whether the first requests may go: the first DNS round is done and, when Pods start
        unhealthy, the first probes of them too."""
        if self._ready:
            return True
        health = self.health
        if health is not None and health.check.start_unhealthy and not health.probed.is_set():
            return False
        # Asked by every request: once true it stays so (both events are set once, never
        # cleared), and later requests read one flag instead of the events.
        self._ready = ready = self.refresher.ready
        return ready

    async def wait_ready(self) -> None:
        """Wait until :attr:`ready`, at most ``RefreshPolicy.first_resolution_timeout``."""
        with anyio.move_on_after(self.spec.refresh.first_resolution_timeout):
            await self.refresher.wait_ready()
            health = self.health
            members = self.pool.snapshot.members
            if health is not None and health.check.start_unhealthy and members:
                await health.probed.wait()

    async def until_usable(self, within: float) -> NotReady | None:
        """``wait_ready``'s wait: for the first DNS round and, when Pods start unhealthy and DNS
        gave some, their first health checks, at most ``within`` seconds. Returns None when
        some Pod may take requests, else why none may (:meth:`not_ready`)."""
        with anyio.move_on_after(within):
            await self.refresher.first_round()
            health = self.health
            members = self.pool.snapshot.members
            if health is not None and health.check.start_unhealthy and members:
                await health.probed.wait()
        return self.not_ready(within)

    def not_ready(self, waited: float) -> NotReady | None:
        """Why no Pod may take requests now (None: some may), after ``waited`` seconds of
        waiting for the first answers."""
        snapshot = self.pool.snapshot
        if snapshot.eligible:
            return None
        host = self.spec.service.host
        members = len(snapshot.members)
        refresher = self.refresher
        slices = self.spec.endpointslices is not None
        where = "in its EndpointSlices" if slices else "in DNS"
        if not refresher.ready:
            return NotReadyInTime(
                f"{host} not ready within {waited:g} s: the EndpointSlices not listed yet"
                if slices
                else f"{host} not ready within {waited:g} s: no DNS answer yet (a round may take"
                f" {self.spec.discovery_timeout:g} s)"
            )
        if not members:
            error = refresher.last_error
            if error is not None:
                source = "the Kubernetes API" if slices else "DNS"
                failure = DnsUnreachable(
                    f"{source} could not be asked for {host}: {type(error).__name__}: {error}"
                )
                failure.__cause__ = error
                return failure
            if self.pool.nxdomain:
                return ServiceNotFound(f"{host}: {NXDOMAIN_WORDS}")
            if slices:
                return EmptyAnswer(f"{host}: no ready Pod in the Service's EndpointSlices")
            return EmptyAnswer(f"{host}: {EMPTY_WORDS}")
        health = self.health
        if health is not None and health.check.start_unhealthy:
            if not health.probed.is_set():
                return NotReadyInTime(
                    f"{host} not ready within {waited:g} s: {members} {where}, none health"
                    " checked yet"
                )
            if not any(m.admitted for m in snapshot.members):
                return NoHealthyPods(
                    f"{host}: {members} {where}, none passed its health check ({health.check.path})"
                )
        if all(m.draining for m in snapshot.members):
            return NoHealthyPods(f"{host}: {members} {where}, every one terminating")
        return NoHealthyPods(f"{host}: {members} {where}, every one unhealthy or ejected")

    async def lookup_pod(self, step: LookupPod) -> Endpoint | None:
        """A StatefulSet Pod by its own DNS name, through the capped, shared cache."""
        cache = self.pinned
        if step.fresh:
            cache.invalidate(step.ordinal)
        resolve_name = getattr(self.discovery, "resolve_name", None)
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
            discovery = self.discovery
            if isinstance(discovery, SharedDiscovery):
                discovery.invalidate()

    async def _membership_changed(self, snapshot: Snapshot) -> None:
        if self.health is not None:
            self.health.wake()  # probe new Pods now, not an interval from now
        keep = {m.key for m in snapshot.members}
        for client in self._clients:
            fallback = client.fallback
            mine = keep
            if fallback is not None and fallback.cached is not None:
                mine = keep | {fallback.cached}
            try:
                await client.retire(mine)
            except Exception:  # one client's connections never stop the others' discovery
                log.exception("headlesslb: retiring connections to Pods that left failed")
        await self._probes.retire(keep)

    async def _probe(self, endpoint: Endpoint) -> bool:
        assert self.spec.health is not None
        return await probe_once(
            self._send_probe, endpoint, self.spec.health, base_url=self.spec.base_url
        )

    async def _send_probe(self, endpoint: Endpoint, request: httpx.Request) -> httpx.Response:
        return await self._probes.send_to(
            request,
            endpoint.ip,
            endpoint.port,
            scheme=self.spec.raw_scheme,
            sni=self.spec.sni,
        )


def _dns(spec: RuntimeSpec) -> Discovery:
    """DNS discovery for ``spec``, sharing its answers with the process's other runtimes of the
    same question unless ``share_discovery=False``."""
    dns = DnsDiscovery(
        spec.service,
        port=spec.port,
        nameservers=spec.nameservers,
        ip_family=spec.ip_family,
        timeout=spec.discovery_timeout,
        tries=spec.dns_tries,
        statefulset=spec.statefulset,
    )
    return SharedDiscovery(dns, spec.dns, spec.clock) if spec.share else dns


def _endpointslices(spec: RuntimeSpec, rng: random.Random) -> EndpointSliceDiscovery:
    """EndpointSlice discovery for ``spec`` (its settings' API already filled in)."""
    assert spec.endpointslices is not None
    return EndpointSliceDiscovery(
        spec.service,
        spec.endpointslices,
        port=spec.port,
        ip_family=spec.ip_family,
        statefulset=spec.statefulset,
        refresh=spec.refresh,
        rng=rng,
    )


def _identity(observer: object) -> tuple[int, str]:
    """What makes two subscriptions one observer: the object, or a method's object and name
    (``metrics.observe`` is a new bound method at each access)."""
    owner = getattr(observer, "__self__", None)
    if owner is None or isinstance(owner, types.ModuleType):
        return id(observer), ""
    return id(owner), getattr(observer, "__name__", "")


def _tell(hubs: Iterable[EventHub], event: Event, told: set[tuple[int, str]]) -> None:
    """Hand a runtime's ``event`` to the observers of clients' ``hubs``: each observer once (one
    subscribed to several clients gets one event, not several), none in ``told`` (see
    :func:`_identity`), and no log observer (the runtime's own logs it, once for all)."""
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
