"""The fallback Service: where requests go when discovery yields nothing usable.

Either a Service name (the ClusterIP/LB twin of the headless Service), expanded like the main name
and resolved through the same nameservers, its address cached for the record's TTL; or a URL.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import httpx

from .clock import Clock
from .dns import DnsDiscovery, IpFamily
from .endpoint import Endpoint
from .errors import ConfigurationError, HeadlessLBError, NoEndpointsAvailable
from .names import expand_service_name

__all__ = ["DEFAULT_PORTS", "Fallback", "authority"]

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
        namespace: str | None,
        cluster_domain: str | None,
        port: int | str,
        default_port: int,
        nameservers: Sequence[tuple[str, int]],
        ip_family: IpFamily,
        discovery_timeout: float,
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._discovery: DnsDiscovery | None = None
        self._cached: tuple[Endpoint, float] | None = None
        self._failed: tuple[HeadlessLBError, float] | None = None
        self._lock = anyio.Lock()
        if "://" in spec:
            url = httpx.URL(spec)
            if url.scheme not in DEFAULT_PORTS or not url.host:
                raise ConfigurationError(f"fallback URL {spec!r} must be http(s)://host[:port]")
            self.host = url.host
            self.port = url.port or DEFAULT_PORTS[url.scheme]
            self.name = spec
        else:
            service = expand_service_name(spec, namespace=namespace, cluster_domain=cluster_domain)
            self._discovery = DnsDiscovery(
                service,
                port=port,
                nameservers=nameservers,
                ip_family=ip_family,
                timeout=discovery_timeout,
            )
            self.host = service.host
            self.port = default_port if isinstance(port, str) else port
            self.name = service.host
        self.host_header = authority(self.host, self.port, default_port).encode("ascii")

    @property
    def cached(self) -> tuple[str, int] | None:
        """The address last resolved (a Service's ClusterIP), if any."""
        return None if self._cached is None else self._cached[0].key

    async def address(self) -> tuple[str, int]:
        """The address to connect to: the Service's ClusterIP (cached for its TTL) or the URL's.

        One lookup at a time, shared by every request that falls back meanwhile; a failed
        lookup is remembered for a second, so a burst of fallbacks with DNS down fails at once
        instead of queueing one timeout after another.
        """
        if self._discovery is None:
            return self.host, self.port
        cached = self._cached
        if cached is None or cached[1] <= self._clock():
            async with self._lock:
                cached = self._cached
                if cached is None or cached[1] <= self._clock():
                    cached = await self._lookup(self._discovery)
        return cached[0].ip, cached[0].port

    async def _lookup(self, discovery: DnsDiscovery) -> tuple[Endpoint, float]:
        failed = self._failed
        if failed is not None and failed[1] > self._clock():
            raise failed[0]
        try:
            resolution = await discovery.resolve()
            if not resolution.endpoints:
                raise NoEndpointsAvailable(f"fallback Service {self.name} has no address in DNS")
        except HeadlessLBError as exc:
            self._failed = (exc, self._clock() + 1.0)
            raise
        self._failed = None
        ttl = max(resolution.ttl, 1.0)
        self._cached = (resolution.endpoints[0], self._clock() + ttl)
        return self._cached
