"""The keyword arguments of the clients, the transports and their request methods, as types.

:class:`TransportOptions` (both transports), :class:`ClientOptions` (both clients: the
transport's and the httpx2 client's own), :class:`RequestArgs` and :class:`BodyRequestArgs` (the
request methods: httpx2's, plus the routing options), and the aliases httpx2 keeps private that
they use. Typed, so a misspelt keyword is a type error; :func:`check_option_names` refuses one at
run time too. What each option does to a client is decided in :mod:`headlesslb.compose`.
"""

# Generated from headlesslb/options.py by tools/unasync.py: edit that file, not this one.

from __future__ import annotations

import difflib
import random
import ssl
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from http.cookiejar import CookieJar
from typing import IO, Any, Literal, TypedDict

import httpx2

from headlesslb.core import validate
from headlesslb.core.clock import Clock
from headlesslb.core.events import Observer
from headlesslb.core.health import HealthCheck
from headlesslb.core.hedge import HedgePolicy
from headlesslb.core.limits import DEFAULT_LIMITS
from headlesslb.core.pickers import PickerName, SlowStart
from headlesslb.core.pickers.base import HashKey, PickerFactory
from headlesslb.core.pool import OutlierPolicy
from headlesslb.core.retry import RetryPolicy
from headlesslb.core.schedule import RefreshPolicy
from headlesslb.core.subset import Subset
from headlesslb.core.throttle import AdaptiveThrottle
from headlesslb.errors import ConfigurationError
from headlesslb.io.dns import IpFamily
from headlesslb.io.kube import EndpointSlices
from headlesslb.io.refresher import Discovery

__all__ = [
    "CLIENT_OPTION_NAMES",
    "DEFAULT_LIMITS",
    "OPTION_NAMES",
    "BodyRequestArgs",
    "ClientOptions",
    "RequestArgs",
    "TransportOptions",
    "check_option_names",
    "client_settings",
]


class TransportOptions(TypedDict, total=False):
    """The keyword arguments of both transports and both clients (defaults in brackets)."""

    port: int | str | None
    """A named port (SRV, per-Pod port and hostname) or a number (A/AAAA) [the scheme's]."""
    scheme: Literal["http", "https"]
    """How Pods are reached; decides TLS, never a URL ["http"]."""
    picker: PickerName | PickerFactory
    """"round_robin", "least_request", "peak_ewma", "weighted_round_robin" (ORCA load
    reports, gRFC A58), "least_loaded" (P2C on in-flight + a reported metric) or a picker
    factory such as ``WeightedRoundRobin(blackout_period=5)`` ["round_robin"]."""
    sharding: PickerFactory | None
    """The picker for ``key=`` requests [``ConsistentHash()``; ``ConsistentHash(
    balance_factor=1.25)`` bounds a hot key's owner's load]."""
    slow_start: SlowStart | None
    """Ramp up Pods that just joined or came back from an ejection, in the named pickers
    [None: off]."""
    subset: int | Subset | None
    """Deterministic subsetting: use only this many Pods, chosen from the client's identity
    (``Subset(10, client=...)``; an int reads POD_NAME / HOSTNAME) so a fleet spreads evenly
    and holds N connections per client, not one per Pod; ``ordinal=`` still reaches any Pod
    (docs/scale.md) [None: every Pod]."""
    writes_to: int | None
    """Send writes to this StatefulSet ordinal [None]."""
    key_from: Callable[[httpx2.Request], HashKey | None] | None
    """Derive a request's sharding key from the request when it has no ``key=``:
    ``KeyFrom.header("x-session-id")``, ``KeyFrom.cookie("sid")``, ``KeyFrom.first(...)`` or a
    function of the request; for SDKs that cannot set extensions. ``ordinal=`` and an explicit
    ``key=`` win over it, and ``writes_to`` over both for writes [None]."""
    fallback: str | None
    """The ClusterIP/LB Service: a name or an ``http(s)://host[:port]`` URL [None]."""
    nameservers: Sequence[str] | None
    """``["ip:port", ...]``, an IPv6 one as ``"[fe80::1%eth0]:53"``; wins over
    ``HEADLESSLB_NAMESERVERS="ip:port,ip:port"``, which wins over resolv.conf [resolv.conf's first
    three, read as glibc reads them]."""
    resolv_conf: str
    """Where the nameservers, the search list (namespace, cluster domain) and the options
    ``timeout:``, ``attempts:`` and ``rotate`` come from (docs: "DNS and resolv.conf")
    ["/etc/resolv.conf"]"""
    namespace: str | None
    """Wins over ``HEADLESSLB_NAMESPACE`` [HEADLESSLB_NAMESPACE, else POD_NAMESPACE, the
    service-account file, else resolv.conf's search list]"""
    cluster_domain: str | None
    """Wins over ``HEADLESSLB_CLUSTER_DOMAIN`` [HEADLESSLB_CLUSTER_DOMAIN, else from resolv.conf,
    else "cluster.local"]"""
    statefulset: str | None
    """The StatefulSet's name, to look Pods up by name when SRV gives no hostnames [inferred]."""
    ip_family: IpFamily
    """"ipv4" (A), "ipv6" (AAAA) or "dual" ["ipv4"]."""
    refresh: RefreshPolicy | None
    outlier: OutlierPolicy | None
    health: HealthCheck | None
    """Active health checks [off]."""
    retry: RetryPolicy | None
    """Retries, hold-offs after 429 / 503 with Retry-After, the budget [RetryPolicy()]."""
    throttle: AdaptiveThrottle | None
    """Client-side adaptive throttling: shed requests locally (``Throttled``) while the Pods
    reject most of them for load [None: off]."""
    hedge: HedgePolicy | None
    """Hedged requests: an idempotent request with no answer after a delay gets a second
    attempt to another Pod, the first answer wins, charged to the retry budget [None: off]."""
    discovery_timeout: float | None
    """Seconds one DNS round may take; given, resolv.conf's ``timeout:`` and ``attempts:`` are
    not used [3.0, or what they need: timeout × attempts × nameservers, plus a second]."""
    discovery: Discovery | EndpointSlices | Literal["dns", "endpointslices"] | None
    """Where Pods come from: DNS (``"dns"`` or None); the Kubernetes API's EndpointSlices
    (``"endpointslices"``: in-cluster, or ``EndpointSlices(...)``: push discovery with
    ready/serving/terminating, docs/endpointslices.md); or a source of your own with an async
    ``resolve()`` (tests, your own service registry) [DNS]."""
    share_discovery: bool
    """Share one runtime (refresh loop, pool, balancer, health checker) with the other clients
    of the same Service and configuration in this process (async: on the same event loop; sync:
    one background thread), so K clients cost the DNS server and the Pods what one does, and
    share DNS answers with those whose configuration differs; never a ``discovery=`` or ``rng=``
    of your own (docs/scale.md) [True]."""
    pod_transport: Any
    """An httpx2 transport that sends each attempt instead of headlesslb's own connection pools
    (``httpx2.MockTransport``, respx): it gets requests for ``http(s)://<pod-ip>:<port>/...``
    with the Host header naming the Service [None]."""
    verify: ssl.SSLContext | str | bool
    """As httpx2's ``verify`` [True]."""
    cert: Any
    """As httpx2's ``cert`` [None]."""
    limits: httpx2.Limits | None
    """Connection limits per Pod [``DEFAULT_LIMITS``: 100 connections, keep-alive 4 s]."""
    http2: bool
    """[False]"""
    clock: Clock
    """The monotonic clock the core reads [time.monotonic]."""
    rng: random.Random | None
    """The random source of the pickers and back-off [a fresh one]."""
    observers: Sequence[Observer]
    """Callables receiving every event (:mod:`headlesslb.core.events`) from the start [()]."""
    opentelemetry: bool | None
    """Spans and metrics through the OpenTelemetry API: None turns them on when
    ``opentelemetry-api`` is installed (a no-op until an SDK is configured), False off, True
    requires it [None]."""


class ClientOptions(TransportOptions, total=False):
    """The keyword arguments of both clients: the transport's, plus the httpx2 client's own."""

    timeout: httpx2.Timeout | float | None
    """httpx2's timeout for each attempt [10.0]."""
    headers: Mapping[str, str] | None
    """Headers sent with every request [None]."""
    follow_redirects: bool
    """[False]; a redirect to the Service goes through the balancer, elsewhere straight."""


# -- request arguments, typed as httpx2 types its own (httpx2 keeps these aliases private) --------
PrimitiveData = str | int | float | bool | None
QueryParamTypes = (
    httpx2.QueryParams
    | Mapping[str, PrimitiveData | Sequence[PrimitiveData]]
    | list[tuple[str, PrimitiveData]]
    | tuple[tuple[str, PrimitiveData], ...]
    | str
    | bytes
)
HeaderTypes = (
    httpx2.Headers
    | Mapping[str, str]
    | Mapping[bytes, bytes]
    | Sequence[tuple[str, str]]
    | Sequence[tuple[bytes, bytes]]
)
CookieTypes = httpx2.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]
TimeoutTypes = (
    float | None | tuple[float | None, float | None, float | None, float | None] | httpx2.Timeout
)
AuthTypes = (
    tuple[str | bytes, str | bytes] | Callable[[httpx2.Request], httpx2.Request] | httpx2.Auth
)
RequestContent = str | bytes | Iterable[bytes] | AsyncIterable[bytes]
FileContent = IO[bytes] | bytes | str
FileTypes = (
    FileContent
    | tuple[str | None, FileContent]
    | tuple[str | None, FileContent, str | None]
    | tuple[str | None, FileContent, str | None, Mapping[str, str]]
)
RequestFiles = Mapping[str, FileTypes] | Sequence[tuple[str, FileTypes]]


class RequestArgs(TypedDict, total=False):
    """The keyword arguments of ``get``, ``head``, ``options`` and ``delete``: httpx2's, plus the
    routing options. Typed, so a misspelt keyword is a type error, as on plain httpx2."""

    key: HashKey | None
    """Shard by this key: the same key goes to the same Pod."""
    ordinal: int | None
    """Pin to this StatefulSet ordinal (no other Pod, no fallback)."""
    idempotent: bool | None
    """Allow retrying a non-idempotent method after it may have reached a Pod."""
    params: QueryParamTypes | None
    headers: HeaderTypes | None
    cookies: CookieTypes | None
    auth: AuthTypes | None
    follow_redirects: bool
    timeout: TimeoutTypes
    extensions: Mapping[str, Any] | None


class BodyRequestArgs(RequestArgs, total=False):
    """The keyword arguments of ``request``, ``stream``, ``post``, ``put`` and ``patch``: those
    of :class:`RequestArgs` and a body, as httpx2's."""

    content: RequestContent | None
    data: Mapping[str, Any] | None
    files: RequestFiles | None
    json: Any


OPTION_NAMES = frozenset(TransportOptions.__annotations__)
"""The keyword arguments a transport takes."""
CLIENT_OPTION_NAMES = frozenset(ClientOptions.__annotations__)
"""The keyword arguments a client takes: the transport's and the httpx2 client's own."""


def client_settings(options: dict[str, Any]) -> dict[str, Any]:
    """Take the httpx2 client's own arguments out of a client's keyword arguments, checked."""
    check_option_names(options, CLIENT_OPTION_NAMES)
    timeout = options.pop("timeout", 10.0)
    headers = options.pop("headers", None)
    follow_redirects = options.pop("follow_redirects", False)
    validate.flag("follow_redirects", follow_redirects)
    if not isinstance(timeout, httpx2.Timeout):
        validate.number("timeout", timeout, min=0, exclusive_min=True, allow_none=True)
    return {"timeout": timeout, "headers": headers, "follow_redirects": follow_redirects}


def check_option_names(options: Mapping[str, object], known: frozenset[str] = OPTION_NAMES) -> None:
    """Refuse an unknown keyword argument (a typo) instead of ignoring it."""
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(f"unknown argument {name!r}{hint}")
