"""``StaticDiscovery``: a scriptable discovery source for tests that need no DNS at all.

Pass it as ``discovery=`` to any client or transport, with ``pod_transport=httpx.MockTransport``
to mock the Pods themselves, and nothing opens a socket::

    discovery = StaticDiscovery(["web-0=10.0.0.1:8080", "web-1=10.0.0.2:8080"])
    async with HeadlessClient("web-hl.default", discovery=discovery,
                              pod_transport=httpx.MockTransport(handler)) as client:
        ...
        discovery.set(["web-0=10.0.0.1:8080"])          # scale down
        await client.transport.refresher.refresh()      # picked up now, not at the next TTL

``nameservers`` is not needed when ``discovery=`` is given (unless ``fallback=`` is a Service name
rather than a URL, which DNS has to resolve).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import anyio.lowlevel

from ..core.endpoint import Endpoint, Resolution
from ..core.names import split_ordinal
from ..errors import DiscoveryError, copy_error

__all__ = ["EndpointSpec", "StaticDiscovery", "parse_endpoint"]

EndpointSpec = Endpoint | str
"""An :class:`~headlesslb.Endpoint`, or text: ``"ip:port"``, ``"[v6]:port"``, or either with the
Pod's hostname before an ``=`` (``"web-0=10.0.0.1:8080"``; a ``<name>-<n>`` hostname gives the
ordinal ``n``). Without a port (``"10.0.0.1"``), the ``port=`` of :class:`StaticDiscovery`
applies."""


def parse_endpoint(spec: EndpointSpec, *, port: int | None = None) -> Endpoint:
    """An :class:`Endpoint` from an :data:`EndpointSpec` (``Endpoint`` objects pass unchanged).

    Raises ``ValueError`` naming the spec when the address, the port or the hostname is bad.
    """
    if isinstance(spec, Endpoint):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an endpoint is an Endpoint or 'ip:port' text, not {spec!r}")
    hostname, sep, address = spec.strip().rpartition("=")
    if sep and not hostname:
        raise ValueError(f"{spec!r}: empty hostname before '='")
    host, the_port = _split_address(address, spec, port)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{spec!r}: {host!r} is not an IP address") from None
    if not 0 < the_port < 65536:
        raise ValueError(f"{spec!r}: port {the_port} is not in 1-65535")
    if not hostname:
        return Endpoint(str(ip), the_port)
    hostname = hostname.lower()
    parsed = split_ordinal(hostname)
    return Endpoint(str(ip), the_port, hostname, None if parsed is None else parsed[1])


def _split_address(address: str, spec: str, port: int | None) -> tuple[str, int]:
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep:
            raise ValueError(f"{spec!r}: unclosed '[' in an IPv6 address")
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise ValueError(f"{spec!r}: expected ':port' after ']'")
    elif address.count(":") == 1:
        host, _, port_text = address.partition(":")
    else:
        host, port_text = address, None  # a bare IPv4 or IPv6 address
    if port_text is None:
        if port is None:
            raise ValueError(f"{spec!r} gives no port: write 'ip:port' or pass port=")
        return host, port
    if not port_text.isdigit():
        raise ValueError(f"{spec!r}: port {port_text!r} is not a number")
    return host, int(port_text)


class StaticDiscovery:
    """Discovery from a list you control: scale with :meth:`set`, break DNS with :meth:`fail`.

    ``endpoints`` are :data:`EndpointSpec` items; ``ttl`` is the TTL every answer carries (the
    refresher asks again about that often; call ``client.transport.refresher.refresh()`` to
    apply a change at once). ``hide_hostnames=True`` answers :meth:`resolve` without Pod
    hostnames, as SRV does for a numeric port or an answer too big to carry them, while
    :meth:`resolve_name` still finds each Pod by its own name (``ordinal=`` then looks Pods up,
    given ``statefulset=``).
    """

    def __init__(
        self,
        endpoints: Iterable[EndpointSpec] = (),
        *,
        ttl: float = 30.0,
        port: int | None = None,
        hide_hostnames: bool = False,
    ) -> None:
        self.port = port
        """The port of endpoint texts that give none."""
        self.hide_hostnames = hide_hostnames
        """Answer :meth:`resolve` without hostnames (``resolve_name`` still knows them)."""
        self.ttl = _ttl(ttl)
        """The TTL of every answer, seconds."""
        self.rounds = 0
        """Calls of :meth:`resolve` so far, failed ones included."""
        self.lookups: list[str] = []
        """The names :meth:`resolve_name` was asked for, in order."""
        self.error: DiscoveryError | None = None
        """What the next rounds raise (see :meth:`fail`); ``None``: they answer."""
        self._endpoints: tuple[Endpoint, ...] = ()
        self.set(endpoints)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints the next round answers, sorted by (ip, port)."""
        return self._endpoints

    def set(self, endpoints: Iterable[EndpointSpec], *, ttl: float | None = None) -> None:
        """Replace the endpoints (and the TTL, if given) from the next round on."""
        if isinstance(endpoints, str | Endpoint):
            endpoints = [endpoints]  # one endpoint, not the characters of its text
        parsed = {}
        for spec in endpoints:
            endpoint = parse_endpoint(spec, port=self.port)
            parsed[endpoint.key] = endpoint  # the same ip:port twice is one endpoint, as in DNS
        self._endpoints = tuple(sorted(parsed.values(), key=lambda e: e.key))
        if ttl is not None:
            self.ttl = _ttl(ttl)

    def fail(self, error: Exception | None) -> None:
        """Make the next rounds (and name lookups) raise ``error`` as a
        :class:`~headlesslb.errors.DiscoveryError` (another exception becomes its cause), as a
        DNS server that times out or answers SERVFAIL would; ``None`` makes them answer again."""
        if error is None or isinstance(error, DiscoveryError):
            self.error = error
            return
        wrapped = DiscoveryError(f"{type(error).__name__}: {error}")
        wrapped.__cause__ = error
        self.error = wrapped

    async def resolve(self) -> Resolution:
        """One discovery round: the endpoints, or the error :meth:`fail` set."""
        await anyio.lowlevel.checkpoint()
        self.rounds += 1
        self._raise_if_failing()
        endpoints = self._endpoints
        if self.hide_hostnames:
            endpoints = tuple(Endpoint(e.ip, e.port) for e in endpoints)
        return Resolution(endpoints, self.ttl)

    async def resolve_name(self, name: str, port: int) -> Resolution:
        """A Pod by its own DNS name (``web-1.<service fqdn>``): the addresses of the endpoints
        whose hostname is the name's first label, on ``port``; none (NXDOMAIN) if no such Pod."""
        await anyio.lowlevel.checkpoint()
        self.lookups.append(name)
        self._raise_if_failing()
        hostname = name.rstrip(".").split(".", 1)[0].lower()
        found = tuple(Endpoint(e.ip, port) for e in self._endpoints if e.hostname == hostname)
        return Resolution(found, self.ttl)

    def _raise_if_failing(self) -> None:
        error = self.error
        if error is not None:
            copy = copy_error(error)  # a new exception each time: see copy_error
            copy.__cause__ = error.__cause__
            raise copy

    def __repr__(self) -> str:
        return f"StaticDiscovery({[str(e) for e in self._endpoints]!r}, ttl={self.ttl:g})"


def _ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 0:
        raise ValueError(f"ttl must be a number of seconds >= 0, not {ttl!r}")
    return float(ttl)
