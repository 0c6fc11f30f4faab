"""The endpoint model: one Pod address, as discovery sees it and as users inspect it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .orca import LoadReport

__all__ = ["Endpoint", "EndpointStatus", "Resolution", "zone_shares"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One Pod address. Identity is ``(ip, port)``; hostname and ordinal are what SRV told us."""

    ip: str
    port: int
    hostname: str | None = None
    """The Pod's hostname (``web-3``) when a SRV target named it, else ``None``."""
    ordinal: int | None = None
    """The StatefulSet ordinal (``3`` for ``web-3``) when the hostname carries one."""
    terminating: bool = False
    """The Pod is shutting down but still serving (an EndpointSlice's ``serving`` and
    ``terminating`` conditions): it drains, taking no new requests while in-flight ones finish.
    DNS never says this (a terminating Pod just leaves DNS)."""
    zone: str | None = None
    """The Pod's zone (an EndpointSlice's ``zone``), else None (DNS never says it)."""
    for_zones: tuple[str, ...] = ()
    """Topology hints: the zones an EndpointSlice's ``hints.forZones`` say should use the Pod."""
    authority: str = field(init=False, repr=False, compare=False)
    """``ip:port`` as it goes in a URL (IPv6 in brackets). Made once: every request's report
    and attempt record name it."""

    def __post_init__(self) -> None:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        object.__setattr__(self, "authority", f"{host}:{self.port}")

    @property
    def key(self) -> tuple[str, int]:
        """The identity the pool keys stats by: stats survive refreshes that keep it."""
        return (self.ip, self.port)

    def __str__(self) -> str:
        name = f"{self.hostname} " if self.hostname else ""
        return f"{name}{self.authority}"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The result of one discovery round: the endpoints and how long DNS said they stay valid."""

    endpoints: tuple[Endpoint, ...]
    ttl: float
    """Seconds, the smallest TTL of the records used (0 when DNS gave no records)."""
    partial: bool = False
    """Some of the round's queries failed (e.g. AAAA SERVFAIL in dual stack): ``endpoints`` are
    what the others gave, and the refresher asks again sooner than the TTL."""
    nxdomain: bool = False
    """DNS said the name does not exist (NXDOMAIN), rather than giving an empty answer (the name
    exists, with no record of the type asked): ``endpoints`` is empty either way. Kubernetes DNS
    says NXDOMAIN of a missing Service and of a headless Service with no ready Pod alike."""
    zone_sizes: tuple[tuple[str, int], ...] = ()
    """Pods per zone that discovery lists, ready or not (terminating ones left out), sorted by
    zone: what zone-aware picking weighs a zone's healthy Pods against (EndpointSlices only;
    empty: the members' zones are used)."""


NXDOMAIN_WORDS = "no such Service, or none of its Pods is ready (NXDOMAIN)"
"""What an NXDOMAIN answer means, in the errors' and logs' words."""
EMPTY_WORDS = "DNS answered with no Pod address (empty answer)"
"""What an empty answer means, in the errors' and logs' words."""


def in_dns(members: int, nxdomain: bool) -> str:
    """How many Pods DNS gave, saying NXDOMAIN or an empty answer when it gave none."""
    if members:
        return f"{members} in DNS"
    if nxdomain:
        return "0 in DNS, NXDOMAIN: no such Service, or none of its Pods is ready"
    return "0 in DNS, an empty answer"


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """A point-in-time view of one endpoint for users (``client.endpoints()``)."""

    ip: str
    port: int
    hostname: str | None
    ordinal: int | None
    healthy: bool
    """False while ejected by outlier detection or failing active health checks."""
    draining: bool
    """True once discovery dropped the endpoint, or while it is terminating: no new requests,
    in-flight ones complete."""
    in_flight: int
    requests: int
    failures: int
    ewma_latency: float | None
    """Peak-sensitive moving average of latency (to response headers) in seconds, ``None``
    before the first response."""
    ejection_remaining: float | None
    """Seconds until the ejection by outlier detection ends, counted from the ``endpoints()``
    call; ``None`` if not ejected. Seconds, not a time: it reads the same in a log or JSON as
    in the process (the pool runs on the monotonic clock, whose times mean nothing elsewhere)."""
    hold_off_remaining: float | None = None
    """Seconds until a hold-off after a rejection (429, 503 with Retry-After) ends, counted
    from the ``endpoints()`` call; ``None`` if not held off."""
    terminating: bool = False
    """The EndpointSlice says the Pod is terminating (and still serving): it drains."""
    zone: str | None = None
    """The Pod's zone, from its EndpointSlice (None with DNS discovery)."""
    load: LoadReport | None = None
    """The latest load report the Pod sent (ORCA ``endpoint-load-metrics``), when the picker
    reads reports; None otherwise, or before the first."""
    load_age: float | None = None
    """Seconds since :attr:`load` came, counted from the ``endpoints()`` call (pickers stop
    using a report past their age limit); None without one."""


def zone_shares(statuses: Iterable[EndpointStatus]) -> dict[str | None, float]:
    """Each zone's share (0 to 1) of the requests the endpoints got, from ``client.endpoints()``
    (None: Pods whose zone is not known, e.g. every Pod with DNS discovery); empty before any
    request."""
    counts: dict[str | None, int] = {}
    for status in statuses:
        counts[status.zone] = counts.get(status.zone, 0) + status.requests
    total = sum(counts.values())
    return {zone: n / total for zone, n in sorted(counts.items(), key=str)} if total else {}
