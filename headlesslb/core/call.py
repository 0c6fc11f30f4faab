"""The call core: every decision of one request, as a pure state machine.

Like h11 for HTTP, this module does no I/O. A shell (:mod:`headlesslb.aio` or
:mod:`headlesslb.sync`) asks :class:`Router` for a :class:`Call`, then loops: it performs the
:class:`Step` the call hands it and feeds the result back, until the call says :class:`Deliver`
or :class:`Fail`::

    call = router.start(method, options, replayable=...)
    step = call.first()
    while True:
        if Send:            send to step.state's Pod (per-try timeout step.timeout)
                            → call.responded(status, verdict) or call.failed(error, verdict)
        if Backoff:         sleep step.seconds                  → call.waited()
        if LookupPod:       resolve the Pod's own DNS name       → call.found(endpoint or None)
        if SendToFallback:  send to the fallback Service         → call.fallback_responded(...)
                                                                   or call.fallback_failed(...)
        if Deliver:         return the latest response
        if Fail:            raise step.error

Which Pod, whether to retry, when to fall back and which typed error a caller gets are decided
here and nowhere else. A response that is not delivered is closed by the shell. Attempt records
are typed (:class:`AttemptRecord`); they become dicts only in the user-facing report.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import (
    ClientClosed,
    DeadlineExceeded,
    DiscoveryError,
    NoEndpointsAvailable,
    OrdinalNotFound,
    Throttled,
)
from .balancer import Balancer
from .clock import Clock, monotonic
from .endpoint import Endpoint
from .events import (
    AttemptFinished,
    AttemptStarted,
    EventHub,
    FallbackEngaged,
    FallbackLeft,
    RetryBudgetExhausted,
    RetryScheduled,
)
from .hedge import HedgePlan, Hedger
from .names import ServiceName, split_ordinal
from .options import WRITE_METHODS, RequestOptions
from .pickers.base import NO_CONTEXT, PickContext
from .pool import Attempt, Outcome, Pool
from .report import AttemptReport, Report
from .retry import Failure, RetryBudget, RetryPolicy, RetryVerdict, Verdict
from .snapshot import EndpointState, Snapshot
from .throttle import Throttle

__all__ = [
    "AttemptRecord",
    "Backoff",
    "Call",
    "Deliver",
    "Fail",
    "LookupPod",
    "Router",
    "Send",
    "SendToFallback",
    "Step",
]

_NOT_SENT = frozenset({Outcome.REFUSED, Outcome.CONNECT_FAILURE})


# -- steps: what the shell does next ------------------------------------------------------------
class Step:
    """Base of the instructions a call gives its shell."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Send(Step):
    """Send the request to ``state``'s Pod. ``attempt`` is already counted in the pool: the shell
    hands it to the response body, which reports the outcome when it ends."""

    state: EndpointState
    attempt: Attempt
    timeout: float | None
    """The per-try timeout, seconds (``None``: only the request's own timeouts)."""
    headers: tuple[tuple[str, str], ...] = ()
    """Headers an observer asked to send with this attempt (tracing's ``traceparent``)."""
    hedge_after: float | None = None
    """Seconds after which, with no answer yet, the shell asks :meth:`Call.hedge` for a second
    attempt (``None``: this attempt is not hedged)."""

    @property
    def endpoint(self) -> Endpoint:
        """The Pod to send to."""
        return self.state.endpoint


@dataclass(frozen=True, slots=True)
class Backoff(Step):
    """Wait this long, then call :meth:`Call.waited`."""

    seconds: float


@dataclass(frozen=True, slots=True)
class LookupPod(Step):
    """Resolve a StatefulSet Pod by its own DNS name (SRV gave no hostnames), then call
    :meth:`Call.found`. ``fresh``: the cached answer just refused a connection; ask DNS again."""

    ordinal: int
    hostname: str
    """``<statefulset>-<ordinal>``."""
    name: str
    """The absolute name to resolve, ``<hostname>.<service fqdn>``."""
    port: int
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class SendToFallback(Step):
    """Send the request to the fallback Service, then report with ``fallback_responded`` or
    ``fallback_failed``."""

    headers: tuple[tuple[str, str], ...] = ()
    """Headers an observer asked to send with this attempt (tracing's ``traceparent``)."""


@dataclass(frozen=True, slots=True)
class Deliver(Step):
    """The latest response is the answer: hand it to the caller."""


@dataclass(frozen=True, slots=True)
class Fail(Step):
    """Raise ``error`` (a typed error, or the last attempt's own httpx error with a note)."""

    error: BaseException


_DELIVER = Deliver()
_TO_FALLBACK = SendToFallback()


# -- records -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """How one attempt went: where it was sent and what came back."""

    endpoint: str
    """``ip:port`` (IPv6 in brackets)."""
    hostname: str | None = None
    status: int | None = None
    error: str | None = None
    """The name of the exception the attempt failed with."""
    outcome: Outcome | None = None
    """How the failure counts for balancing (set when ``error`` is)."""
    fallback: bool = False

    def as_dict(self) -> AttemptReport:
        """The record as the user-facing report shows it."""
        record: AttemptReport = {"endpoint": self.endpoint}
        if self.fallback:
            record["fallback"] = True
        else:
            record["hostname"] = self.hostname
        if self.status is not None:
            record["status"] = self.status
        if self.error is not None:
            record["error"] = self.error
        if self.outcome is not None:
            record["outcome"] = self.outcome.value
        return record


# -- the router: what every call of one client shares ------------------------------------------
class Router:
    """The decisions' inputs that outlive a request: pool, balancer, policies, budget.

    ``last_discovery_error`` tells why discovery has nothing (for the fallback report and for
    :class:`DiscoveryError`); ``statefulset`` and ``port`` let pinned requests find Pods by name.
    """

    def __init__(
        self,
        *,
        service: ServiceName,
        pool: Pool,
        balancer: Balancer,
        retry: RetryPolicy,
        budget: RetryBudget,
        rng: random.Random,
        port: int | str,
        clock: Clock = monotonic,
        writes_to: int | None = None,
        statefulset: str | None = None,
        has_fallback: bool = False,
        fallback_name: str | None = None,
        last_discovery_error: Callable[[], BaseException | None] = lambda: None,
        throttle: Throttle | None = None,
        events: EventHub | None = None,
        hedger: Hedger | None = None,
    ) -> None:
        self.service = service
        self.pool = pool
        self.balancer = balancer
        self.retry = retry
        self.budget = budget
        self.rng = rng
        self.port = port
        self.clock = clock
        self.writes_to = writes_to
        self.statefulset = statefulset
        self.has_fallback = has_fallback
        self.fallback_name = fallback_name
        self.last_discovery_error = last_discovery_error
        self.throttle = throttle
        """Client-side adaptive throttling (None: off)."""
        self.hedger = hedger
        """Hedging decisions (None: requests are not hedged)."""
        self.closed = False
        """Set when the client closes: from then on no call sends anything."""
        self.events = events or EventHub(service.host)
        """Where fallback, retry, budget and attempt events go."""
        self.on_fallback = False
        """Whether the latest request served went to the fallback (its changes are events)."""
        self.budget_dry = False
        """Whether the latest retry the budget was asked for was denied."""

    def close(self) -> None:
        """The client closed: calls in flight fail at their next step, none is retried."""
        self.closed = True

    def start(
        self, method: str, options: RequestOptions, *, replayable: bool, url: object = ""
    ) -> Call:
        """A new call for one request. ``replayable``: its body can be sent more than once;
        ``url`` (an ``httpx.URL``, made text only for attempt events) names the request."""
        key, ordinal = options.key, options.ordinal
        if ordinal is None and self.writes_to is not None and method in WRITE_METHODS:
            # writes_to wins over key= for writes: only that Pod takes writes (a leader).
            key, ordinal = None, self.writes_to
        ctx = NO_CONTEXT if key is None and ordinal is None else PickContext(key, ordinal)
        self.budget.deposit()
        observed = self.events.wants_attempts()
        return Call(self, method, options, ctx, replayable, self.clock(), url, observed)


# -- one call ------------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class Call:
    """One request's journey: its routing, the Pods it tried, and its report."""

    router: Router
    method: str
    options: RequestOptions
    ctx: PickContext
    replayable: bool
    started: float
    """When the call started, on the router's clock (the deadline counts from here)."""
    url: object = ""
    observed: bool = False
    """Whether attempt events are emitted for this call (some observer wanted them)."""
    attempts: list[AttemptRecord] = field(default_factory=list)
    tried: set[tuple[str, int]] = field(default_factory=set)
    endpoint: Endpoint | None = None
    """The Pod of the latest attempt."""
    fallback_address: str | None = None
    """``ip:port`` of the fallback Service, once it was used."""
    budget_exhausted: bool = False
    throttled: bool = False
    """A retry was shed by the client's adaptive throttle."""
    discovery_error: str | None = None
    _current: Attempt | None = None
    _pinned: Endpoint | None = None
    """The Pod a by-name lookup found for this call's ordinal."""
    _not_found: OrdinalNotFound | None = None
    """Why the pool has no Pod for this call's ordinal, raised if DNS has none either."""
    _lookup_step: LookupPod | None = None
    """The by-name lookup this call asked for: a fresh one asks for the same name and port."""
    _announced: AttemptStarted | None = None
    """The event of the attempt in flight, when the call is observed."""
    _plan: HedgePlan | None = None
    """How this call may be hedged, decided at its first attempt."""
    _hedges: int = 0
    _other: tuple[Attempt, Endpoint, AttemptStarted | None] | None = None
    """The other attempt of a race in flight (the first one, once a hedge is sent)."""

    # -- driving ---------------------------------------------------------------------------------
    def first(self) -> Step:
        """The first step."""
        return self._next_attempt()

    def responded(self, status: int, verdict: Verdict) -> Step:
        """The Pod of the last :class:`Send` answered with ``status`` (body read, if asked),
        which its sender judged ``verdict`` (:meth:`RetryPolicy.judge`, at header time; the
        body reports the verdict's outcome to the pool, this call decides on the rest)."""
        assert self.endpoint is not None
        if self._announced is not None:
            self._finished(self.endpoint.authority, status=status)
        router = self.router
        if router.on_fallback:
            router.on_fallback = False
            router.events.emit(FallbackLeft(router.events.service, router.fallback_name))
        self.attempts.append(
            AttemptRecord(self.endpoint.authority, self.endpoint.hostname, status=status)
        )
        attempt, self._current = self._current, None
        hedger = router.hedger
        if hedger is not None and attempt is not None:
            hedger.observe(router.clock() - attempt.started)
        failure = verdict.failure
        if failure is Failure.REJECTED:
            return self._rejected(attempt, verdict.hold_off)
        throttle = self.router.throttle
        if throttle is not None:
            throttle.answered(True)
        if failure is not None and self._may_retry(failure):
            return self._retry_step()
        return _DELIVER

    def failed(self, error: BaseException, verdict: Verdict) -> Step:
        """The last :class:`Send` failed with ``error`` (judged ``verdict`` by
        :func:`headlesslb.io.outcomes.classify`), before a response or while reading its body."""
        assert self.endpoint is not None
        outcome = verdict.outcome
        attempt, self._current = self._current, None
        if attempt is not None and not attempt.finished:
            attempt.done(Outcome.CANCELLED if self.router.closed else outcome)
        if self._announced is not None:
            self._finished(
                self.endpoint.authority, error=type(error).__name__, outcome=outcome.value
            )
        self.attempts.append(
            AttemptRecord(
                self.endpoint.authority,
                self.endpoint.hostname,
                error=type(error).__name__,
                outcome=outcome,
            )
        )
        if self.router.closed:
            # Nothing is sent after close: no retry, no fallback (the close caused the error).
            error.add_note("headlesslb: the client was closed while this request was in flight")
            return Fail(error)
        if self._may_retry(verdict.failure):
            return self._retry_step()
        return self._give_up(error)

    def abandon(self) -> None:
        """The caller gave up (cancelled) during the last :class:`Send` (or race)."""
        other, self._other = self._other, None
        if other is not None and not other[0].finished:
            self._cancel_racer(*other)
        attempt, self._current = self._current, None
        if attempt is not None and not attempt.finished:
            attempt.done(Outcome.CANCELLED)
        if self._announced is not None:
            address = self.endpoint.authority if self.endpoint is not None else None
            self._finished(None if self._announced.fallback else address, error="cancelled")

    def hedge(self) -> Send | None:
        """The hedge delay of the :class:`Send` in flight passed with no answer: a second
        :class:`Send` to another Pod, or None (not sent: cap, no other Pod, budget, closed, or
        no time left before the deadline)."""
        router, plan = self.router, self._plan
        if router.closed or plan is None or router.hedger is None or self._current is None:
            return None
        left = self._time_left()
        if left is not None and left <= 0:
            # Decided before anything is counted (budget token, tried Pod, pool attempt): at the
            # deadline a hedge could only fail, and the first attempt's own timeout ends there.
            return None
        tried, key = self.tried, self.ctx.key
        state = router.hedger.target(router.balancer, tried, self._hedges, plan, key=key)
        if state is None:
            return None
        assert self.endpoint is not None
        self._hedges += 1
        self._other = (self._current, self.endpoint, self._announced)
        return self._begin(state, None, left, first=False)

    def settle(self, winner: Attempt) -> None:
        """Of the two attempts of a race, ``winner`` finished first (its result comes next,
        through :meth:`responded` or :meth:`failed`); the other was cancelled by the shell and
        is recorded here, once (pool ``Attempt``, report, ``AttemptFinished``).

        What the loser says about its Pod depends on which one it was. A hedge that lost says
        nothing (``Outcome.CANCELLED``): it was sent late and cut short. A first attempt that
        lost to its hedge had no answer for the hedge delay plus the winner's whole latency,
        so it counts as ``Outcome.TIMEOUT``: a failure toward ejection, and the time it was
        out as a lower bound of its Pod's latency. Otherwise a Pod that never answers would
        lose every race unseen, and keep its share of first attempts, each paying the delay
        and a budget token. (Envoy, hedging on per-try timeout, counts the first attempt as a
        timeout as soon as the hedge goes out, whoever wins; gRPC's outlier detection counts
        every cancelled attempt as a failure.)
        """
        other, self._other = self._other, None
        if other is None:
            return
        attempt, endpoint, announced = other
        if attempt is winner:
            # The first attempt won: it becomes the current one, the hedge is the loser.
            assert self._current is not None and self.endpoint is not None
            attempt, self._current = self._current, attempt
            endpoint, self.endpoint = self.endpoint, endpoint
            announced, self._announced = self._announced, announced
            outcome = Outcome.CANCELLED
        else:
            # A close cuts both attempts short: that says nothing about the first one's Pod.
            outcome = Outcome.CANCELLED if self.router.closed else Outcome.TIMEOUT
        self._cancel_racer(attempt, endpoint, announced, outcome)
        record = AttemptRecord(
            endpoint.authority, endpoint.hostname, error="cancelled", outcome=outcome
        )
        self.attempts.append(record)

    def waited(self) -> Step:
        """The :class:`Backoff` is over."""
        return self._next_attempt()

    def found(self, endpoint: Endpoint | None) -> Step:
        """The result of a :class:`LookupPod`: the Pod, or None when DNS has no such name."""
        if endpoint is None:
            assert self._not_found is not None
            return Fail(self._not_found)
        self._pinned = endpoint
        # The Pod is normally a member already (an A record of the Service): share its stats.
        state = self.router.pool.member(endpoint.key) or EndpointState(endpoint)
        return self._send_pinned(state, endpoint)

    def fallback_responded(self, address: str, status: int) -> Step:
        """The fallback Service at ``address`` answered with ``status``."""
        self._note_fallback(address)
        if self._announced is not None:
            self._finished(address, status=status)
        self.attempts.append(AttemptRecord(address, status=status, fallback=True))
        return _DELIVER

    def fallback_failed(self, address: str | None, error: BaseException) -> Step:
        """Sending to the fallback Service failed (``address`` None: resolving it failed)."""
        if self._announced is not None:
            self._finished(address, error=type(error).__name__)
        if address is not None:
            self._note_fallback(address)
            self.attempts.append(AttemptRecord(address, error=type(error).__name__, fallback=True))
        return Fail(error)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def deadline(self) -> float | None:
        """Seconds the whole call may take (the shell enforces it)."""
        return self.router.retry.deadline

    @property
    def pinned_ordinal(self) -> int | None:
        """The ordinal this call is pinned to (``ordinal=``, or ``writes_to`` for a write)."""
        return self.ctx.ordinal

    def summary(self) -> str:
        """One line for error notes: each attempt's endpoint and result."""
        parts = [f"{a.endpoint} → {a.status or a.error}" for a in self.attempts]
        budget = "; retry budget exhausted" if self.budget_exhausted else ""
        return f"{len(parts)} attempt(s): {', '.join(parts)}{budget}"

    def report(self) -> Report:
        """What ``response.extensions["headlesslb"]`` holds."""
        fallback = self.fallback_address
        endpoint = None if fallback else self.endpoint
        report: Report = {
            "endpoint": endpoint.authority if endpoint else fallback,
            "hostname": endpoint.hostname if endpoint else None,
            "ordinal": endpoint.ordinal if endpoint else None,
            "attempts": list(map(AttemptRecord.as_dict, self.attempts)),  # no listcomp frame
            "fallback": fallback is not None,
            "retry_budget_exhausted": self.budget_exhausted,
        }
        if self.throttled:
            report["throttled"] = True
        if fallback:
            report["service"] = self.router.fallback_name
            report["discovery_error"] = self.discovery_error
        return report

    # -- decisions -------------------------------------------------------------------------------
    def _rejected(self, attempt: Attempt | None, hold_off: float) -> Step:
        """The Pod turned the request away for load: hold it off for ``hold_off`` seconds, and
        retry on another Pod when that is safe, budgeted, and some Pod not tried yet may take
        it."""
        router = self.router
        if router.throttle is not None:
            router.throttle.answered(False)
        if attempt is not None:
            router.pool.hold_off(attempt.state, hold_off)
        if self.ctx.ordinal is not None or not self._retry_has_a_pod():
            # Pinned, or no Pod left for a retry: the rejection stands (the shell would close
            # a response the core does not deliver, and the caller get NoEndpointsAvailable).
            return _DELIVER
        if self._may_retry(Failure.REJECTED):
            return self._retry_step()
        return _DELIVER

    def _retry_has_a_pod(self) -> bool:
        """Whether a Pod this call has not tried may take its retry."""
        tried = self.tried
        key = self.ctx.key
        if key is None:
            # Any eligible Pod will do. Not a pick: a round-robin turn spent on asking would
            # send the next request to the rejecter.
            return not all(s.key in tried for s in self.router.pool.snapshot.eligible)
        # A keyed pick has no turns to spend, and may reach fewer Pods than are eligible (jump
        # over ordinals gives a Pod without one no keys): ask it.
        return self.router.balancer.pick(PickContext(key, None, tried)) is not None

    def _may_retry(self, failure: Failure | None) -> bool:
        router = self.router
        verdict = router.retry.decide(
            failure,
            method=self.method,
            idempotent=self.options.idempotent,
            replayable=self.replayable,
            attempts=len(self.attempts),
            budget=router.budget,
        )
        if verdict is RetryVerdict.OUT_OF_BUDGET:
            self.budget_exhausted = True
            first, router.budget_dry = not router.budget_dry, True
            events = router.events
            if events.observers:
                last = self.attempts[-1].endpoint
                events.emit(RetryBudgetExhausted(events.service, self.method, last, first))
        if verdict is not RetryVerdict.RETRY:
            return False
        router.budget_dry = False
        throttle = router.throttle
        if throttle is not None and not throttle.admit():
            self.throttled = True  # the last answer stands: a retry would add to the overload
            return False
        return True

    def _retry_step(self) -> Step:
        router = self.router
        seconds = router.retry.backoff(len(self.attempts), router.rng)
        events = router.events
        if events.observers:
            last = self.attempts[-1]
            failure = last.error or str(last.status)
            retry = RetryScheduled(
                events.service, self.method, len(self.attempts), last.endpoint, failure, seconds
            )
            events.emit(retry)
        return Backoff(seconds) if seconds > 0 else self._next_attempt()

    def _announce(self, endpoint: Endpoint | None) -> tuple[tuple[str, str], ...]:
        """Emit the attempt's start; the headers observers asked to send with it."""
        router = self.router
        events = router.events
        start = self._announced = AttemptStarted(
            events.service,
            self.method,
            str(self.url),
            endpoint,
            len(self.attempts) + (self._other is not None),  # a hedge: one still racing
            router.clock(),
        )
        events.emit(start)
        return tuple(start.headers.items()) if start.headers else ()

    def _finished(
        self,
        address: str | None,
        *,
        status: int | None = None,
        error: str | None = None,
        outcome: str | None = None,
    ) -> None:
        start, self._announced = self._announced, None
        assert start is not None
        self._emit_finished(start, address, status, error, outcome)

    def _emit_finished(
        self,
        start: AttemptStarted,
        address: str | None,
        status: int | None,
        error: str | None,
        outcome: str | None,
    ) -> None:
        events = self.router.events
        duration = self.router.clock() - start.started
        events.emit(
            AttemptFinished(events.service, start, address, duration, status, error, outcome)
        )

    def _cancel_racer(
        self,
        attempt: Attempt,
        endpoint: Endpoint,
        announced: AttemptStarted | None,
        outcome: Outcome | None = None,
    ) -> None:
        """A racing attempt the call no longer waits for (the loser, or both when the caller
        gives up): its pool Attempt ends once, as ``outcome`` (None: cancelled, and the event
        names no outcome), and its event says it was cancelled."""
        if not attempt.finished:
            attempt.done(outcome or Outcome.CANCELLED)
        if announced is not None:
            counted = None if outcome is None else outcome.value
            self._emit_finished(announced, endpoint.authority, None, "cancelled", counted)

    def _next_attempt(self) -> Step:
        ctx = self.ctx
        if ctx.ordinal is not None:
            return self._next_pinned(ctx.ordinal)
        balancer = self.router.balancer
        state = balancer.pick(PickContext(ctx.key, None, self.tried) if self.tried else ctx)
        if state is None and self.tried and not self.router.has_fallback:
            # Every Pod was tried: go round again rather than give up while retries remain.
            state = balancer.pick(ctx)
        if state is None:
            return self._to_fallback()
        return self._send(state)

    def _send(self, state: EndpointState, endpoint: Endpoint | None = None) -> Step:
        """Send to ``state``; ``endpoint`` (a Pod found by name) names it in the report when the
        member sharing its address has no hostname."""
        router = self.router
        if router.closed:
            return _closed()
        throttle = router.throttle
        first = not self.attempts and not self._hedges
        if throttle is not None and first and not throttle.admit():
            return Fail(
                Throttled(
                    f"request to {router.service.host} shed by the client: its Pods rejected"
                    f" most recent requests for load (shedding {throttle.probability:.0%});"
                    " nothing was sent",
                    probability=throttle.probability,
                )
            )
        left = self._time_left()
        if left is not None and left <= 0:
            deadline = router.retry.deadline
            return Fail(
                DeadlineExceeded(f"request deadline of {deadline:g} s exceeded ({self.summary()})")
            )
        return self._begin(state, endpoint, left, first)

    def _time_left(self) -> float | None:
        """Seconds left before the call's deadline (None: it has none)."""
        deadline = self.router.retry.deadline
        return None if deadline is None else deadline - (self.router.clock() - self.started)

    def _begin(
        self, state: EndpointState, endpoint: Endpoint | None, left: float | None, first: bool
    ) -> Send:
        """Count an attempt on ``state`` in the pool and name the step sending it; ``left`` (of
        the deadline) caps its per-try timeout, and the first attempt learns its hedge plan."""
        router = self.router
        timeout = router.retry.per_try_timeout
        if left is not None:
            # Every attempt fits in what is left of the deadline, so a blocking shell, which
            # cannot cancel from outside, keeps to it as well as an async one.
            timeout = left if timeout is None else min(timeout, left)
        self.tried.add(state.key)
        self.endpoint = endpoint or state.endpoint
        attempt = self._current = router.pool.begin(state)
        hedge_after = None
        hedger = router.hedger
        if first and hedger is not None and self.ctx.ordinal is None:
            plan = hedger.plan(self.method, self.options.idempotent, replayable=self.replayable)
            self._plan = plan
            hedge_after = None if plan is None else plan.delay
        headers = self._announce(self.endpoint) if self.observed else ()
        return Send(state, attempt, timeout, headers, hedge_after)

    def _next_pinned(self, ordinal: int) -> Step:
        """The Pod with this ordinal: from the pool, else by its own DNS name; never another."""
        if self._pinned is not None:
            refused = bool(self.attempts) and self.attempts[-1].outcome is Outcome.REFUSED
            if refused:
                return self._lookup(ordinal, fresh=True)  # the address it had is gone
            return self.found(self._pinned)
        try:
            state = self.router.balancer.pick(PickContext(ordinal=ordinal))
        except OrdinalNotFound as not_found:
            return self._lookup_or_fail(ordinal, not_found)
        assert state is not None  # only an excluded Pod gives None, and nothing is excluded
        return self._send_pinned(state)

    def _send_pinned(self, state: EndpointState, endpoint: Endpoint | None = None) -> Step:
        if not state.admitted:
            return Fail(
                NoEndpointsAvailable(
                    f"{state.endpoint} has not passed a health check yet (start_unhealthy=True):"
                    " a pinned request never goes to another Pod"
                )
            )
        return self._send(state, endpoint)

    def _lookup_or_fail(self, ordinal: int, not_found: OrdinalNotFound) -> Step:
        # SRV gave no hostnames (a numeric port, or an answer too big to carry them): ask for
        # the Pod's own name, <statefulset>-<n>.<service>, as a StatefulSet client would.
        snapshot = self.router.pool.snapshot
        if snapshot.members and len(snapshot.by_ordinal) == len(snapshot.members):
            return Fail(not_found)  # SRV named every Pod: this ordinal really is absent
        if self._lookup_target(snapshot) is None:
            error = self.router.last_discovery_error()
            if not snapshot.members and error is not None:
                return Fail(self._undiscovered(error))  # DNS down: that, not the ordinal, is why
            not_found.add_note(
                "headlesslb: pass statefulset=<name> to look Pods up by their own DNS names"
            )
            return Fail(not_found)
        self._not_found = not_found
        return self._lookup(ordinal, fresh=False)

    def _lookup(self, ordinal: int, *, fresh: bool) -> Step:
        asked = self._lookup_step
        if asked is not None:
            # The same name and port again: the pool may have changed meanwhile (the refusal
            # asked for an early refresh, which may have emptied it), the Pod's name has not.
            return LookupPod(asked.ordinal, asked.hostname, asked.name, asked.port, fresh)
        target = self._lookup_target(self.router.pool.snapshot)
        assert target is not None
        statefulset, port = target
        hostname = f"{statefulset}-{ordinal}"
        name = self.router.service.pod_fqdn(hostname)
        step = self._lookup_step = LookupPod(ordinal, hostname, name, port, fresh)
        return step

    def _lookup_target(self, snapshot: Snapshot) -> tuple[str, int] | None:
        router = self.router
        statefulset = router.statefulset or _statefulset_of(snapshot)
        port = router.port if isinstance(router.port, int) else _common_port(snapshot)
        if statefulset is None or port is None:
            return None
        return statefulset, port

    def _to_fallback(self) -> Step:
        router = self.router
        if router.closed:
            return _closed()
        error = router.last_discovery_error()
        if router.has_fallback:
            self.discovery_error = None if error is None else f"{type(error).__name__}: {error}"
            if not router.on_fallback:
                router.on_fallback = True
                router.events.emit(
                    FallbackEngaged(router.events.service, router.fallback_name, self._why())
                )
            if self.observed:
                return SendToFallback(self._announce(None))
            return _TO_FALLBACK
        members = router.pool.snapshot.members
        if not members and error is not None:
            return Fail(self._undiscovered(error))
        return Fail(
            NoEndpointsAvailable(
                f"no usable endpoint for {router.service.host} ({len(members)} in DNS)"
                " and no fallback configured"
            )
        )

    def _why(self) -> str:
        """Why this call goes to the fallback, for the event saying it engaged."""
        if self.discovery_error is not None:
            return f"discovery failed ({self.discovery_error})"
        if self.attempts:
            return f"no Pod accepted the connection ({self.summary()})"
        members = len(self.router.pool.snapshot.members)
        return f"no usable endpoint ({members} in DNS)"

    def _undiscovered(self, error: BaseException) -> DiscoveryError:
        failure = DiscoveryError(f"cannot discover {self.router.service.host}: {error}")
        failure.__cause__ = error
        return failure

    def _give_up(self, error: BaseException) -> Step:
        if self.attempts and self.ctx.ordinal is None and self._never_sent():
            # No Pod took the connection, so the request never left: the fallback Service may
            # serve it whatever the method, and without one the honest error is that no endpoint
            # was available.
            if self.router.has_fallback:
                return self._to_fallback()
            if self._all_refused() and not self._untried():
                failure = NoEndpointsAvailable(
                    f"no Pod of {self.router.service.host} accepted a connection"
                    f" ({self.summary()}) and no fallback is configured"
                )
                failure.__cause__ = error
                return Fail(failure)
        error.add_note(f"headlesslb: {self.summary()}")
        return Fail(error)

    def _never_sent(self) -> bool:
        return all(a.outcome in _NOT_SENT for a in self.attempts)

    def _all_refused(self) -> bool:
        return all(a.outcome is Outcome.REFUSED for a in self.attempts)

    def _untried(self) -> bool:
        return self.router.balancer.pick(PickContext(exclude=frozenset(self.tried))) is not None

    def _note_fallback(self, address: str) -> None:
        self.fallback_address = address


def _closed() -> Fail:
    return Fail(ClientClosed("the client was closed while this request was in flight"))


def _statefulset_of(snapshot: Snapshot) -> str | None:
    for member in snapshot.members:
        hostname = member.endpoint.hostname
        parsed = split_ordinal(hostname) if hostname else None
        if parsed is not None and member.endpoint.ordinal is not None:
            return parsed[0]
    return None


def _common_port(snapshot: Snapshot) -> int | None:
    ports = {m.endpoint.port for m in snapshot.members}
    return ports.pop() if len(ports) == 1 else None
