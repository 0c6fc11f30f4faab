"""The composition root: a client's options checked, and every part it drives built.

Both shells — the async :class:`headlesslb.HeadlessTransport` and the blocking
:class:`headlesslb.sync.HeadlessTransport` — take the same keyword arguments
(:class:`~headlesslb.options.TransportOptions`) and hand them to :func:`assemble`, which validates
them and builds the :class:`Parts`: the expanded Service name, the pool, the balancer, the call
core's :class:`~headlesslb.core.call.Router`, the discovery source, and what the shells need to
know about TLS, hosts and ports. Nothing here starts any I/O.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from .clientbase import ServiceURLs, service_hosts
from .core import validate
from .core.balancer import Balancer
from .core.call import Router
from .core.clock import Clock, monotonic
from .core.endpoint import Endpoint
from .core.events import EventHub, Observer
from .core.health import HealthCheck
from .core.hedge import HedgePolicy, Hedger
from .core.names import (
    ORDINAL_MAX,
    ServiceName,
    detect_namespace,
    expand_service_name,
    load_resolv_conf,
    nameservers_from,
    parse_port,
    validate_label,
    validate_statefulset,
)
from .core.pickers import ConsistentHash, Ordinal, PickerName, SlowStart, make_picker
from .core.pickers.base import PickerFactory
from .core.pool import OutlierPolicy, Pool
from .core.retry import RetryPolicy
from .core.schedule import RefreshPolicy
from .core.subset import Subset, Subsetter, as_subset
from .core.throttle import AdaptiveThrottle
from .errors import ConfigurationError
from .io.cache import LookupCache
from .io.dns import DnsDiscovery, IpFamily
from .io.fallback import DEFAULT_PORTS, Fallback, authority
from .io.refresher import Discovery
from .io.shared import ServiceKey, SharedDiscovery
from .telemetry.logs import LogObserver

__all__ = ["Parts", "assemble", "share_key"]

log = logging.getLogger("headlesslb.pool")

PINNED_CACHE_SIZE = 1024
"""Pods looked up by their own name kept at once."""


@dataclass(slots=True, eq=False)
class Parts:
    """Everything a shell drives, built and checked from one set of arguments."""

    service: ServiceName
    scheme: str
    port: int | str
    namespace: str | None
    cluster_domain: str | None
    nameservers: tuple[tuple[str, int], ...]
    ip_family: IpFamily
    discovery_timeout: float
    discovery: Discovery
    refresh: RefreshPolicy
    health: HealthCheck | None
    fallback: Fallback | None
    pinned: LookupCache[int, Endpoint]
    """Pods found by their own DNS name, for ``ordinal=`` when SRV gives no hostnames."""
    pool: Pool
    balancer: Balancer
    router: Router
    clock: Clock
    rng: random.Random
    verify: ssl.SSLContext | str | bool
    cert: Any
    limits: httpx.Limits | None
    http2: bool
    pod_transport: Any
    events: EventHub
    """The client's event stream: logs, metrics, spans and ``observers=`` subscribe to it."""
    urls: ServiceURLs
    """Which URLs name the Service, and the scheme and port they must use."""
    share_key: Hashable | None = None
    """What makes two clients' background parts interchangeable (:func:`share_key`): clients
    with equal keys share one runtime, pool and health checker; None never shares."""

    def checked_pod_transport(self, kind: type) -> Any:
        """``pod_transport`` if it is a ``kind`` (the shell's httpx transport base) or None."""
        transport = self.pod_transport
        if transport is not None and not isinstance(transport, kind):
            raise ConfigurationError(
                f"pod_transport must be an httpx.{kind.__name__} (httpx.MockTransport works),"
                f" not {type(transport).__name__}"
            )
        return transport

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


def assemble(
    service: str,
    *,
    port: int | str | None = None,
    scheme: Literal["http", "https"] = "http",
    picker: PickerName | PickerFactory = "round_robin",
    sharding: PickerFactory | None = None,
    slow_start: SlowStart | None = None,
    subset: int | Subset | None = None,
    writes_to: int | None = None,
    fallback: str | None = None,
    nameservers: Sequence[str] | None = None,
    resolv_conf: str = "/etc/resolv.conf",
    namespace: str | None = None,
    cluster_domain: str | None = None,
    statefulset: str | None = None,
    ip_family: IpFamily = "ipv4",
    refresh: RefreshPolicy | None = None,
    outlier: OutlierPolicy | None = None,
    health: HealthCheck | None = None,
    retry: RetryPolicy | None = None,
    throttle: AdaptiveThrottle | None = None,
    hedge: HedgePolicy | None = None,
    discovery_timeout: float = 3.0,
    discovery: Discovery | None = None,
    share_discovery: bool = True,
    pod_transport: Any = None,
    verify: ssl.SSLContext | str | bool = True,
    cert: Any = None,
    limits: httpx.Limits | None = None,
    http2: bool = False,
    clock: Clock = monotonic,
    rng: random.Random | None = None,
    observers: Sequence[Observer] = (),
    opentelemetry: bool | None = None,
    pool_class: type[Pool] = Pool,
) -> Parts:
    """Check every argument (a typed error naming it) and build the parts.

    ``pool_class`` lets the sync shell use its thread-safe pool.
    """
    if not isinstance(scheme, str) or scheme not in DEFAULT_PORTS:
        raise ConfigurationError(f"scheme must be 'http' or 'https', not {scheme!r}")
    validate.count("writes_to", writes_to, max=ORDINAL_MAX, allow_none=True)
    validate.number("discovery_timeout", discovery_timeout, min=0, exclusive_min=True)
    for name, value, kind in (
        ("refresh", refresh, RefreshPolicy),
        ("outlier", outlier, OutlierPolicy),
        ("health", health, HealthCheck),
        ("retry", retry, RetryPolicy),
        ("throttle", throttle, AdaptiveThrottle),
        ("hedge", hedge, HedgePolicy),
        ("slow_start", slow_start, SlowStart),
        ("limits", limits, httpx.Limits),
        ("rng", rng, random.Random),
    ):
        validate.instance(name, value, kind, allow_none=True)
    if sharding is not None and not isinstance(sharding, PickerFactory):
        raise ConfigurationError(
            f"sharding must be a PickerFactory such as ConsistentHash(), not {sharding!r}"
        )
    if discovery is not None and not callable(getattr(discovery, "resolve", None)):
        raise ConfigurationError(
            f"discovery must have an async resolve() -> Resolution, not {discovery!r}"
        )
    if not isinstance(resolv_conf, str | os.PathLike):
        raise ConfigurationError(f"resolv_conf must be a path, not {resolv_conf!r}")
    for name, text in (("namespace", namespace), ("cluster_domain", cluster_domain)):
        if text is not None and not isinstance(text, str):
            raise ConfigurationError(f"{name} must be a str or None, not {text!r}")
    if namespace is not None:
        validate_label("namespace", namespace)
    if statefulset is not None:
        validate_statefulset("statefulset", statefulset)
    if not isinstance(verify, ssl.SSLContext | str | bool):
        raise ConfigurationError(
            f"verify must be an ssl.SSLContext, a CA bundle path or a bool, not {verify!r}"
        )
    validate.flag("http2", http2)
    validate.flag("share_discovery", share_discovery)
    if not callable(clock):
        raise ConfigurationError(f"clock must be a callable returning seconds, not {clock!r}")
    if fallback is not None and not isinstance(fallback, str):
        raise ConfigurationError(
            f"fallback must be a Service name or an http(s) URL, not {type(fallback).__name__}"
        )

    if isinstance(observers, str | bytes) or not isinstance(observers, Sequence):
        raise ConfigurationError(f"observers must be a sequence of callables, not {observers!r}")
    if opentelemetry is not None:
        validate.flag("opentelemetry", opentelemetry)

    resolv = load_resolv_conf(resolv_conf)
    namespace = namespace or detect_namespace(resolv)
    cluster_domain = cluster_domain or resolv.cluster_domain
    service_name = expand_service_name(service, namespace=namespace, cluster_domain=cluster_domain)
    parsed_port = parse_port(port)
    the_port: int | str = DEFAULT_PORTS[scheme] if parsed_port is None else parsed_port
    # DNS is needed unless discovery is given and the fallback (if any) is a URL.
    needs_dns = discovery is None or (fallback is not None and "://" not in fallback)
    if nameservers is not None:
        servers = nameservers_from(nameservers)
    elif resolv.nameservers:
        servers = nameservers_from(resolv.nameservers)
    elif needs_dns:
        raise ConfigurationError(
            f"{resolv_conf} lists no nameserver: pass nameservers=['ip:port', ...]"
        )
    else:
        servers = ()
    the_rng = rng or random.Random()
    the_subset = as_subset(subset)
    subsetter = None
    place = None
    if the_subset is not None:
        place = the_subset.place(os.environ, the_rng)
        subsetter = Subsetter(the_subset.size, place)
        log.info(
            "%s: a subset of %d Pods, client placed by %s (%s)",
            service,
            the_subset.size,
            place.mode,
            place.identity,
        )
    events = _event_hub(service_name.host, observers, opentelemetry)
    refresh = refresh or RefreshPolicy()
    retry = retry or RetryPolicy()
    pool = pool_class(
        outlier,
        clock=clock,
        rng=the_rng,
        new_endpoints_healthy=health is None or not health.start_unhealthy,
        events=events,
        subset=subsetter,
    )
    balancer = Balancer(
        pool,
        make_picker(
            picker,
            rng=the_rng,
            clock=clock,
            latency_decay=pool.outlier.latency_decay,
            slow_start=slow_start,
        ),
        sharding=sharding or ConsistentHash(),
        ordinal=Ordinal(),
    )
    the_key: Hashable | None = None
    if discovery is None:
        dns = DnsDiscovery(
            service_name,
            port=the_port,
            nameservers=servers,
            ip_family=ip_family,
            timeout=discovery_timeout,
            statefulset=statefulset,
        )
        key = ServiceKey(
            service_name.fqdn,
            the_port,
            servers,
            ip_family,
            discovery_timeout,
            statefulset,
            refresh,
        )
        discovery = SharedDiscovery(dns, key, clock) if share_discovery else dns
        if share_discovery and rng is None:
            the_key = share_key(
                key,
                host=service_name.host,
                scheme=scheme,
                picker=picker,
                sharding=sharding,
                slow_start=slow_start,
                subset=None if subsetter is None else (subsetter.size, place),
                outlier=pool.outlier,
                health=health,
                verify=verify,
                cert=cert,
                limits=limits,
                http2=http2,
                clock=clock,
                pool_class=pool_class,
            )
    the_fallback = (
        None
        if fallback is None
        else Fallback(
            fallback,
            scheme=scheme,
            namespace=namespace,
            cluster_domain=cluster_domain,
            port=the_port,
            nameservers=servers,
            ip_family=ip_family,
            discovery_timeout=discovery_timeout,
            refresh=refresh,
            clock=clock,
        )
    )
    budget = retry.budget(clock)
    router = Router(
        service=service_name,
        pool=pool,
        balancer=balancer,
        retry=retry,
        budget=budget,
        rng=the_rng,
        port=the_port,
        clock=clock,
        writes_to=writes_to,
        statefulset=statefulset,
        has_fallback=the_fallback is not None,
        fallback_name=None if the_fallback is None else the_fallback.name,
        throttle=None if throttle is None else throttle.build(clock, the_rng),
        events=events,
        hedger=None if hedge is None else Hedger(hedge, retry, budget, clock=clock),
    )
    return Parts(
        service=service_name,
        scheme=scheme,
        port=the_port,
        namespace=namespace,
        cluster_domain=cluster_domain,
        nameservers=servers,
        ip_family=ip_family,
        discovery_timeout=discovery_timeout,
        discovery=discovery,
        refresh=refresh,
        health=health,
        fallback=the_fallback,
        pinned=LookupCache(refresh, clock, max_entries=PINNED_CACHE_SIZE),
        pool=pool,
        balancer=balancer,
        router=router,
        clock=clock,
        rng=the_rng,
        verify=verify,
        cert=cert,
        limits=limits,
        http2=http2,
        pod_transport=pod_transport,
        events=events,
        urls=ServiceURLs(service_hosts(service_name, namespace), scheme, the_port),
        share_key=the_key,
    )


class _Unshareable(Exception):
    """A setting two clients cannot be shown to agree on."""


@dataclass(frozen=True, slots=True, eq=False)
class _Same:
    """A setting compared by identity: the very same object (an SSLContext, a clock)."""

    value: object

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


def _token(value: object) -> Hashable:
    """``value`` as a part of a sharing key: itself when it compares by value (numbers, text,
    the frozen policies), the object's identity when it does not, _Unshareable for a picker
    factory of the user's own (it may keep state the key cannot see)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, tuple):
        return tuple(_token(v) for v in value)
    if isinstance(value, httpx.Limits):
        return ("limits", value.max_connections, value.max_keepalive_connections,
                value.keepalive_expiry)  # fmt: skip
    if isinstance(value, ConsistentHash):
        return ("consistent_hash", value.over, value.table_size_factor, value.table_size,
                value.start, value.balance_factor)  # fmt: skip
    if isinstance(value, PickerFactory):
        raise _Unshareable
    if type(value).__eq__ is not object.__eq__ and getattr(value, "__dataclass_params__", None):
        try:
            hash(value)
        except TypeError:
            return _Same(value)
        return value  # a frozen policy (RefreshPolicy, OutlierPolicy, HealthCheck, SlowStart)
    return _Same(value)


def share_key(dns: ServiceKey, **settings: object) -> Hashable | None:
    """What decides a client's background parts, as one key: two clients with equal keys may
    share one runtime (refresher, pool, balancer, health checks, probe connections).

    ``dns`` is what decides DNS rounds (:class:`~headlesslb.io.shared.ServiceKey`); ``settings``
    the rest: pool (outlier policy, health check, subset and place, the pool class), pickers
    (picker, sharding, slow start), what probes use (scheme, host, TLS, limits, HTTP/2), the
    clock. None when one of them cannot be compared safely (a picker factory of the user's own):
    such a client runs its own.
    """
    try:
        return (dns, *((name, _token(value)) for name, value in sorted(settings.items())))
    except _Unshareable:
        return None


def _event_hub(service: str, observers: Sequence[Observer], opentelemetry: bool | None) -> EventHub:
    """The client's event stream with its observers: logging, the user's, OpenTelemetry."""
    events = EventHub(service)
    events.subscribe(LogObserver())
    for observer in observers:
        events.subscribe(observer)
    if opentelemetry is not False:
        from .telemetry.otel import OpenTelemetryObserver, api_available, default_observer

        if opentelemetry and not api_available():
            raise ConfigurationError(
                "opentelemetry=True needs the OpenTelemetry API:"
                " pip install 'headlesslb[opentelemetry]'"
            )
        chosen = any(isinstance(o, OpenTelemetryObserver) for o in observers)
        if api_available() and not chosen:
            # Zero-code instrumentation: the global providers, no setting needed.
            events.subscribe(default_observer())
    return events
