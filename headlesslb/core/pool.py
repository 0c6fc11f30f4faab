"""The endpoint pool: membership from discovery, per-endpoint stats, outlier ejection, panic.

Pure and deterministic: the clock and the random source are injected, nothing here does I/O. The
transport reports each attempt's outcome through :class:`Attempt`; discovery replaces membership
through :meth:`Pool.update`; time-based changes (an ejection ending) happen in :meth:`Pool.tick`,
which the snapshot accessor runs when the earliest deadline has passed. Each response's latency
goes into the pool's peak-EWMA estimator (:attr:`Pool.latency`), which the pickers read through
every snapshot.
"""

from __future__ import annotations

import enum
import math
import operator
import random
from collections.abc import Callable
from dataclasses import dataclass

from . import validate
from .clock import Clock, monotonic
from .endpoint import Endpoint, EndpointStatus, Resolution
from .events import (
    EndpointCounts,
    EndpointEjected,
    EndpointReadmitted,
    EndpointsChanged,
    EventHub,
    HealthChanged,
    ReadmitReason,
)
from .ewma import PeakEwmaEstimator
from .orca import LoadReports
from .snapshot import EndpointState, Snapshot
from .subset import Subsetter
from .zones import ZonePolicy, local_choice

__all__ = [
    "Attempt",
    "Outcome",
    "OutlierPolicy",
    "Pool",
]


class Outcome(enum.Enum):
    """How one attempt on one endpoint ended, as far as balancing cares."""

    SUCCESS = "success"
    """A response came back (any status that does not indicate a sick endpoint)."""
    GATEWAY_ERROR = "gateway_error"
    """The endpoint answered 502, 503 (without Retry-After) or 504."""
    CONNECT_FAILURE = "connect_failure"
    """Connecting failed or timed out: the request never left."""
    REFUSED = "refused"
    """The connection was refused: nothing listens there any more (a Pod that died)."""
    RESET = "reset"
    """The connection broke before a complete response."""
    TIMEOUT = "timeout"
    """The endpoint did not answer within the per-try timeout, or (a hedged request's first
    attempt) before the hedge sent after it answered."""
    CANCELLED = "cancelled"
    """The caller gave up, or a hedge lost its race; says nothing about the endpoint."""
    REJECTED = "rejected"
    """The endpoint turned the request away for load: 429, or 503 with Retry-After. Neither a
    success nor a failure: it counts toward no ejection, and its (fast) latency never makes the
    endpoint look cheaper."""


_FAILURES = frozenset(
    {
        Outcome.GATEWAY_ERROR,
        Outcome.CONNECT_FAILURE,
        Outcome.REFUSED,
        Outcome.RESET,
        Outcome.TIMEOUT,
    }
)


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Passive outlier detection, after Envoy's consecutive-gateway-failure detector."""

    consecutive_failures: int = 5
    """Failures in a row (gateway errors, connect failures, resets, timeouts) that eject."""
    base_ejection: float = 10.0
    """Seconds of the first ejection; the n-th in a row lasts ``n × base_ejection``."""
    max_ejection: float = 300.0
    """Cap on one ejection's length, seconds."""
    max_ejection_percent: float = 50.0
    """Never eject more than this share of members at once (at least one may always go)."""
    panic_threshold: float = 50.0
    """Below this share of eligible members, balance over all members."""
    jitter: float = 0.1
    """± fraction added to each ejection so ejected endpoints don't return in lockstep."""
    eject_on_refused: bool = True
    """A refused connection ejects at once: the Pod is gone, DNS just has not caught up."""
    latency_decay: float = 10.0
    """Time constant (seconds) of the latency EWMA that peak-EWMA balancing reads (the pool's
    :class:`~.ewma.PeakEwmaEstimator`)."""

    def __post_init__(self) -> None:
        name = "OutlierPolicy."
        validate.count(name + "consecutive_failures", self.consecutive_failures, min=1)
        base = validate.number(
            name + "base_ejection", self.base_ejection, min=0, exclusive_min=True
        )
        cap = validate.number(name + "max_ejection", self.max_ejection, min=0, exclusive_min=True)
        validate.ordered(name + "base_ejection", base, name + "max_ejection", cap)
        validate.number(name + "max_ejection_percent", self.max_ejection_percent, min=0, max=100)
        validate.number(name + "panic_threshold", self.panic_threshold, min=0, max=100)
        validate.number(name + "jitter", self.jitter, min=0, max=1, exclusive_max=True)
        validate.flag(name + "eject_on_refused", self.eject_on_refused)
        validate.number(name + "latency_decay", self.latency_decay, min=0, exclusive_min=True)


class Attempt:
    """One request on one endpoint, in flight until :meth:`done` is called exactly once."""

    __slots__ = ("answered", "finished", "pool", "started", "state")

    def __init__(self, pool: Pool, state: EndpointState, started: float) -> None:
        self.pool = pool
        """The pool it is counted in (its ``load_reports`` takes the response's report)."""
        self.state = state
        self.started = started
        self.answered: float | None = None
        """When the response's headers came (:meth:`answer`); None until then."""
        self.finished = False
        """Whether :meth:`done` was called (only it sets this: a plain attribute, not a
        property, because every response body reads it once)."""

    @property
    def endpoint(self) -> Endpoint:
        """The endpoint this attempt went to."""
        return self.state.endpoint

    def answer(self) -> None:
        """The response's headers came back now (the sender says so). Its latency is measured
        to here, while the attempt stays in flight until :meth:`done`: a streamed body may last
        minutes, and peak-EWMA must see a Pod that answers in milliseconds and is busy meanwhile,
        not a latency of minutes once the stream ends."""
        self.answered = self.pool._clock()

    def latency(self, now: float) -> float:
        """Seconds from the send to the response's headers (to ``now`` when they have not come:
        a failure, or a sender that does not say): what peak-EWMA and a learned hedge delay
        measure."""
        answered = self.answered
        return (now if answered is None else answered) - self.started

    def done(self, outcome: Outcome) -> None:
        """Report how the attempt ended; a second call is a bug and raises RuntimeError."""
        if self.finished:
            raise RuntimeError(f"attempt on {self.state.endpoint} reported twice")
        self.finished = True
        self.pool._finish(self, outcome)


_by_key = operator.attrgetter("key")


class Pool:
    """Membership and per-endpoint state, with an immutable :class:`Snapshot` for pickers."""

    def __init__(
        self,
        outlier: OutlierPolicy | None = None,
        *,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
        on_refused: Callable[[], None] | None = None,
        new_endpoints_healthy: bool = True,
        events: EventHub | None = None,
        subset: Subsetter | None = None,
        zone: ZonePolicy | None = None,
    ) -> None:
        self.subset = subset
        self.zone = zone
        """Zone-aware picking: prefer the client's zone, spill past its overload (None: off)."""
        """Deterministic subsetting: which members this client uses (None: all)."""
        self.outlier = outlier or OutlierPolicy()
        self.events = events
        """Where membership, ejection, readmission and health changes are reported."""
        self._new_endpoints_healthy = new_endpoints_healthy
        self._clock = clock
        self._rng = rng or random.Random()
        self.on_refused = on_refused
        self.latency = PeakEwmaEstimator(self.outlier.latency_decay)
        """The peak-EWMA latency average: updated here after each response, read by pickers
        (every snapshot carries it)."""
        self._states: dict[tuple[str, int], EndpointState] = {}
        self._snapshot = Snapshot(
            version=0, membership_version=0, members=(), eligible=(), latency=self.latency
        )
        self._next_deadline = math.inf
        self._applied: tuple[Endpoint, ...] | None = None
        """The endpoints tuple of the last update, to recognise the same one at once."""
        self._zone_sizes: tuple[tuple[str, int], ...] = ()
        """Pods per zone, ready or not, as the latest answer said
        (:attr:`Resolution.zone_sizes`)."""
        self.load_reports: LoadReports | None = None
        """Where responses' load reports go (ORCA), set only while a picker reads them: the
        sender hands each response's headers to it (None: not read at all)."""
        self.nxdomain = False
        """Whether the latest answer applied was NXDOMAIN (no members then), not an empty one:
        what errors say when there is no Pod (:attr:`Resolution.nxdomain`)."""

    # -- reading -----------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot, after applying any ejection that has run out."""
        if self._clock() >= self._next_deadline:
            self.tick()
        return self._snapshot

    @property
    def next_deadline(self) -> float:
        """When :meth:`tick` next has work (an ejection ending); ``inf`` if never."""
        return self._next_deadline

    def member(self, key: tuple[str, int]) -> EndpointState | None:
        """The member with this (ip, port), if DNS lists it now."""
        return self._states.get(key)

    def statuses(self) -> list[EndpointStatus]:
        """Status of every member, sorted by (ip, port)."""
        members = self.snapshot.members
        now = self._clock()
        return [s.status(now) for s in members]

    # -- discovery ---------------------------------------------------------------------------
    def update(self, resolution: Resolution) -> Snapshot:
        """Replace membership with what discovery found; stats of kept endpoints survive.

        Cheap when nothing changed: the very ``endpoints`` tuple applied last time (discovery
        hands it back for an unchanged answer) costs nothing, and an equal one no new objects.
        """
        endpoints = resolution.endpoints
        self.nxdomain = resolution.nxdomain
        sizes_changed = resolution.zone_sizes != self._zone_sizes
        self._zone_sizes = resolution.zone_sizes
        if endpoints is self._applied and self._snapshot.version and not sizes_changed:
            return self._snapshot
        states = self._states
        fresh: dict[tuple[str, int], EndpointState] = {}
        old_states = states
        # The first Pods a pool gets are where it starts, not newcomers: no slow start for them.
        joined = self._clock() if old_states else -math.inf
        # Hostnames count too: ordinal tables change when a Pod's name does.
        membership_changed = False
        for ep in endpoints:
            key = (ep.ip, ep.port)
            state = states.get(key)
            if state is None:
                state = EndpointState(ep)
                state.health_ok = state.admitted = self._new_endpoints_healthy
                state.since = joined
                membership_changed = True
            elif state.endpoint is not ep:
                if state.endpoint != ep:
                    membership_changed = True
                state.endpoint = ep  # hostname/ordinal may have appeared (SRV answered later)
            # A terminating Pod (EndpointSlices) stays a member, so its in-flight requests
            # finish and its ordinal stays known, but takes no new request.
            state.draining = ep.terminating
            fresh[key] = state
        if len(fresh) != len(states):
            membership_changed = True  # every fresh key was an old one: some old ones left
        for key, state in states.items():
            if key not in fresh:
                state.draining = True  # in-flight attempts still finish through their Attempt
        self._states = fresh
        self._applied = endpoints
        if not membership_changed and self._snapshot.version:
            if sizes_changed and self.zone is not None:
                return self._rebuild(membership_changed=False)  # a local Pod turned not ready
            return self._snapshot  # the usual refresh: same Pods, nothing to rebuild
        snapshot = self._rebuild(membership_changed=membership_changed)
        events = self.events
        if events is not None and membership_changed:
            added = tuple(s.endpoint for k, s in fresh.items() if k not in old_states)
            removed = tuple(s.endpoint for k, s in old_states.items() if k not in fresh)
            if added or removed:
                events.emit(EndpointsChanged(events.service, added, removed, self.counts()))
        return snapshot

    # -- requests ----------------------------------------------------------------------------
    def begin(self, state: EndpointState) -> Attempt:
        """Count a new attempt on ``state``; the caller must call ``done`` on the result."""
        state.in_flight += 1
        state.requests += 1
        return Attempt(self, state, self._clock())

    def _finish(self, attempt: Attempt, outcome: Outcome) -> None:
        state = attempt.state
        state.in_flight -= 1
        if outcome is Outcome.CANCELLED:
            return
        now = self._clock()
        if outcome is Outcome.REJECTED:
            # A fast "no" says nothing about how fast the Pod serves, and letting its average
            # decay on would make it look cheap while it turns requests away.
            self.latency.restamp(state, now)
            return
        self.latency.observe(state, attempt.latency(now), now)
        if outcome is Outcome.SUCCESS:  # the usual answer, told without hashing an enum
            state.consecutive_failures = 0
        elif outcome in _FAILURES:
            state.failures += 1
            state.consecutive_failures += 1
            if outcome is Outcome.REFUSED:
                if self.on_refused is not None:
                    self.on_refused()
                if self.outlier.eject_on_refused:
                    self._maybe_eject(state, now, "connection refused")
                    return
            if state.consecutive_failures >= self.outlier.consecutive_failures:
                failures = state.consecutive_failures
                reason = f"{failures} consecutive failures (last: {outcome.value})"
                self._maybe_eject(state, now, reason)
        else:
            state.consecutive_failures = 0

    # -- outlier detection -------------------------------------------------------------------
    def eject(self, key: tuple[str, int]) -> bool:
        """Eject a member now (health checks, tests); returns whether the cap allowed it."""
        state = self._states.get(key)
        return state is not None and self._maybe_eject(state, self._clock(), "ejected on request")

    def end_ejection(self, key: tuple[str, int]) -> bool:
        """End a member's ejection early (it passed an active health check); True if it was."""
        state = self._states.get(key)
        if state is None or state.ejected_until is None:
            return False
        state.ejected_until = None
        state.since = self._clock()
        self._rebuild(membership_changed=False)
        self._readmitted(state, ReadmitReason.HEALTH_CHECK)
        return True

    def hold_off(self, state: EndpointState, seconds: float) -> None:
        """Take a member that rejected for load out of rotation for ``seconds`` (its
        Retry-After, bounded by the caller). Unlike an ejection it is not capped: when most
        members hold off, the pool panics and balances over all of them again."""
        if seconds <= 0 or self._states.get(state.key) is not state:
            return
        until = self._clock() + seconds
        held = state.held_until
        if held is not None and held >= until:
            return
        state.held_until = until
        if held is None:
            self._rebuild(membership_changed=False)
        else:
            self._next_deadline = min(self._next_deadline, until)

    def set_health(self, key: tuple[str, int], ok: bool) -> None:
        """Record an active health check verdict for a member."""
        state = self._states.get(key)
        if state is not None and state.health_ok != ok:
            state.health_ok = ok
            state.admitted = state.admitted or ok
            self._rebuild(membership_changed=False)
            events = self.events
            if events is not None:
                events.emit(HealthChanged(events.service, state.endpoint, ok, self.counts()))

    def _maybe_eject(self, state: EndpointState, now: float, reason: str) -> bool:
        if state.ejected_until is not None or self._states.get(state.key) is not state:
            return False  # already out, or not a member (draining, or a Pod found by name)
        policy = self.outlier
        ejected = sum(1 for s in self._states.values() if s.ejected_until is not None)
        allowed = max(1, math.floor(len(self._states) * policy.max_ejection_percent / 100))
        if ejected >= allowed:
            return False
        if state.last_ejected_at is not None and now - state.last_ejected_at > policy.max_ejection:
            state.times_ejected = 0  # well-behaved for a long while: start the back-off over
        state.times_ejected += 1
        duration = min(policy.base_ejection * state.times_ejected, policy.max_ejection)
        duration *= 1.0 + self._rng.uniform(-policy.jitter, policy.jitter)
        state.ejected_until = now + duration
        state.last_ejected_at = now
        state.consecutive_failures = 0
        self._rebuild(membership_changed=False)
        events = self.events
        if events is not None:
            events.emit(
                EndpointEjected(
                    events.service,
                    state.endpoint,
                    reason,
                    duration,
                    state.times_ejected,
                    self.counts(),
                )
            )
        return True

    def _readmitted(self, state: EndpointState, reason: ReadmitReason) -> None:
        events = self.events
        if events is not None:
            events.emit(EndpointReadmitted(events.service, state.endpoint, reason, self.counts()))

    def counts(self) -> EndpointCounts:
        """How many members are healthy, ejected and unhealthy now."""
        snapshot = self._snapshot
        ejected = unhealthy = 0
        for state in snapshot.members:
            if state.ejected_until is not None:
                ejected += 1
            elif not state.health_ok:
                unhealthy += 1
        healthy = len(snapshot.members) - ejected - unhealthy
        return EndpointCounts(healthy, ejected, unhealthy, snapshot.panic)

    def tick(self) -> None:
        """Return endpoints whose ejection has run out; called by :attr:`snapshot` when due."""
        now = self._clock()
        returned = []
        changed = False  # a hold-off ran out (no event: it is not an ejection)
        for state in self._states.values():
            if state.ejected_until is not None and state.ejected_until <= now:
                state.ejected_until = None
                state.since = now  # back from ejection: slow start ramps it up again
                returned.append(state)
            if state.held_until is not None and state.held_until <= now:
                state.held_until = None
                changed = True
        if changed or returned:
            self._rebuild(membership_changed=False)
            for state in returned:
                self._readmitted(state, ReadmitReason.EXPIRED)
        else:
            self._next_deadline = self._earliest_deadline()

    def _earliest_deadline(self) -> float:
        return min(
            (
                until
                for s in self._states.values()
                for until in (s.ejected_until, s.held_until)
                if until is not None
            ),
            default=math.inf,
        )

    # -- snapshots ---------------------------------------------------------------------------
    def _rebuild(self, *, membership_changed: bool) -> Snapshot:
        old = self._snapshot
        members = tuple(sorted(self._states.values(), key=_by_key))
        # ``available`` spelled out: a property call per member is a third of a rebuild's cost.
        eligible = tuple(
            [
                s
                for s in members
                if s.ejected_until is None
                and s.held_until is None
                and s.health_ok
                and not s.draining
            ]
        )
        # Terminating members are on their way out whatever their health: panic neither counts
        # them nor sends them anything (a rolling update must not route to them as it ends).
        live = (
            members
            if not any(s.draining for s in members)
            else [s for s in members if not s.draining]
        )
        panic = bool(live) and len(eligible) * 100 < len(live) * self.outlier.panic_threshold
        by_ordinal = {s.endpoint.ordinal: s for s in members if s.endpoint.ordinal is not None}
        if panic:
            eligible = tuple(s for s in live if s.admitted)
        in_use = core = None
        if self.subset is not None:
            core = self.subset.core(members)
            # Panic is judged over the whole Service; the subset then picks among what is
            # usable, so an ejected member is replaced from the ring before anything else.
            eligible, in_use = self.subset.choose(members, frozenset(eligible))
        in_zone = False
        if self.zone is not None and not panic:
            eligible, in_zone = local_choice(
                self.zone, core or members, eligible, dict(self._zone_sizes)
            )
        self._snapshot = Snapshot(
            version=old.version + 1,
            membership_version=old.membership_version + (1 if membership_changed else 0),
            members=members,
            eligible=eligible,
            panic=panic,
            by_ordinal=by_ordinal,
            in_use=in_use,
            subset=core,
            in_zone=in_zone,
            latency=self.latency,
        )
        self._next_deadline = self._earliest_deadline()
        return self._snapshot
