"""The composition root: a client's options checked, and what it drives built from them.

Both shells — the async :class:`headlesslb.HeadlessTransport` and the blocking
:class:`headlesslb.sync.HeadlessTransport` — take the same keyword arguments
(:class:`~headlesslb.options.TransportOptions`) and hand them to :func:`compose`. It checks them
into :class:`Settings` (a typed error naming the argument), reads the environment once (the
``HEADLESSLB_*`` variables, resolv.conf, the namespace), and builds the client's :class:`Parts`:
what stays the client's own (its event stream, fallback, retry budget, throttle, hedging, the URLs
it serves) and the :class:`~headlesslb.io.runtime.RuntimeSpec` its background half is leased by.
Nothing here starts any I/O, and nothing here builds the runtime: the shell leases one when it
starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import ssl
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .clientbase import ServiceURLs, service_hosts
from .core import validate
from .core.call import Router
from .core.clock import Clock, monotonic
from .core.environ import NAMESERVERS, EnvironSettings, from_environ
from .core.events import EventHub, Observer
from .core.health import HealthCheck
from .core.hedge import HedgePolicy, Hedger
from .core.keys import KeySource, check_source
from .core.limits import DEFAULT_LIMITS, ConnectionLimits
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
from .core.pickers import PickerName, SlowStart, make_picker
from .core.pickers.base import PickerFactory
from .core.pool import OutlierPolicy, Pool
from .core.resolv import ResolvConf, dns_timing, note_once
from .core.retry import RetryBudget, RetryPolicy
from .core.schedule import RefreshPolicy
from .core.subset import Subset, as_subset
from .core.throttle import AdaptiveThrottle, Throttle
from .errors import ConfigurationError
from .io.dns import IpFamily, unusable_nameserver
from .io.fallback import DEFAULT_PORTS, Fallback
from .io.kube import EndpointSlices
from .io.refresher import Discovery
from .io.runtime import Runtime, RuntimeSpec, SubsetPlace
from .options import check_option_names
from .telemetry.logs import LogObserver

__all__ = ["Parts", "Settings", "compose"]

log = logging.getLogger("headlesslb.pool")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """:class:`~headlesslb.options.TransportOptions` checked, each with its default: one field
    per option, the same names (what each does is documented there)."""

    port: int | str | None = None
    scheme: Literal["http", "https"] = "http"
    picker: PickerName | PickerFactory = "round_robin"
    sharding: PickerFactory | None = None
    slow_start: SlowStart | None = None
    subset: int | Subset | None = None
    writes_to: int | None = None
    key_from: KeySource | None = None
    fallback: str | None = None
    nameservers: Sequence[str] | None = None
    resolv_conf: str = "/etc/resolv.conf"
    namespace: str | None = None
    cluster_domain: str | None = None
    statefulset: str | None = None
    ip_family: IpFamily = "ipv4"
    refresh: RefreshPolicy | None = None
    outlier: OutlierPolicy | None = None
    health: HealthCheck | None = None
    retry: RetryPolicy | None = None
    throttle: AdaptiveThrottle | None = None
    hedge: HedgePolicy | None = None
    discovery_timeout: float | None = None
    discovery: Discovery | EndpointSlices | Literal["dns", "endpointslices"] | None = None
    share_discovery: bool = True
    pod_transport: Any = None
    verify: ssl.SSLContext | str | bool = True
    cert: Any = None
    limits: Any = None
    http2: bool = False
    clock: Clock = monotonic
    rng: random.Random | None = None
    observers: Sequence[Observer] = ()
    opentelemetry: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scheme, str) or self.scheme not in DEFAULT_PORTS:
            raise ConfigurationError(f"scheme must be 'http' or 'https', not {self.scheme!r}")
        validate.count("writes_to", self.writes_to, max=ORDINAL_MAX, allow_none=True)
        check_source(self.key_from)
        validate.number(
            "discovery_timeout", self.discovery_timeout, min=0, exclusive_min=True, allow_none=True
        )
        families = get_args(IpFamily)
        if self.ip_family not in families:
            raise ConfigurationError(
                f"ip_family must be one of {sorted(families)}, not {self.ip_family!r}"
            )
        for name, value, kind in (
            ("refresh", self.refresh, RefreshPolicy),
            ("outlier", self.outlier, OutlierPolicy),
            ("health", self.health, HealthCheck),
            ("retry", self.retry, RetryPolicy),
            ("throttle", self.throttle, AdaptiveThrottle),
            ("hedge", self.hedge, HedgePolicy),
            ("slow_start", self.slow_start, SlowStart),
            ("rng", self.rng, random.Random),
        ):
            validate.instance(name, value, kind, allow_none=True)
        if self.sharding is not None and not isinstance(self.sharding, PickerFactory):
            raise ConfigurationError(
                f"sharding must be a PickerFactory such as ConsistentHash(), not {self.sharding!r}"
            )
        # The runtime builds its pickers when the client starts: a bad picker fails here.
        make_picker(self.picker, rng=random.Random(0), slow_start=self.slow_start)
        as_subset(self.subset)
        discovery = self.discovery
        if isinstance(discovery, str):
            if discovery not in ("dns", "endpointslices"):
                raise ConfigurationError(
                    "discovery must be 'dns', 'endpointslices', an EndpointSlices(...) or a"
                    f" source with an async resolve() -> Resolution, not {discovery!r}"
                )
        elif (
            discovery is not None
            and not isinstance(discovery, EndpointSlices)
            and not callable(getattr(discovery, "resolve", None))
        ):
            raise ConfigurationError(
                f"discovery must have an async resolve() -> Resolution, not {discovery!r}"
            )
        if not isinstance(self.resolv_conf, str | os.PathLike):
            raise ConfigurationError(f"resolv_conf must be a path, not {self.resolv_conf!r}")
        for name, text in (("namespace", self.namespace), ("cluster_domain", self.cluster_domain)):
            if text is not None and not isinstance(text, str):
                raise ConfigurationError(f"{name} must be a str or None, not {text!r}")
        if self.namespace is not None:
            validate_label("namespace", self.namespace)
        if self.statefulset is not None:
            validate_statefulset("statefulset", self.statefulset)
        if not isinstance(self.verify, ssl.SSLContext | str | bool):
            raise ConfigurationError(
                f"verify must be an ssl.SSLContext, a CA bundle path or a bool, not {self.verify!r}"
            )
        ConnectionLimits.of(self.limits)  # an httpx.Limits or httpx2.Limits, or a typed error
        validate.flag("http2", self.http2)
        if self.http2 and importlib.util.find_spec("h2") is None:
            # httpx refuses this at construction; so do we, rather than at the first request.
            raise ConfigurationError(
                "http2=True needs the h2 package, which is not installed:"
                " pip install 'httpx[http2]'"
            )
        validate.flag("share_discovery", self.share_discovery)
        if not callable(self.clock):
            raise ConfigurationError(
                f"clock must be a callable returning seconds, not {self.clock!r}"
            )
        if self.fallback is not None and not isinstance(self.fallback, str):
            raise ConfigurationError(
                "fallback must be a Service name or an http(s) URL,"
                f" not {type(self.fallback).__name__}"
            )
        observers = self.observers
        if isinstance(observers, str | bytes) or not isinstance(observers, Sequence):
            raise ConfigurationError(
                f"observers must be a sequence of callables, not {observers!r}"
            )
        if self.opentelemetry is not None:
            validate.flag("opentelemetry", self.opentelemetry)


@dataclass(frozen=True, slots=True, eq=False)
class Parts:
    """What one client drives, built from its checked options: the spec it leases its runtime
    by, and what stays its own whichever runtime it gets."""

    spec: RuntimeSpec
    """What the client's runtime is built from: clients with equal specs share one."""
    service: ServiceName
    scheme: str
    port: int | str
    urls: ServiceURLs
    """Which URLs name the Service, and the scheme and port they must use."""
    events: EventHub
    """The client's event stream: logs, metrics, spans and ``observers=`` subscribe to it."""
    fallback: Fallback | None
    retry: RetryPolicy
    budget: RetryBudget
    throttle: Throttle | None
    hedger: Hedger | None
    writes_to: int | None
    key_from: KeySource | None
    """Where a request's key comes from when it has none (``key_from=``)."""
    statefulset: str | None
    rng: random.Random
    clock: Clock
    verify: ssl.SSLContext | str | bool
    cert: Any
    limits: ConnectionLimits | None
    http2: bool
    pod_transport: Any

    def router(self, runtime: Runtime) -> Router:
        """The client's router (its retry budget, throttle, hedging), bound to ``runtime``'s pool
        and balancer: its own runtime's, or one it shares."""
        return Router(
            service=self.service,
            pool=runtime.pool,
            balancer=runtime.balancer,
            retry=self.retry,
            budget=self.budget,
            rng=self.rng,
            port=self.port,
            clock=self.clock,
            writes_to=self.writes_to,
            statefulset=self.statefulset,
            has_fallback=self.fallback is not None,
            fallback_name=None if self.fallback is None else self.fallback.name,
            last_discovery_error=runtime.last_discovery_error,
            throttle=self.throttle,
            events=self.events,
            hedger=self.hedger,
        )

    def checked_pod_transport(self, kind: type) -> Any:
        """``pod_transport`` if it is a ``kind`` (the shell's httpx transport base) or None."""
        transport = self.pod_transport
        if transport is not None and not isinstance(transport, kind):
            library = kind.__module__.partition(".")[0]
            raise ConfigurationError(
                f"pod_transport must be an {library}.{kind.__name__}"
                f" ({library}.MockTransport works), not {type(transport).__name__}"
            )
        return transport


def compose(service: str, options: Mapping[str, Any], *, pool_class: type[Pool] = Pool) -> Parts:
    """Check every option (a typed error naming it) and build the client's parts; ``pool_class``
    lets the sync shell's runtimes use its thread-safe pool."""
    check_option_names(options)
    o = Settings(**options)
    environ = dict(os.environ)  # read once: the variables below, POD_NAMESPACE, the subset's
    env = from_environ(environ)
    resolv = load_resolv_conf(o.resolv_conf)
    # The argument, else its HEADLESSLB_* variable, else what the Pod says (docs/how-to/testing.md).
    namespace = o.namespace or env.namespace or detect_namespace(resolv, environ)
    cluster_domain = o.cluster_domain or env.cluster_domain or resolv.cluster_domain
    name = expand_service_name(service, namespace=namespace, cluster_domain=cluster_domain)
    parsed_port = parse_port(o.port)
    port: int | str = DEFAULT_PORTS[o.scheme] if parsed_port is None else parsed_port
    fallback = o.fallback
    discovery, slices = _discovery(o.discovery, environ)
    # DNS is needed unless discovery is given and the fallback (if any) is a URL.
    needs_dns = (discovery is None and slices is None) or (
        fallback is not None and "://" not in fallback
    )
    servers = _nameservers(o, env, resolv, needs_dns)
    discovery_timeout, dns_tries = dns_timing(
        resolv, discovery_timeout=o.discovery_timeout, servers=len(servers)
    )
    rng = o.rng or random.Random()
    refresh = o.refresh or RefreshPolicy()
    retry = o.retry or RetryPolicy()
    # Bounded unless the user says otherwise (DEFAULT_LIMITS says why); one value for the senders
    # and the runtime's probes, so equal configurations still share a runtime.
    limits = ConnectionLimits.of(o.limits) or DEFAULT_LIMITS
    spec = RuntimeSpec(
        service=name,
        scheme=o.scheme,
        port=port,
        nameservers=servers,
        ip_family=o.ip_family,
        discovery_timeout=discovery_timeout,
        dns_tries=dns_tries,
        statefulset=o.statefulset,
        refresh=refresh,
        outlier=o.outlier or OutlierPolicy(),
        health=o.health,
        subset=_placed(service, o.subset, rng, environ),
        picker=o.picker,
        sharding=o.sharding,
        slow_start=o.slow_start,
        verify=o.verify,
        cert=_hashable(o.cert),
        limits=limits,
        http2=o.http2,
        clock=o.clock,
        pool_class=pool_class,
        discovery=discovery,
        rng=o.rng,
        share=o.share_discovery,
        endpointslices=slices,
    )
    budget = retry.budget(o.clock)
    return Parts(
        spec=spec,
        service=name,
        scheme=o.scheme,
        port=port,
        urls=ServiceURLs(service_hosts(name, namespace), o.scheme, port, spec.base_url),
        events=_event_hub(name.host, o.observers, o.opentelemetry),
        fallback=None
        if fallback is None
        else Fallback(
            fallback,
            scheme=o.scheme,
            namespace=namespace,
            cluster_domain=cluster_domain,
            port=port,
            nameservers=servers,
            ip_family=o.ip_family,
            discovery_timeout=discovery_timeout,
            refresh=refresh,
            clock=o.clock,
            dns_tries=dns_tries,
        ),
        retry=retry,
        budget=budget,
        throttle=None if o.throttle is None else o.throttle.build(o.clock, rng),
        hedger=None if o.hedge is None else Hedger(o.hedge, retry, budget, clock=o.clock),
        writes_to=o.writes_to,
        key_from=o.key_from,
        statefulset=o.statefulset,
        rng=rng,
        clock=o.clock,
        verify=o.verify,
        cert=o.cert,
        limits=limits,
        http2=o.http2,
        pod_transport=o.pod_transport,
    )


def _nameservers(
    o: Settings, env: EnvironSettings, resolv: ResolvConf, needs_dns: bool
) -> tuple[tuple[str, int], ...]:
    """``nameservers=``, else ``HEADLESSLB_NAMESERVERS``, each one this machine can send to;
    else resolv.conf's, without those it cannot (a zone id naming no interface here: skipped,
    logged once), as long as one is left."""
    given = (
        ("nameservers", nameservers_from(o.nameservers))
        if o.nameservers is not None
        else (NAMESERVERS, env.nameservers)
        if env.nameservers is not None
        else None
    )
    if given is not None:
        source, servers = given
        for index, server in enumerate(servers):
            if (why := unusable_nameserver(server)) is not None:
                raise ConfigurationError(f"{source}[{index}]: {why}")
        return servers
    usable = []
    skipped = []
    for server in nameservers_from(resolv.nameservers) if resolv.nameservers else ():
        why = unusable_nameserver(server)
        if why is None:
            usable.append(server)
        else:
            skipped.append(why)
            note_once(f"{o.resolv_conf}: nameserver {why}; skipped")
    if not usable and needs_dns:
        said = f" usable nameserver (skipped {'; '.join(skipped)})" if skipped else " nameserver"
        raise ConfigurationError(
            f"{o.resolv_conf} lists no{said}: pass nameservers=['ip:port', ...]"
            f" or set {NAMESERVERS}",
            argument="nameservers",
        )
    return tuple(usable)


def _discovery(
    given: Discovery | EndpointSlices | str | None, environ: Mapping[str, str]
) -> tuple[Discovery | None, EndpointSlices | None]:
    """``discovery=`` as the runtime spec holds it: a source of the user's own, or the
    EndpointSlice settings with their API filled in (in-cluster: read here, once), or neither
    (DNS)."""
    if given is None or given == "dns":
        return None, None
    if given == "endpointslices":
        return None, EndpointSlices().resolved(environ)
    if isinstance(given, EndpointSlices):
        return None, given.resolved(environ)
    assert not isinstance(given, str)
    return given, None


def _placed(
    service: str, subset: int | Subset | None, rng: random.Random, environ: Mapping[str, str]
) -> SubsetPlace | None:
    """``subset=`` placed for this client: from its identity, else at random (logged)."""
    the_subset = as_subset(subset)
    if the_subset is None:
        return None
    place = the_subset.place(environ, rng)
    log.info(
        "%s: a subset of %d Pods, client placed by %s (%s)",
        service,
        the_subset.size,
        place.mode,
        place.identity,
    )
    return SubsetPlace(the_subset.size, place)


def _hashable(cert: Any) -> Hashable:
    """httpx's ``cert`` as a spec holds it: a list (of paths) as a tuple."""
    return tuple(cert) if isinstance(cert, list) else cert


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
