"""Immutable views of the pool that pickers are built from.

A :class:`Snapshot` never changes once made: membership and health changes build a new one (off the
request path), and pickers built from it only read it. The per-endpoint counters an
:class:`EndpointState` carries (in-flight, latency) are live on purpose: load-aware pickers read
them at pick time, and they must not force a rebuild on every request. The latency average is
read through the pool's estimator, :attr:`Snapshot.latency`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .endpoint import Endpoint, EndpointStatus
from .ewma import PeakEwmaEstimator
from .orca import LoadReport

__all__ = ["EndpointState", "Snapshot"]


class EndpointState:
    """One endpoint and its live statistics; owned and mutated by the pool only."""

    __slots__ = (
        "admitted",
        "consecutive_failures",
        "draining",
        "ejected_until",
        "endpoint",
        "ewma",
        "ewma_stamp",
        "failures",
        "health_ok",
        "held_until",
        "in_flight",
        "key",
        "last_ejected_at",
        "load",
        "load_told",
        "requests",
        "since",
        "times_ejected",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.key = endpoint.key
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.times_ejected = 0
        self.ejected_until: float | None = None
        self.last_ejected_at: float | None = None
        self.ewma: float | None = None
        """Peak-sensitive EWMA of latency (seconds), undecayed; ``None`` until the first
        response. Written by the pool's :class:`~.ewma.PeakEwmaEstimator` only, and read
        through it (:meth:`~.ewma.PeakEwmaEstimator.decayed`)."""
        self.ewma_stamp = 0.0
        """When :attr:`ewma` was last updated (the pool's clock): its decay runs from here."""
        self.health_ok = True
        """Verdict of active health checks (True when they are off)."""
        self.admitted = True
        """Whether the endpoint may ever take traffic: False until a first health check passes
        when checks start unhealthy (``HealthCheck(start_unhealthy=True)``), panic included."""
        self.draining = False
        self.held_until: float | None = None
        """Until when the endpoint is held off after rejecting for load (429, Retry-After)."""
        self.since = 0.0
        """When it joined or last came back from an ejection (slow start ramps from here)."""
        self.load: LoadReport | None = None
        """The latest load report the Pod sent (ORCA ``endpoint-load-metrics``), however old:
        pickers judge its age. Kept only while a picker reads reports (:mod:`.orca`)."""
        self.load_told = -math.inf
        """When a report of this Pod was last told to observers (:mod:`.orca` tells one at most
        once per ``REPORT_EVENT_INTERVAL``); kept here, it goes when the Pod does."""

    @property
    def available(self) -> bool:
        """Eligible for new requests: not ejected, not held off after a rejection, not failing
        health checks, not draining."""
        return (
            self.ejected_until is None
            and self.held_until is None
            and self.health_ok
            and not self.draining
        )

    def status(self, now: float) -> EndpointStatus:
        """A frozen view for users, its times counted from ``now`` (the pool's clock)."""
        ep = self.endpoint
        return EndpointStatus(
            ip=ep.ip,
            port=ep.port,
            hostname=ep.hostname,
            ordinal=ep.ordinal,
            healthy=self.ejected_until is None and self.health_ok,
            draining=self.draining,
            in_flight=self.in_flight,
            requests=self.requests,
            failures=self.failures,
            ewma_latency=self.ewma,
            ejection_remaining=_remaining(self.ejected_until, now),
            hold_off_remaining=_remaining(self.held_until, now),
            terminating=ep.terminating,
            zone=ep.zone,
            load=self.load,
            load_age=None if self.load is None else now - self.load.received,
        )

    def __repr__(self) -> str:
        return f"EndpointState({self.endpoint}, in_flight={self.in_flight})"


def _remaining(until: float | None, now: float) -> float | None:
    return None if until is None else max(0.0, until - now)


_EMPTY: Mapping[int, EndpointState] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class Snapshot:
    """One immutable moment of the pool: who is a member, who may take new requests."""

    version: int
    """Increases on every change; pickers are cached per version."""
    membership_version: int
    """Increases only when the set of members changes (not on health changes): hash tables that
    depend on membership alone are rebuilt only when this moves."""
    members: tuple[EndpointState, ...]
    """Every endpoint DNS currently lists, sorted by (ip, port)."""
    eligible: tuple[EndpointState, ...]
    """Members that may take new requests; while in panic, every member ever admitted (a Pod
    that never passed a health check that started it unhealthy gets no traffic, even then)."""
    panic: bool = False
    """True when too few members are healthy and the pool balances over all of them."""
    by_ordinal: Mapping[int, EndpointState] = field(default_factory=lambda: _EMPTY)
    """Every member with an ordinal: pinning reaches any Pod, subset or not."""
    in_use: tuple[EndpointState, ...] | None = None
    """With subsetting, the members this client uses or stands ready to (health checks probe
    these); None without subsetting: every member."""
    subset: tuple[EndpointState, ...] | None = None
    """With subsetting, the client's N members along the ring whatever their health, sorted by
    (ip, port), one tuple per membership; None without subsetting."""
    in_zone: bool = False
    """With zone-aware picking, whether new requests stay in the client's zone (False: they
    spill to every zone, or zone-aware picking is off)."""
    latency: PeakEwmaEstimator = field(kw_only=True)
    """The pool's latency estimator: how the members' latency averages are read at pick time
    (peak-EWMA), with the decay the pool updates them with."""

    @property
    def table_members(self) -> tuple[EndpointState, ...]:
        """The members hash tables are built over: the subset, else every member."""
        return self.members if self.subset is None else self.subset

    @property
    def watched(self) -> tuple[EndpointState, ...]:
        """The members health checks probe: :attr:`in_use`, else every member."""
        return self.members if self.in_use is None else self.in_use
