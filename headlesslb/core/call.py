"""The call core: every decision of one request, as a pure state machine.

Like h11 for HTTP, this module does no I/O. A shell (:mod:`headlesslb.aio` or
:mod:`headlesslb.sync`) asks :class:`Router` for a :class:`Call`, takes its first step, then
loops: it performs the :class:`Step` the call hands it and feeds the result back with
:meth:`Call.feed`, the call's one way in (the results are :mod:`.results`), until the call
says :class:`Deliver` or :class:`Fail`::

    call = router.start(method, options, replayable=...)
    step = call.first()
    while True:
        if Send:            send to step.state's Pod (per-try timeout step.timeout)
                            → step = call.feed(Responded(status, verdict))
                                  or call.feed(Failed(error, verdict))
        if Backoff:         sleep step.seconds         → step = call.feed(WAITED)
        if LookupPod:       resolve the Pod's own name → step = call.feed(Found(endpoint or None))
        if SendToFallback:  send to the fallback       → step = call.feed(FallbackResponded(...))
                                                             or call.feed(FallbackFailed(...))
        if Deliver:         return the latest response
        if Fail:            raise step.error

A hedged ``Send`` (``hedge_after`` set) takes two more results while it is in flight:
``call.feed(HEDGE_DUE)`` when the delay passes with no answer (a second ``Send`` to race, or
None), and, when it raced, ``call.feed(Settled(winner))`` before the winner's own result. A
shell whose caller gives up during a step feeds ``ABANDONED``: the call is then over.
``first()`` is the one entry that is not a result: it answers nothing the shell performed, so
it is a question, asked once; every later step answers exactly one result.

The call refuses what it is not waiting for: a result that does not answer the step it handed
out last (``Found`` with no ``LookupPod`` asked, ``Responded`` while two attempts race and no
``Settled`` said which won), anything after ``Deliver``, ``Fail`` or ``Abandoned``, and a second
``first()``, each raise a ``RuntimeError`` naming the step it waits on. So a shell cannot call
the core out of order, and the core's books (in-flight counts, records, events) cannot be
reported twice or left open by a shell's mistake.

Which Pod, whether to retry, when to fall back and which typed error a caller gets are decided
here and nowhere else. A response that is not delivered is closed by the shell. Three parts of a
call live in modules of their own, each with its own state: its attempt log and events
(:mod:`.attempts`), its pin to an ordinal (:mod:`.pinning`) and its hedge race (:mod:`.race`);
the steps are :mod:`.steps`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, overload

from ..errors import ClientClosed, DeadlineExceeded, DiscoveryError, NoEndpointsAvailable, Throttled
from .attempts import AttemptLog, AttemptRecord
from .balancer import Balancer
from .clock import Clock, monotonic
from .endpoint import Endpoint, in_dns
from .events import (
    EventHub,
    FallbackEngaged,
    FallbackLeft,
    RetryBudgetExhausted,
    RetryScheduled,
)
from .hedge import Hedger
from .names import ServiceName
from .options import WRITE_METHODS, RequestOptions
from .pickers.base import NO_CONTEXT, PickContext
from .pinning import Pinning
from .pool import Attempt, Outcome, Pool
from .race import Race
from .report import Report
from .results import (
    ABANDONED,
    HEDGE_DUE,
    WAITED,
    Abandoned,
    Failed,
    FallbackFailed,
    FallbackResponded,
    Found,
    HedgeDue,
    Responded,
    Result,
    Settled,
    Waited,
)
from .retry import Failure, RetryBudget, RetryPolicy, RetryVerdict
from .snapshot import EndpointState
from .steps import (
    DELIVER,
    TO_FALLBACK,
    Backoff,
    Deliver,
    Fail,
    LookupPod,
    Send,
    SendToFallback,
    Step,
)
from .throttle import Throttle

__all__ = [
    "ABANDONED",
    "HEDGE_DUE",
    "WAITED",
    "Abandoned",
    "AttemptRecord",
    "Backoff",
    "Call",
    "Deliver",
    "Fail",
    "Failed",
    "FallbackFailed",
    "FallbackResponded",
    "Found",
    "HedgeDue",
    "LookupPod",
    "Responded",
    "Result",
    "Router",
    "Send",
    "SendToFallback",
    "Settled",
    "Step",
    "Waited",
]

_NOT_SENT = frozenset({Outcome.REFUSED, Outcome.CONNECT_FAILURE})


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
        reports = pool.load_reports
        self.attempt_headers = () if reports is None else reports.request_headers
        """Headers every attempt to a Pod carries: asking for a load report when the picker
        reads them (``endpoint-load-metrics-format``), else none."""

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
        log = AttemptLog(self.events, self.clock, method, url, self.events.wants_attempts())
        pin = None if ctx.ordinal is None else Pinning(ctx.ordinal)
        return Call(self, method, options, ctx, replayable, self.clock(), log, pin)


# -- the protocol: what a call accepts while it waits for a result ------------------------------
_Handler = Callable[["Call", Any], "Step | None"]


class _State:
    """One state of a call's protocol: the results it accepts, each with its handler (one dict
    lookup checks a result and finds what handles it), and what it waits on, for errors."""

    __slots__ = ("accepts", "waiting")

    def __init__(self, waiting: str, accepts: dict[type[Result], _Handler]) -> None:
        self.waiting = waiting
        self.accepts = accepts


_NOT_STARTED = _State("not started: first() gives its first step", {})
"""A call before its :meth:`Call.first`."""


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
    log: AttemptLog
    """Its attempts' records and events."""
    pin: Pinning | None = None
    """Its pin to an ordinal (``ctx.ordinal``), when pinned."""
    race: Race | None = None
    """Its hedge race, when its first attempt was hedged."""
    tried: set[tuple[str, int]] = field(default_factory=set)
    endpoint: Endpoint | None = None
    """The Pod of the latest attempt."""
    current: Attempt | None = None
    """The pool attempt in flight, reported by its body or by this call."""
    fallback_address: str | None = None
    """``ip:port`` of the fallback Service, once it was used."""
    budget_exhausted: bool = False
    throttled: bool = False
    """A retry was shed by the client's adaptive throttle."""
    discovery_error: str | None = None
    _state: _State = field(default=_NOT_STARTED, repr=False)
    """What the call waits for: the results it accepts now, each with its handler."""

    @property
    def attempts(self) -> list[AttemptRecord]:
        """How each attempt so far went."""
        return self.log.records

    # -- driving ---------------------------------------------------------------------------------
    def first(self) -> Step:
        """The first step (asked once; every later one answers a result, :meth:`feed`)."""
        if self._state is not _NOT_STARTED:
            raise RuntimeError(
                f"first() on a call already started ({self._state.waiting}): a call gives its"
                " first step once"
            )
        return self._hand(self._next_attempt())

    @overload
    def feed(
        self, result: Responded | Failed | Waited | Found | FallbackResponded | FallbackFailed
    ) -> Step: ...
    @overload
    def feed(self, result: HedgeDue) -> Send | None: ...
    @overload
    def feed(self, result: Settled | Abandoned) -> None: ...
    def feed(self, result: Result) -> Step | None:
        """What the shell made of the last step: the next step (the table in :mod:`.results`).

        ``HedgeDue`` gets a second :class:`Send` or None; ``Settled`` and ``Abandoned`` get
        None (the shell goes on with the winner's result, or re-raises). A result the call is
        not waiting for raises ``RuntimeError``, naming the step it waits on.
        """
        handler = self._state.accepts.get(type(result))
        if handler is None:
            raise self._out_of_turn(result)
        return handler(self, result)

    def _hand(self, step: Step) -> Step:
        """Hand ``step`` out: from now on the call waits for its result."""
        if type(step) is Send:
            self._state = _SENT if step.hedge_after is None else _HEDGEABLE
        else:
            self._state = _AWAITING[type(step)]
        return step

    def _out_of_turn(self, result: object) -> RuntimeError:
        state = self._state
        error = f"{type(result).__name__} fed to a call {state.waiting}"
        if state.accepts:
            error += f"; it accepts {', '.join(kind.__name__ for kind in state.accepts)}"
        return RuntimeError(error)

    def _responded(self, result: Responded) -> Step:
        """The Pod of the last :class:`Send` answered (its body read, if asked): the verdict
        its sender made of it decides the rest (its body reports the outcome to the pool)."""
        endpoint = self.endpoint
        assert endpoint is not None
        status = result.status
        log = self.log
        if log.announced is not None:
            log.finished(endpoint.authority, status=status)
        router = self.router
        if router.on_fallback:
            router.on_fallback = False
            router.events.emit(FallbackLeft(router.events.service, router.fallback_name))
        log.records.append(AttemptRecord(endpoint.authority, endpoint.hostname, status=status))
        attempt, self.current = self.current, None
        hedger = router.hedger
        if hedger is not None and attempt is not None:
            hedger.observe(attempt.latency(router.clock()))  # to the headers, as peak-EWMA
        verdict = result.verdict
        failure = verdict.failure
        if failure is Failure.REJECTED:
            return self._hand(self._rejected(attempt, verdict.hold_off))
        throttle = self.router.throttle
        if throttle is not None:
            throttle.answered(True)
        if failure is not None and self._may_retry(failure):
            return self._hand(self._retry_step())
        self._state = _DELIVERED  # the common end, handed out without _hand's lookup
        return DELIVER

    def _failed(self, result: Failed) -> Step:
        """The last :class:`Send` failed, before a response or while its body was read."""
        endpoint = self.endpoint
        assert endpoint is not None
        error, verdict = result.error, result.verdict
        outcome = verdict.outcome
        attempt, self.current = self.current, None
        if attempt is not None and not attempt.finished:
            attempt.done(Outcome.CANCELLED if self.router.closed else outcome)
        log = self.log
        name = type(error).__name__
        if log.announced is not None:
            log.finished(endpoint.authority, error=name, outcome=outcome.value)
        log.records.append(
            AttemptRecord(endpoint.authority, endpoint.hostname, error=name, outcome=outcome)
        )
        if self.router.closed:
            # Nothing is sent after close: no retry, no fallback (the close caused the error).
            error.add_note("headlesslb: the client was closed while this request was in flight")
            return self._hand(Fail(error))
        if self._may_retry(verdict.failure):
            return self._hand(self._retry_step())
        return self._hand(self._give_up(error))

    def _abandoned(self, result: Abandoned) -> None:
        """The caller gave up during the last step: what is in flight ends as cancelled."""
        self._state = _ABANDONED
        if self.race is not None:
            self.race.abandon(self)
        attempt, self.current = self.current, None
        if attempt is not None and not attempt.finished:
            attempt.done(Outcome.CANCELLED)
        log = self.log
        if log.announced is not None:
            address = self.endpoint.authority if self.endpoint is not None else None
            log.finished(None if log.announced.fallback else address, error="cancelled")

    def _hedge_due(self, result: HedgeDue) -> Send | None:
        """The hedge delay passed with no answer: a second :class:`Send` to race the first, or
        None (see :meth:`Race.hedge`)."""
        race = self.race
        assert race is not None  # a Send carries hedge_after only when its call has a race
        hedge = race.hedge(self)
        self._state = _SENT if hedge is None else _RACING
        return hedge

    def _settled(self, result: Settled) -> None:
        """Of the two racing attempts, ``result.winner`` finished first; the other is recorded
        as its loser (see :meth:`Race.settle`)."""
        race = self.race
        assert race is not None and race.other is not None
        winner = result.winner.attempt
        if winner is not self.current and winner is not race.other[0]:
            raise RuntimeError(
                f"Settled names a Send to {result.winner.endpoint} that is not one of the two"
                " racing"
            )
        race.settle(self, winner)
        self._state = _SENT

    def _waited(self, result: Waited) -> Step:
        """The :class:`Backoff` is over."""
        return self._hand(self._next_attempt())

    def _found(self, result: Found) -> Step:
        """The :class:`LookupPod`'s answer: the Pod, or None when DNS has no such name."""
        assert self.pin is not None  # only a pinned call asks for a lookup
        return self._hand(self.pin.found(self, result.endpoint))

    def _fallback_responded(self, result: FallbackResponded) -> Step:
        """The fallback Service answered."""
        address = self.fallback_address = result.address
        log = self.log
        if log.announced is not None:
            log.finished(address, status=result.status)
        log.records.append(AttemptRecord(address, status=result.status, fallback=True))
        return self._hand(DELIVER)

    def _fallback_failed(self, result: FallbackFailed) -> Step:
        """Sending to the fallback Service failed (or resolving its name did)."""
        address, error = result.address, result.error
        log = self.log
        if log.announced is not None:
            log.finished(address, error=type(error).__name__)
        if address is not None:
            self.fallback_address = address
            log.records.append(AttemptRecord(address, error=type(error).__name__, fallback=True))
        return self._hand(Fail(error))

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
        return self.log.summary(self.budget_exhausted)

    def report(self) -> Report:
        """What ``response.extensions["headlesslb"]`` holds."""
        fallback = self.fallback_address
        endpoint = None if fallback else self.endpoint
        records = self.log.records
        attempts = (
            [records[0].as_dict()]  # most calls: one attempt, no map for it
            if len(records) == 1
            else list(map(AttemptRecord.as_dict, records))  # no listcomp frame
        )
        report: Report = {
            "endpoint": endpoint.authority if endpoint else fallback,
            "hostname": endpoint.hostname if endpoint else None,
            "ordinal": endpoint.ordinal if endpoint else None,
            "attempts": attempts,
            "fallback": fallback is not None,
            "retry_budget_exhausted": self.budget_exhausted,
        }
        if self.throttled:
            report["throttled"] = True
        if fallback:
            report["service"] = self.router.fallback_name
            report["discovery_error"] = self.discovery_error
        return report

    # -- what the call's parts use ---------------------------------------------------------------
    def send_to(self, state: EndpointState, endpoint: Endpoint | None = None) -> Step:
        """An attempt on ``state`` (a :class:`Send`), unless the client closed, the throttle
        sheds a first attempt or the deadline has passed; ``endpoint`` (a Pod found by name)
        names it in the report when the member sharing its address has no hostname."""
        router = self.router
        if router.closed:
            return _closed()
        throttle = router.throttle
        first = not self.log.records
        if throttle is not None and first and not throttle.admit():
            return Fail(
                Throttled(
                    f"request to {router.service.host} shed by the client: its Pods rejected"
                    f" most recent requests for load (shedding {throttle.probability:.0%});"
                    " nothing was sent",
                    probability=throttle.probability,
                )
            )
        left = self.time_left()
        if left is not None and left <= 0:
            return Fail(self._deadline_exceeded())
        return self.begin(state, endpoint, left, first)

    def _deadline_exceeded(self) -> DeadlineExceeded:
        deadline = self.router.retry.deadline
        return DeadlineExceeded(f"request deadline of {deadline:g} s exceeded ({self.summary()})")

    def time_left(self) -> float | None:
        """Seconds left before the call's deadline (None: it has none)."""
        deadline = self.router.retry.deadline
        return None if deadline is None else deadline - (self.router.clock() - self.started)

    def begin(
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
        attempt = self.current = router.pool.begin(state)
        hedge_after = None
        hedger = router.hedger
        if first and hedger is not None and self.pin is None:
            plan = hedger.plan(self.method, self.options.idempotent, replayable=self.replayable)
            if plan is not None:
                self.race = Race(plan)
                hedge_after = plan.delay
        log = self.log
        if log.observed:
            race = self.race
            headers = log.announce(self.endpoint, race is not None and race.other is not None)
            headers += router.attempt_headers
        else:
            headers = router.attempt_headers
        return Send(state, attempt, timeout, headers, hedge_after)

    def undiscovered(self, error: BaseException) -> DiscoveryError:
        """The error for a call that found nothing because discovery failed with ``error``."""
        failure = DiscoveryError(f"cannot discover {self.router.service.host}: {error}")
        failure.__cause__ = error
        return failure

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
            return DELIVER
        if self._may_retry(Failure.REJECTED):
            return self._retry_step()
        return DELIVER

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

    def _next_attempt(self) -> Step:
        ctx = self.ctx
        if self.pin is not None:
            return self.pin.next(self)
        balancer = self.router.balancer
        state = balancer.pick(PickContext(ctx.key, None, self.tried) if self.tried else ctx)
        if state is None and self.tried and not self.router.has_fallback:
            # Every Pod was tried: go round again rather than give up while retries remain.
            state = balancer.pick(ctx)
        if state is None:
            return self._to_fallback()
        return self.send_to(state)

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
            if self.log.observed:
                return SendToFallback(self.log.announce(None))
            return TO_FALLBACK
        members = router.pool.snapshot.members
        if not members and error is not None:
            return Fail(self.undiscovered(error))
        return Fail(
            NoEndpointsAvailable(
                f"no usable endpoint for {router.service.host}"
                f" ({in_dns(len(members), router.pool.nxdomain)}) and no fallback configured"
            )
        )

    def _why(self) -> str:
        """Why this call goes to the fallback, for the event saying it engaged."""
        if self.discovery_error is not None:
            return f"discovery failed ({self.discovery_error})"
        if self.attempts:
            return f"no Pod accepted the connection ({self.summary()})"
        pool = self.router.pool
        return f"no usable endpoint ({in_dns(len(pool.snapshot.members), pool.nxdomain)})"

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
        left = self.time_left()
        if left is not None and left <= 0:
            # The last attempt ran to the end of the deadline (its timeouts capped at what was
            # left): what ran out is the deadline, whether or not the request may be retried,
            # as an async shell's scope over the whole call says too.
            ran_out = self._deadline_exceeded()
            ran_out.__cause__ = error
            return Fail(ran_out)
        error.add_note(f"headlesslb: {self.summary()}")
        return Fail(error)

    def _never_sent(self) -> bool:
        return all(a.outcome in _NOT_SENT for a in self.attempts)

    def _all_refused(self) -> bool:
        return all(a.outcome is Outcome.REFUSED for a in self.attempts)

    def _untried(self) -> bool:
        return self.router.balancer.pick(PickContext(exclude=frozenset(self.tried))) is not None


def _closed() -> Fail:
    return Fail(ClientClosed("the client was closed while this request was in flight"))


# The states a step puts its call in (made here: the handlers are the call's).
_DELIVERED = _State("that ended with Deliver: it accepts nothing more", {})
_SENT = _State(
    "waiting on a Send",
    {Responded: Call._responded, Failed: Call._failed, Abandoned: Call._abandoned},
)
_HEDGEABLE = _State("waiting on a hedged Send", {**_SENT.accepts, HedgeDue: Call._hedge_due})
_RACING = _State(
    "waiting on two racing Sends (Settled says which won, before its result)",
    {Settled: Call._settled, Abandoned: Call._abandoned},
)
_AWAITING: dict[type[Step], _State] = {
    Backoff: _State("waiting on a Backoff", {Waited: Call._waited, Abandoned: Call._abandoned}),
    LookupPod: _State("waiting on a LookupPod", {Found: Call._found, Abandoned: Call._abandoned}),
    SendToFallback: _State(
        "waiting on a SendToFallback",
        {
            FallbackResponded: Call._fallback_responded,
            FallbackFailed: Call._fallback_failed,
            Abandoned: Call._abandoned,
        },
    ),
    Deliver: _DELIVERED,
    Fail: _State("that ended with Fail: it accepts nothing more", {}),
}
"""The state a step puts its call in (a ``Send``'s: :data:`_SENT` or :data:`_HEDGEABLE`)."""
_ABANDONED = _State("that was abandoned: it accepts nothing more", {})
