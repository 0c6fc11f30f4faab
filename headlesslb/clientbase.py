"""What both clients and both transports share, and the checks every request naming the Service
goes through.

:class:`ClientBase` builds requests carrying the routing options; :class:`TransportBase` shows
the runtime a transport leased; :func:`service_hosts` lists the spellings of the Service's name
a URL may use, and :func:`check_url` refuses a URL that names the Service with another scheme or
port than the client's (:class:`ServiceURLs` holds what it checks against), before a byte leaves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .core import validate
from .core.balancer import Balancer
from .core.endpoint import EndpointStatus
from .core.names import ServiceName
from .core.options import EXTENSION, merged
from .core.pickers.base import HashKey
from .core.pool import Pool
from .errors import ClientClosed, HeadlessLBError, InvalidRequest, NotStarted
from .io.health import HealthChecker
from .io.refresher import Refresher
from .io.runtime import Runtime

__all__ = ["ClientBase", "ServiceURLs", "TransportBase", "check_url", "service_hosts"]


@dataclass(frozen=True, slots=True)
class ServiceURLs:
    """Which URLs name the Service, and what such a URL must say: the client decides the scheme
    (TLS or not) and the port, never the URL."""

    hosts: frozenset[bytes]
    """Every spelling of the Service's name a URL may use (:func:`service_hosts`)."""
    scheme: str
    port: int | str
    """The client's port: a number, or a named port SRV gives per Pod."""
    base: str
    """``scheme://host[:port]`` naming the Service: the client's base URL (no trailing slash)."""
    url_port: int | None = field(init=False)
    """The only explicit port a URL naming the Service may give (None: none). Made once: every
    request giving a port is checked against it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "url_port", self.port if isinstance(self.port, int) else None)


def service_hosts(service: ServiceName, own_namespace: str | None) -> frozenset[bytes]:
    """Every spelling of the Service's name a URL may use: web-hl, web-hl.ns, ..., the FQDN with
    or without its trailing dot.

    The bare ``web-hl`` counts only in the client's own namespace, where DNS would resolve it.
    """
    labels = service.host.split(".")
    names = {service.host, service.fqdn}
    if service.namespace is not None:
        names.update(".".join(labels[:n]) for n in (2, 3))
        if service.namespace == own_namespace:
            names.add(labels[0])
    return frozenset(name.encode("ascii") for name in names)


def check_url(urls: ServiceURLs, request: Any) -> None:
    """Refuse a URL that names the Service with another scheme or port than the client's
    (``request``: an httpx or httpx2 request)."""
    url = request.url
    if url.scheme != urls.scheme:
        raise InvalidRequest(
            f"{url.scheme}://{url.host} names the Service, but this client talks to it over"
            f" {urls.scheme} (scheme={urls.scheme!r}): the client's configuration decides TLS,"
            " never the URL; nothing was sent",
            request=request,
        )
    port = url.port
    if port is not None and port != urls.url_port:
        expected = (
            f"its port {urls.url_port}"
            if urls.url_port is not None
            else f"no port (the named port {urls.port!r} comes from SRV per Pod)"
        )
        raise InvalidRequest(
            f"{url.host}:{port} names the Service with another port: give {expected};"
            " nothing was sent",
            request=request,
        )


class ClientBase:
    """What both clients share: building requests that carry routing options, the endpoints."""

    http: Any
    """The httpx client (``httpx.Client`` or ``httpx.AsyncClient``, or httpx2's) that sends
    through us."""
    transport: Any
    base_url: Any
    parts_base: str
    """``scheme://host[:port]`` of the Service, no trailing slash (the base URL's text)."""

    def endpoints(self) -> list[EndpointStatus]:
        """The Pods discovered now, with their health and load."""
        result: list[EndpointStatus] = self.transport.endpoints()
        return result

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} {self.transport!r}>"

    def _closed_meanwhile(self, error: RuntimeError) -> None:
        """Raise :class:`ClientClosed` for httpx's plain ``RuntimeError`` ("the client has been
        closed") when ``close()`` won a race with this request after its open check; return
        (for the caller to re-raise ``error``) in every other case."""
        if getattr(self, "_state", None) == "closed" and not isinstance(error, HeadlessLBError):
            raise ClientClosed(
                "the client was closed while this request was being sent: nothing was sent"
            ) from error

    def build_request(
        self,
        method: str,
        url: Any,
        *,
        key: HashKey | None = None,
        ordinal: int | None = None,
        idempotent: bool | None = None,
        read_body: bool = False,
        **kwargs: Any,
    ) -> Any:
        """A request of the client's library carrying the routing options (see
        ``RequestOptions``).

        Options may also come in ``extensions={"headlesslb": {...}}``; keyword arguments win.
        """
        extensions = kwargs.get("extensions") or {}
        options = merged(
            extensions.get(EXTENSION),
            key=key,
            ordinal=ordinal,
            idempotent=idempotent,
            read_body=read_body,
        )
        if options is not None:
            kwargs["extensions"] = {**extensions, EXTENSION: options}
        if isinstance(url, str) and url[:1] == "/" and url[1:2] != "/":
            # The Service's base URL has no path: joining the text here parses the URL once,
            # where httpx's own merge onto base_url parses it twice (about 30 µs a request).
            url = type(self.base_url)(self.parts_base + url)  # the library's own URL class
        return self.http.build_request(method, url, **kwargs)


class TransportBase:
    """What every transport shares: the runtime it leases when it starts (its own, or one it
    shares), and what it shows."""

    _host: Any
    """The transport's lifecycle (:class:`~headlesslb.aio.host.AsyncHost` or its twin)."""
    parts: Any
    """The client's own parts (:class:`headlesslb.compose.Parts`)."""

    def __repr__(self) -> str:
        runtime = self._host.runtime
        pods = "" if runtime is None else f", {len(runtime.pool.snapshot.members)} Pods"
        name = f"{type(self).__module__}.{type(self).__name__}"
        return f"<{name} {self.parts.urls.base} {self._host.state}{pods}>"

    def _ready_timeout(self, timeout: float | None) -> float:
        """``wait_ready``'s ``timeout``, checked (None: ``first_resolution_timeout``)."""
        if timeout is None:
            return float(self.parts.spec.refresh.first_resolution_timeout)
        return validate.number("timeout", timeout, min=0)

    @property
    def runtime(self) -> Runtime:
        """The runtime this transport leased when it started (kept after close)."""
        runtime: Runtime | None = self._host.runtime
        if runtime is None:
            raise NotStarted("the transport leases its runtime when it starts")
        return runtime

    @property
    def pool(self) -> Pool:
        """The runtime's pool (diagnostics and tests)."""
        return self.runtime.pool

    @property
    def balancer(self) -> Balancer:
        """The runtime's balancer (diagnostics and tests)."""
        return self.runtime.balancer

    @property
    def refresher(self) -> Refresher:
        """The runtime's discovery loop (diagnostics and tests)."""
        return self.runtime.refresher

    @property
    def health(self) -> HealthChecker | None:
        """The runtime's health checker, if health checks are on."""
        return self.runtime.health

    def endpoints(self) -> list[EndpointStatus]:
        """The Pods discovered now, with health and load (none before the transport starts)."""
        runtime: Runtime | None = self._host.runtime
        return [] if runtime is None else runtime.pool.statuses()
