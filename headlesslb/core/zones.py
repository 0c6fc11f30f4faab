"""Zone-aware picking with spill-over: pure, decided once per snapshot.

A client that knows its zone (``EndpointSlices(zone=...)``, or ``HEADLESSLB_ZONE``) sends new
requests to the Pods of its own zone while they can carry the zone's share of the traffic, and
to every eligible Pod once they cannot. Which Pods are local: those whose EndpointSlice
``hints.forZones`` name the client's zone when every eligible Pod carries hints (topology-aware
routing, read as kube-proxy reads it: all or nothing), else those whose ``zone`` is the
client's.

The threshold, :attr:`ZonePolicy.max_overload`, is Envoy's zone-aware rule with a margin
Linkerd's HAZL adds:

- Envoy routes to the local zone "as long as roughly the same number of requests per host" is
  kept across the upstream cluster: all local while the local zone's share of healthy upstream
  hosts is at least the originating cluster's share of clients in that zone, and past that
  only the part the local zone cannot carry crosses zones (by residual capacity). A Python
  client does not know how its fellow clients are spread; this module assumes they are spread
  like the Pods (what topology-aware routing's allocation assumes too), so the client's zone
  sends ``local_members / all_members`` of the traffic, and the local zone's healthy Pods would
  each carry ``(local_members / local_healthy) × (all_healthy / all_members)`` times the
  per-Pod load of balancing over every zone: the *overload* of staying local. When clients are
  not spread like the Pods the rule cannot see it (measured: equal clients over zones of 2, 4
  and 3 Pods put 1.50× the mean on the 2-Pod zone's Pods, all healthy).
- Envoy's rule would start spilling as soon as that exceeds 1. HAZL instead keeps traffic
  local until the local load crosses a high-water mark above the balanced load, accepting some
  imbalance to save cross-zone traffic. ``max_overload`` is that mark: at 1.5 (the default) a
  zone of 3 Pods of 9 that loses one keeps its traffic (1.33), one that loses two spills
  (2.33), and a zone of 2 Pods spills at its first loss (1.78).

Spilling spreads new requests evenly over every eligible Pod, local ones included: simpler than
Envoy's residual split, it gives up more locality than it must, but overloads no Pod (measured
by ``benchmarks/zones.py``: a client whose zone lost 2 of its 3 Pods sent 14 % in zone, and the
busiest Pod carried 1.11× the mean, where never spilling put 2.33× on the last local Pod). The
pool's panic (too few healthy Pods overall) turns zone routing off, as Envoy's precondition
does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigurationError
from . import validate
from .snapshot import EndpointState

__all__ = ["ZonePolicy", "local_choice"]


@dataclass(frozen=True, slots=True)
class ZonePolicy:
    """Prefer the Pods of ``zone``; spill to all zones past ``max_overload``."""

    zone: str
    """The client's zone (``topology.kubernetes.io/zone`` of its node)."""
    max_overload: float = 1.5
    """How many times the balanced per-Pod load the local zone's healthy Pods may carry before
    requests spill to other zones (>= 1; see the module's docstring for why 1.5)."""

    def __post_init__(self) -> None:
        if not isinstance(self.zone, str) or not self.zone or len(self.zone) > 253:
            raise ConfigurationError(f"zone must be a non-empty str, not {self.zone!r}")
        validate.number("ZonePolicy.max_overload", self.max_overload, min=1)


def _local(state: EndpointState, zone: str, hinted: bool) -> bool:
    endpoint = state.endpoint
    return zone in endpoint.for_zones if hinted else endpoint.zone == zone


def local_choice(
    policy: ZonePolicy,
    members: Sequence[EndpointState],
    eligible: tuple[EndpointState, ...],
    sizes: Mapping[str, int] | None = None,
) -> tuple[tuple[EndpointState, ...], bool]:
    """The members new requests go to, and whether they stay in the zone: the local eligible
    ones while their overload is within the policy's, else ``eligible`` unchanged. ``sizes``
    (Pods per zone, ready or not) weigh each zone when discovery gives them: a Pod that turns
    not ready leaves the members but is capacity its zone lost, not a smaller zone."""
    if not eligible:
        return eligible, False
    zone = policy.zone
    hinted = all(s.endpoint.for_zones for s in eligible)
    live = [s for s in members if not s.draining]
    local_members = sum(1 for s in live if _local(s, zone, hinted))
    all_members = len(live)
    if sizes and not hinted:
        local_members = max(local_members, sizes.get(zone, 0))
        all_members = max(all_members, sum(sizes.values()))
    local = tuple(s for s in eligible if _local(s, zone, hinted))
    if not local:
        return eligible, False
    if len(local) == len(eligible):
        return eligible, True
    if hinted:
        # The controller already allotted the zone its Pods: stay while they are healthy enough.
        overload = local_members / len(local)
    else:
        overload = (local_members / len(local)) * (len(eligible) / all_members)
    if overload > policy.max_overload:
        return eligible, False
    return local, True
