"""What happens inside a client, as typed events: one stream feeding logs, metrics and spans.

The pure core (pool, call core) and the discovery loop emit frozen event records into one
:class:`EventHub` per client; observers subscribe to it. Logging
(:mod:`headlesslb.telemetry.logs`), OpenTelemetry (:mod:`headlesslb.telemetry.otel`), Prometheus
(:mod:`headlesslb.telemetry.prometheus`) and ``headlesslb top`` are all observers of the same
events, so they can never disagree.

Two kinds of events:

- **state changes** (membership, ejection, readmission, health, fallback, retries, the budget,
  DNS rounds) are rare, and always emitted to every observer;
- **attempt events** (:class:`AttemptStarted`, :class:`AttemptFinished`) come with every request,
  so they are built only while some observer wants them (:meth:`EventHub.wants_attempts`): a
  client nobody observes pays one method call per request, nothing per attempt.

An observer is any callable taking one event. It runs inline, on the thread or task that caused
the event: it must be quick and must not block. An observer that raises is logged and the
request goes on (an observer bug never fails a request).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import ConfigurationError
from . import forksafe
from .endpoint import Endpoint
from .orca import LoadReport

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "DiscoveryRound",
    "EndpointCounts",
    "EndpointEjected",
    "EndpointReadmitted",
    "EndpointsChanged",
    "Event",
    "EventHub",
    "FallbackEngaged",
    "FallbackLeft",
    "HealthChanged",
    "LoadReportRejected",
    "LoadReported",
    "Observer",
    "ReadmitReason",
    "RetryBudgetExhausted",
    "RetryScheduled",
    "StreamAbandoned",
]

# The core does no I/O; logging an observer's own crash is the one exception, as for any library.
_log = logging.getLogger("headlesslb.events")


class Event:
    """Base of every event; ``service`` is the Service's host (``web-hl.default.svc...``)."""

    __slots__ = ()
    service: str


# -- membership and endpoint state --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EndpointCounts:
    """How many members are in each state, after a change (a gauge's reading)."""

    healthy: int
    """Members that may take new requests."""
    ejected: int
    """Members ejected by outlier detection."""
    unhealthy: int
    """Members failing active health checks (not ejected)."""
    panic: bool
    """Too few are healthy: the pool balances over every admitted member."""

    @property
    def total(self) -> int:
        """Every member DNS lists now."""
        return self.healthy + self.ejected + self.unhealthy


@dataclass(frozen=True, slots=True)
class EndpointsChanged(Event):
    """A DNS round changed membership: Pods joined or left."""

    service: str
    added: tuple[Endpoint, ...]
    removed: tuple[Endpoint, ...]
    """Pods DNS no longer lists: no new requests; in-flight ones finish (they drain)."""
    counts: EndpointCounts


@dataclass(frozen=True, slots=True)
class EndpointEjected(Event):
    """Outlier detection ejected a Pod for ``duration`` seconds."""

    service: str
    endpoint: Endpoint
    reason: str
    """Why: ``"connection refused"``, ``"5 consecutive failures (last: gateway_error)"``,
    ``"ejected on request"``."""
    duration: float
    times_ejected: int
    """Ejections in a row (the n-th lasts n × base)."""
    counts: EndpointCounts


class ReadmitReason(enum.Enum):
    """Why an ejected Pod takes traffic again."""

    EXPIRED = "ejection expired"
    HEALTH_CHECK = "passed a health check"


@dataclass(frozen=True, slots=True)
class EndpointReadmitted(Event):
    """An ejected Pod takes traffic again."""

    service: str
    endpoint: Endpoint
    reason: ReadmitReason
    counts: EndpointCounts


@dataclass(frozen=True, slots=True)
class HealthChanged(Event):
    """Active health checks flipped a Pod's verdict."""

    service: str
    endpoint: Endpoint
    healthy: bool
    counts: EndpointCounts


# -- the request path: fallback, retries, budget -------------------------------------------------
@dataclass(frozen=True, slots=True)
class FallbackEngaged(Event):
    """Requests started going to the fallback Service (the first one since Pods served)."""

    service: str
    fallback: str | None
    """The fallback Service's name or URL."""
    reason: str


@dataclass(frozen=True, slots=True)
class FallbackLeft(Event):
    """A request went to a Pod again after the fallback had served."""

    service: str
    fallback: str | None


@dataclass(frozen=True, slots=True)
class RetryScheduled(Event):
    """A failed attempt will be retried (its retry was taken from the budget)."""

    service: str
    method: str
    retry: int
    """1 for the first retry of the request."""
    endpoint: str
    """``ip:port`` of the attempt that failed."""
    failure: str
    """The error's name or the status that is retried."""
    backoff: float
    """Seconds waited before the retry."""


@dataclass(frozen=True, slots=True)
class RetryBudgetExhausted(Event):
    """A retryable failure was not retried: the retry budget is empty."""

    service: str
    method: str
    endpoint: str
    first: bool
    """True for the first denial since the budget last allowed a retry (logs show only those:
    one line per state change, however many requests are denied)."""


# -- attempts ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class AttemptStarted(Event):
    """An attempt is about to be sent (to a Pod, or to the fallback Service).

    ``headers`` is the one mutable part, a carrier as OpenTelemetry propagators use: an observer
    that traces attempts adds its propagation headers (``traceparent``) and they are sent with
    this attempt. The event is hashable by identity, so observers can key per-attempt state by it
    until the matching :class:`AttemptFinished` (whose ``start`` is this event).
    """

    service: str
    method: str
    url: str
    """The request's URL as the caller gave it (naming the Service)."""
    endpoint: Endpoint | None
    """The Pod; ``None`` for the fallback Service (its address is known when it finishes)."""
    resend_count: int
    """0 for the first attempt, n for the n-th resend (``http.request.resend_count``)."""
    started: float
    """When, on the client's clock (seconds)."""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def fallback(self) -> bool:
        """Whether this attempt goes to the fallback Service."""
        return self.endpoint is None


@dataclass(frozen=True, slots=True, eq=False)
class AttemptFinished(Event):
    """An attempt ended: response headers came back, or it failed, or the caller gave up."""

    service: str
    start: AttemptStarted
    address: str | None
    """``ip:port`` it went to (``None``: the fallback's address could not be resolved)."""
    duration: float
    """Seconds from :attr:`start` to the response headers or the error."""
    status: int | None = None
    error: str | None = None
    """The exception's name (``"ConnectError"``), ``"cancelled"`` when the caller gave up."""
    outcome: str | None = None
    """How balancing counts a failure (``"refused"``, ``"reset"``, …), when ``error`` is set."""
    retried: bool = False
    """Whether another attempt follows this one."""

    @property
    def endpoint(self) -> Endpoint | None:
        """The Pod (``None`` for the fallback)."""
        return self.start.endpoint


@dataclass(frozen=True, slots=True)
class StreamAbandoned(Event):
    """A streamed response was garbage-collected without being closed.

    It was released then: its attempt reported as cancelled (which says nothing about the Pod),
    the Pod's in-flight count dropped, its connection closed (a body not read to the end is
    never reused). Until then it counted as in flight, and kept a connection busy. Close
    streamed responses (``async with client.stream(...)``) so their connections are reused.
    """

    service: str
    method: str
    url: str
    """The request's URL as the caller gave it (naming the Service)."""
    endpoint: Endpoint | None
    """The Pod; ``None`` for the fallback Service."""
    address: str
    """``ip:port`` the response came from."""
    first: bool
    """True for the client's first abandoned stream (logs warn once per client)."""


@dataclass(frozen=True, slots=True)
class LoadReportRejected(Event):
    """A Pod's load report (ORCA ``endpoint-load-metrics``) could not be used and was dropped;
    the request went on. Emitted once per Pod, again only after it sent a good one."""

    service: str
    endpoint: Endpoint
    reason: str
    """What was wrong with it (too long, malformed, a value that is not a finite number >= 0)."""


@dataclass(frozen=True, slots=True)
class LoadReported(Event):
    """A Pod's latest usable load report (ORCA ``endpoint-load-metrics``), sent at most once per
    :data:`~headlesslb.core.orca.REPORT_EVENT_INTERVAL` per Pod however many responses carry
    one: what a metrics observer exports (``endpoints()`` has every report as it comes)."""

    service: str
    endpoint: Endpoint
    report: LoadReport


# -- discovery -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DiscoveryRound(Event):
    """One DNS round ended."""

    service: str
    ok: bool
    duration: float
    """Seconds the round took."""
    endpoints: int
    """Endpoints the answer gave (0 when it failed)."""
    ttl: float
    partial: bool = False
    """Some queries failed; the rest were applied."""
    error: str | None = None
    """``"DiscoveryError: ..."`` when the round failed."""
    known: int = 0
    """Members kept (on failure: the last good set)."""
    failures_before: int = 0
    """Failed rounds in a row before this one (a successful round after failures: recovery)."""
    nxdomain: bool = False
    """DNS answered NXDOMAIN (the name does not exist), not an empty answer
    (:attr:`~headlesslb.core.endpoint.Resolution.nxdomain`)."""


@runtime_checkable
class Observer(Protocol):
    """Receives every event of the clients it is subscribed to."""

    def __call__(self, event: Event) -> None:
        """Handle one event; quick, never blocking."""
        ...


class EventHub:
    """One client's event fan-out: observers subscribe, the core and the runtime emit.

    An observer may have a ``wants_attempts() -> bool`` method saying whether it wants attempt
    events now (a logger below DEBUG, OpenTelemetry with no SDK do not); one without it always
    does. A request builds attempt events only if some observer wants them when it starts; they
    then go to every observer, which ignores what it does not need. Subscribing and
    unsubscribing are thread-safe; emitting reads an immutable tuple.
    """

    __slots__ = (
        "__weakref__",
        "_attempt_gates",
        "_lock",
        "_observers",
        "_unconditional",
        "service",
    )

    def __init__(self, service: str) -> None:
        self.service = service
        self._lock = forksafe.lock(self)
        self._observers: tuple[Observer, ...] = ()
        self._attempt_gates: tuple[Callable[[], bool], ...] = ()
        self._unconditional = 0
        """Observers that want attempt events whatever happens."""

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Send every event to ``observer`` from now on; returns the function unsubscribing it."""
        if not callable(observer):
            raise ConfigurationError(
                f"an observer must be a callable taking one event, not {observer!r}"
            )
        with self._lock:
            self._observers = (*self._observers, observer)
            self._recount()

        def unsubscribe() -> None:
            with self._lock:
                observers = list(self._observers)
                if observer in observers:
                    observers.remove(observer)
                self._observers = tuple(observers)
                self._recount()

        return unsubscribe

    def _recount(self) -> None:
        gates = []
        unconditional = 0
        for observer in self._observers:
            gate = getattr(observer, "wants_attempts", None)
            if gate is None:
                unconditional += 1
            else:
                gates.append(gate)
        self._attempt_gates = tuple(gates)
        self._unconditional = unconditional

    @property
    def observers(self) -> tuple[Observer, ...]:
        """The observers subscribed now."""
        return self._observers

    def wants_attempts(self) -> bool:
        """Whether any observer wants attempt events now (asked once per request)."""
        if self._unconditional:
            return True
        # A plain loop: any() over a generator costs half a microsecond more, per request.
        for gate in self._attempt_gates:  # noqa: SIM110
            if gate():
                return True
        return False

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every observer; an observer that raises is logged, not raised."""
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                _log.exception("headlesslb observer %r failed on %r", observer, event)
