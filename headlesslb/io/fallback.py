"""The fallback Service: where requests go when discovery yields nothing usable.

Either a Service name (the ClusterIP/LB twin of the headless Service), expanded like the main name,
resolved through the same nameservers and reached with the client's scheme; or a URL
``http(s)://host[:port]``, whose scheme decides TLS for the fallback exactly as the client's
scheme does for the Pods. The resolved address is cached under the client's refresh policy
(:class:`~headlesslb.io.cache.LookupCache`) and forgotten when a connection to it is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from ..core.clock import Clock
from ..core.endpoint import Endpoint
from ..core.names import expand_service_name
from ..core.pool import Outcome
from ..core.resolv import DnsTries
from ..core.schedule import RefreshPolicy
from ..errors import ConfigurationError, NoEndpointsAvailable
from .cache import LookupCache
from .dns import DnsDiscovery, IpFamily
from .outcomes import classify

__all__ = ["DEFAULT_PORTS", "Fallback", "authority", "parse_url"]

DEFAULT_PORTS = {"http": 80, "https": 443}


def authority(host: str, port: int, default_port: int) -> str:
    """``host`` or ``host:port`` as a URL and Host header spell it (no default port)."""
    return host if port == default_port else f"{host}:{port}"


class Fallback:
    """Where requests go when discovery yields nothing usable: a Service name or a URL."""

    def __init__(
        self,
        spec: str,
        *,
        scheme: str,
        namespace: str | None,
        cluster_domain: str | None,
        port: int | str,
        nameservers: Sequence[tuple[str, int]],
        ip_family: IpFamily,
        discovery_timeout: float,
        refresh: RefreshPolicy,
        clock: Clock,
        dns_tries: DnsTries | None = None,
    ) -> None:
        if not isinstance(spec, str):
            raise ConfigurationError(
                f"fallback must be a Service name or an http(s) URL, not {type(spec).__name__}"
            )
        self._discovery: DnsDiscovery | None = None
        self._cache: LookupCache[None, Endpoint] = LookupCache(refresh, clock, max_entries=1)
        if "://" in spec:
            self.scheme, self.host, self.port = parse_url(spec)
            self.name = spec
        else:
            service = expand_service_name(spec, namespace=namespace, cluster_domain=cluster_domain)
            self._discovery = DnsDiscovery(
                service,
                port=port,
                nameservers=nameservers,
                ip_family=ip_family,
                timeout=discovery_timeout,
                tries=dns_tries,
            )
            self.scheme = scheme
            self.host = service.host
            self.port = DEFAULT_PORTS[scheme] if isinstance(port, str) else port
            self.name = service.host
        self.raw_scheme = self.scheme.encode("ascii")
        self.sni = self.host if self.scheme == "https" else None
        """The name TLS verifies for the fallback (https only)."""
        self.host_header = authority(self.host, self.port, DEFAULT_PORTS[self.scheme]).encode(
            "ascii"
        )

    def headers_for(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A request's raw ``headers`` with the Host header naming the fallback Service."""
        host = self.host_header
        return [(name, host if name.lower() == b"host" else value) for name, value in headers]

    @property
    def cached(self) -> tuple[str, int] | None:
        """The address last resolved (a Service's ClusterIP), if any."""
        endpoint = self._cache.peek(None)
        return None if endpoint is None else endpoint.key

    def failed(self, error: Exception) -> None:
        """Sending to the fallback failed: a refused connection means the address it had
        resolved is gone, so the next request looks it up again."""
        if classify(error).outcome is Outcome.REFUSED:
            self.invalidate()

    def invalidate(self) -> None:
        """Forget the resolved address (a connection to it was refused)."""
        self._cache.invalidate(None)

    async def address(self) -> tuple[str, int]:
        """The address to connect to: the Service's ClusterIP (cached) or the URL's host.

        One lookup at a time, shared by every request that falls back meanwhile; a failed
        lookup is remembered for a second, so a burst of fallbacks with DNS down fails at once
        instead of queueing one timeout after another.
        """
        discovery = self._discovery
        if discovery is None:
            return self.host, self.port

        async def lookup() -> tuple[Endpoint | None, float]:
            resolution = await discovery.resolve()
            if not resolution.endpoints:
                raise NoEndpointsAvailable(f"fallback Service {self.name} has no address in DNS")
            return resolution.endpoints[0], resolution.ttl

        endpoint = await self._cache.get(None, lookup)
        assert endpoint is not None  # a lookup that finds nothing raises
        return endpoint.ip, endpoint.port


def parse_url(spec: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a fallback URL; anything it would have to drop is refused."""
    try:
        url = httpx.URL(spec)
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"fallback URL {spec!r} is not a URL: {exc}") from None
    if url.scheme not in DEFAULT_PORTS or not url.host:
        raise ConfigurationError(f"fallback URL {spec!r} must be http(s)://host[:port]")
    extra = [
        what
        for what, present in (
            ("a user or password", bool(url.userinfo)),
            ("a path", url.path not in ("", "/")),
            ("a query", bool(url.query)),
            ("a fragment", bool(url.fragment)),
        )
        if present
    ]
    if extra:
        raise ConfigurationError(
            f"fallback URL {spec!r} has {' and '.join(extra)}, which a fallback cannot use:"
            " requests keep their own path; give http(s)://host[:port] only"
        )
    return url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme]
