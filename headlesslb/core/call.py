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
here and nowhere else. A response that is not delivered is closed by the shell. Three parts of a
call live in modules of their own, each with its own state: its attempt log and events
(:mod:`.attempts`), its pin to an ordinal (:mod:`.pinning`) and its hedge race (:mod:`.race`);
the steps are :mod:`.steps`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ClientClosed, DeadlineExceeded, DiscoveryError, NoEndpointsAvailable, Throttled
from .attempts import AttemptLog, AttemptRecord
from .balancer import Balancer
from .clock import Clock, monotonic
from .endpoint import Endpoint
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
from .retry import Failure, RetryBudget, RetryPolicy, RetryVerdict, Verdict
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
        log = AttemptLog(self.events, self.clock, method, url, self.events.wants_attempts())
        pin = None if ctx.ordinal is None else Pinning(ctx.ordinal)
        return Call(self, method, options, ctx, replayable, self.clock(), log, pin)


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

    @property
    def attempts(self) -> list[AttemptRecord]:
        """How each attempt so far went."""
        return self.log.records

    # -- driving ---------------------------------------------------------------------------------
    def first(self) -> Step:
        """The first step."""
        return self._next_attempt()

    def responded(self, status: int, verdict: Verdict) -> Step:
        """The Pod of the last :class:`Send` answered with ``status`` (body read, if asked),
        which its sender judged ``verdict`` (:meth:`RetryPolicy.judge`, at header time; the
        body reports the verdict's outcome to the pool, this call decides on the rest)."""
        endpoint = self.endpoint
        assert endpoint is not None
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
            hedger.observe(router.clock() - attempt.started)
        failure = verdict.failure
        if failure is Failure.REJECTED:
            return self._rejected(attempt, verdict.hold_off)
        throttle = self.router.throttle
        if throttle is not None:
            throttle.answered(True)
        if failure is not None and self._may_retry(failure):
            return self._retry_step()
        return DELIVER

    def failed(self, error: BaseException, verdict: Verdict) -> Step:
        """The last :class:`Send` failed with ``error`` (judged ``verdict`` by
        :func:`headlesslb.io.outcomes.classify`), before a response or while reading its body."""
        endpoint = self.endpoint
        assert endpoint is not None
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
            return Fail(error)
        if self._may_retry(verdict.failure):
            return self._retry_step()
        return self._give_up(error)

    def abandon(self) -> None:
        """The caller gave up (cancelled) during the last :class:`Send` (or race)."""
        if self.race is not None:
            self.race.abandon(self)
        attempt, self.current = self.current, None
        if attempt is not None and not attempt.finished:
            attempt.done(Outcome.CANCELLED)
        log = self.log
        if log.announced is not None:
            address = self.endpoint.authority if self.endpoint is not None else None
            log.finished(None if log.announced.fallback else address, error="cancelled")

    def hedge(self) -> Send | None:
        """The hedge delay of the :class:`Send` in flight passed with no answer: a second
        :class:`Send` to another Pod, or None (see :meth:`Race.hedge`)."""
        return None if self.race is None else self.race.hedge(self)

    def settle(self, winner: Attempt) -> None:
        """Of the two attempts of a race, ``winner`` finished first; the other is recorded as
        its loser (see :meth:`Race.settle`)."""
        if self.race is not None:
            self.race.settle(self, winner)

    def waited(self) -> Step:
        """The :class:`Backoff` is over."""
        return self._next_attempt()

    def found(self, endpoint: Endpoint | None) -> Step:
        """The result of a :class:`LookupPod`: the Pod, or None when DNS has no such name."""
        assert self.pin is not None  # only a pinned call asks for a lookup
        return self.pin.found(self, endpoint)

    def fallback_responded(self, address: str, status: int) -> Step:
        """The fallback Service at ``address`` answered with ``status``."""
        self.fallback_address = address
        log = self.log
        if log.announced is not None:
            log.finished(address, status=status)
        log.records.append(AttemptRecord(address, status=status, fallback=True))
        return DELIVER

    def fallback_failed(self, address: str | None, error: BaseException) -> Step:
        """Sending to the fallback Service failed (``address`` None: resolving it failed)."""
        log = self.log
        if log.announced is not None:
            log.finished(address, error=type(error).__name__)
        if address is not None:
            self.fallback_address = address
            log.records.append(AttemptRecord(address, error=type(error).__name__, fallback=True))
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
        return self.log.summary(self.budget_exhausted)

    def report(self) -> Report:
        """What ``response.extensions["headlesslb"]`` holds."""
        fallback = self.fallback_address
        endpoint = None if fallback else self.endpoint
        report: Report = {
            "endpoint": endpoint.authority if endpoint else fallback,
            "hostname": endpoint.hostname if endpoint else None,
            "ordinal": endpoint.ordinal if endpoint else None,
            "attempts": list(map(AttemptRecord.as_dict, self.log.records)),  # no listcomp frame
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
            deadline = router.retry.deadline
            return Fail(
                DeadlineExceeded(f"request deadline of {deadline:g} s exceeded ({self.summary()})")
            )
        return self.begin(state, endpoint, left, first)

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
        else:
            headers = ()
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


def _closed() -> Fail:
    return Fail(ClientClosed("the client was closed while this request was in flight"))
