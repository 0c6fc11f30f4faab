"""EndpointSlices read as endpoints: pure, untrusted input in, typed records out.

The Kubernetes API hands :mod:`headlesslb.io.kube` decoded JSON; everything in it is untrusted,
as DNS answers are. :func:`read_slice` turns one ``discovery.k8s.io/v1`` EndpointSlice into a
:class:`SliceEndpoints` (what it contributes, and why it skipped what it skipped), and
:class:`SliceSet` keeps every slice of one Service, as list and watch events change them, and
gives their union as the pool's endpoints.

Which endpoints get requests. A Pod is *ready* when its ``serving`` condition says so, else
(no ``serving``) its ``ready`` condition, nil meaning ready: ``serving`` is the Pod's own
readiness, while ``ready`` is true of every Pod of a Service with ``publishNotReadyAddresses``
(the API's documentation of ``ready`` says that flag overrides it).

- ready and not ``terminating``: new requests.
- ``serving`` and ``terminating``: a member that drains (:attr:`Endpoint.terminating`): no new
  request, in-flight ones finish.
- not ``serving`` and ``terminating``: left out (the Pod stops serving; the pool drains what it
  had in flight, as for a Pod that left).
- not ready and not terminating: left out, unless ``include_not_ready`` (peers of a
  ``publishNotReadyAddresses`` Service that must reach Pods before they are ready).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .endpoint import Endpoint
from .names import assign_ordinals, is_dns_label

__all__ = [
    "MAX_ENDPOINTS_PER_SLICE",
    "MAX_SLICES",
    "SliceEndpoints",
    "SliceSet",
    "read_slice",
    "unusable_address",
]

MAX_ENDPOINTS_PER_SLICE = 1000
"""The API's own limit on ``endpoints[]`` (and on ``addresses``' slices): a slice with more is
malformed, and reading it would cost without bound."""
MAX_SLICES = 1000
"""Slices kept for one Service: 1,000 slices of up to 100 endpoints (the controller's default)
is 100,000 Pods, far above what one client balances over; beyond it a list or watch is refused
as hostile, and the last good state stays."""
MAX_ZONE_LENGTH = 253
"""A zone is a label value or a domain-like name; longer is no zone."""

Family = Literal["ipv4", "ipv6", "dual"]
_ADDRESS_TYPES: Mapping[Family, frozenset[str]] = {
    "ipv4": frozenset({"IPv4"}),
    "ipv6": frozenset({"IPv6"}),
    "dual": frozenset({"IPv4", "IPv6"}),
}
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


@dataclass(frozen=True, slots=True)
class SliceEndpoints:
    """What one EndpointSlice contributes: its name and resourceVersion, the endpoints read from
    it (ordinals not yet assigned: that needs every slice), and what was skipped, and why."""

    name: str
    resource_version: str
    endpoints: tuple[Endpoint, ...]
    skipped: tuple[str, ...] = ()
    """One phrase per endpoint (or port) left out, for one log line per slice change."""
    zone_sizes: tuple[tuple[str, int], ...] = ()
    """Endpoints per zone, ready or not, terminating ones left out (zone-aware picking's idea
    of each zone's size: a Pod that turns not ready is capacity the zone lost)."""


def unusable_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why no Pod can have ``ip``, or None (loopback is fine: the local cluster uses it)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "IPv4-mapped IPv6"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified (0.0.0.0/8, ::)"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved:
        return "reserved (240.0.0.0/4, incl. broadcast)"
    if ip.is_link_local:
        return "link-local"
    return None


def read_slice(
    obj: object, *, port: int | str, ip_family: Family = "ipv4", include_not_ready: bool = False
) -> SliceEndpoints | str:
    """One EndpointSlice object (decoded JSON) read as endpoints on ``port`` (a number: the Pods'
    port, as with DNS A records; a name: the slice's port of that name); a phrase saying why the
    whole object is unusable instead (then the caller keeps what it had)."""
    if not isinstance(obj, dict):
        return f"not an object ({type(obj).__name__})"
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "no metadata"
    name = meta.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_ZONE_LENGTH:
        return "no usable metadata.name"
    version = meta.get("resourceVersion")
    version = version if isinstance(version, str) and len(version) <= 64 else ""
    address_type = obj.get("addressType")
    if not isinstance(address_type, str):
        return f"{name}: no addressType"
    if address_type not in _ADDRESS_TYPES[ip_family]:
        # FQDN slices, or the other family: nothing for this client, and no error.
        return SliceEndpoints(name, version, ())
    raw = obj.get("endpoints")
    if raw is None:
        raw = []  # an empty slice leaves endpoints out altogether
    if not isinstance(raw, list):
        return f"{name}: endpoints is not a list"
    if len(raw) > MAX_ENDPOINTS_PER_SLICE:
        return f"{name}: {len(raw)} endpoints, more than the API allows ({MAX_ENDPOINTS_PER_SLICE})"
    skipped: list[str] = []
    number = _port_number(obj.get("ports"), port, skipped)
    if number is None:
        return SliceEndpoints(name, version, (), tuple(skipped))
    found = []
    sizes: dict[str, int] = {}
    for index, item in enumerate(raw):
        endpoint = _read_endpoint(item, number, include_not_ready, skipped, index, sizes)
        if endpoint is not None:
            found.append(endpoint)
    return SliceEndpoints(name, version, tuple(found), tuple(skipped), tuple(sorted(sizes.items())))


def _port_number(ports: object, port: int | str, skipped: list[str]) -> int | None:
    if isinstance(port, int):
        return port
    if not isinstance(ports, list):
        skipped.append(f"no ports list, so no port named {port!r}")
        return None
    for item in ports[:MAX_ENDPOINTS_PER_SLICE]:
        if isinstance(item, dict) and item.get("name") == port:
            number = item.get("port")
            protocol = item.get("protocol", "TCP")
            if protocol != "TCP":
                skipped.append(f"port {port!r} is {protocol!r}, not TCP")
                return None
            if isinstance(number, int) and not isinstance(number, bool) and 0 < number < 65536:
                return number
            skipped.append(f"port {port!r} has no usable number ({number!r})")
            return None
    skipped.append(f"no port named {port!r}")
    return None


def _condition(conditions: dict[str, Any], key: str, default: bool) -> bool:
    value = conditions.get(key)
    return value if isinstance(value, bool) else default


def _read_endpoint(
    item: object,
    port: int,
    include_not_ready: bool,
    skipped: list[str],
    index: int,
    sizes: dict[str, int],
) -> Endpoint | None:
    if not isinstance(item, dict):
        skipped.append(f"endpoints[{index}] is not an object")
        return None
    addresses = item.get("addresses")
    if not isinstance(addresses, list) or not addresses or not isinstance(addresses[0], str):
        skipped.append(f"endpoints[{index}] has no address")
        return None
    text = addresses[0]  # consumers use the first (the API says all are fungible)
    try:
        ip = ipaddress.ip_address(text[:64])
    except ValueError:
        skipped.append(f"endpoints[{index}]: {text[:64]!r} is not an IP address")
        return None
    why = unusable_address(ip)
    if why is not None:
        skipped.append(f"{ip}: {why}, no Pod has such an address")
        return None
    raw_conditions = item.get("conditions")
    conditions = raw_conditions if isinstance(raw_conditions, dict) else {}
    # nil conditions: ready and serving are "unknown, read as ready", terminating as false.
    # serving is the Pod's readiness; ready may be forced true (publishNotReadyAddresses).
    serving = _condition(conditions, "serving", _condition(conditions, "ready", True))
    terminating = _condition(conditions, "terminating", False)
    zone = item.get("zone")
    if not isinstance(zone, str) or not zone or len(zone) > MAX_ZONE_LENGTH:
        zone = None
    if zone is not None and not terminating:
        sizes[zone] = sizes.get(zone, 0) + 1
    if terminating and not serving:
        return None
    if not terminating and not serving and not include_not_ready:
        return None
    hostname = _hostname(item)
    return Endpoint(
        str(ip),
        port,
        hostname,
        terminating=terminating,
        zone=zone,
        for_zones=_for_zones(item.get("hints")),
    )


def _hostname(item: dict[str, Any]) -> str | None:
    """The Pod's hostname (``web-3``): the endpoint's ``hostname``, else its Pod's name from
    ``targetRef`` (a StatefulSet Pod's name is its hostname); None unless a DNS label."""
    hostname = item.get("hostname")
    if not isinstance(hostname, str):
        ref = item.get("targetRef")
        if isinstance(ref, dict) and ref.get("kind", "Pod") == "Pod":
            hostname = ref.get("name")
    if isinstance(hostname, str) and len(hostname) <= 63 and is_dns_label(hostname.lower()):
        return hostname.lower()
    return None


def _for_zones(hints: object) -> tuple[str, ...]:
    if not isinstance(hints, dict):
        return ()
    zones = hints.get("forZones")
    if not isinstance(zones, list):
        return ()
    names = []
    for zone in zones[:8]:  # the API allows 8
        name = zone.get("name") if isinstance(zone, dict) else None
        if isinstance(name, str) and name and len(name) <= MAX_ZONE_LENGTH:
            names.append(name)
    return tuple(names)


class SliceSet:
    """Every EndpointSlice of one Service, as list and watch events leave them; their union is
    the pool's endpoints (more than 100 Pods means more than one slice: using the last one
    alone is a known bug of other clients)."""

    def __init__(self, statefulset: str | None = None) -> None:
        self.statefulset = statefulset
        """Whose ordinals to read from hostnames (None: inferred, as with DNS)."""
        self._slices: dict[str, SliceEndpoints] = {}
        self._union: tuple[Endpoint, ...] | None = ()

    def __len__(self) -> int:
        return len(self._slices)

    @property
    def names(self) -> frozenset[str]:
        """The slices held."""
        return frozenset(self._slices)

    def get(self, name: str) -> SliceEndpoints | None:
        """The slice of that name, as last read; None if not held."""
        return self._slices.get(name)

    def replace(self, slices: Iterable[SliceEndpoints]) -> None:
        """Hold exactly ``slices`` (a list, or a relist after 410)."""
        fresh = {s.name: s for s in slices}
        if fresh != self._slices:
            self._slices = fresh
            self._union = None

    def put(self, read: SliceEndpoints) -> bool:
        """A slice added or changed; returns whether the union may have changed."""
        old = self._slices.get(read.name)
        if old is not None and (old.endpoints, old.zone_sizes) == (read.endpoints, read.zone_sizes):
            self._slices[read.name] = read  # a new resourceVersion, the same endpoints
            return False
        if old is None and len(self._slices) >= MAX_SLICES:
            raise OverflowError(f"more than {MAX_SLICES} EndpointSlices for one Service")
        self._slices[read.name] = read
        self._union = None
        return True

    def remove(self, name: str) -> bool:
        """A slice deleted (or relabelled away from the Service); whether it was held."""
        if self._slices.pop(name, None) is None:
            return False
        self._union = None
        return True

    def zone_sizes(self) -> tuple[tuple[str, int], ...]:
        """Every slice's endpoints per zone, ready or not, summed (sorted by zone)."""
        sizes: dict[str, int] = {}
        for read in self._slices.values():
            for zone, count in read.zone_sizes:
                sizes[zone] = sizes.get(zone, 0) + count
        return tuple(sorted(sizes.items()))

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The union of every slice's endpoints, sorted by (ip, port), with ordinals; the same
        tuple until a slice changes (the pool recognises it at once)."""
        union = self._union
        if union is None:
            union = self._union = _merge(self._slices.values(), self.statefulset)
        return union


def _merge(slices: Iterable[SliceEndpoints], statefulset: str | None) -> tuple[Endpoint, ...]:
    """One endpoint per (ip, port): while the controller moves an endpoint between slices it
    can be in two; the one that takes requests wins (ready over terminating)."""
    merged: dict[tuple[str, int], Endpoint] = {}
    for read in slices:
        for endpoint in read.endpoints:
            held = merged.get(endpoint.key)
            if held is None or (held.terminating and not endpoint.terminating):
                merged[endpoint.key] = endpoint
    ordered = sorted(merged.values(), key=lambda e: e.key)
    return tuple(assign_ordinals(ordered, statefulset))
