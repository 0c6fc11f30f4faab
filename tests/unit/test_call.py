"""The call core (:mod:`headlesslb.core.call`) over the retry, fallback and pinning matrix.

No sockets and no event loop: a real pool, balancer, retry policy, budget and router are built
by hand around a :class:`ManualClock` and a seeded ``random.Random``, and a tiny driver plays
the shell, scripting what each :class:`Send` gets back. After every test, every attempt begun in
every pool must have been reported exactly once and nothing may be left in flight.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from headlesslb.compose import compose
from headlesslb.core.balancer import Balancer
from headlesslb.core.call import (
    ABANDONED,
    HEDGE_DUE,
    WAITED,
    Abandoned,
    Backoff,
    Call,
    Deliver,
    Fail,
    Failed,
    FallbackFailed,
    FallbackResponded,
    Found,
    LookupPod,
    Responded,
    Router,
    Send,
    SendToFallback,
    Settled,
    Step,
)
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.events import AttemptFinished, AttemptStarted, Event
from headlesslb.core.hedge import HedgePolicy, Hedger
from headlesslb.core.names import expand_service_name
from headlesslb.core.options import RequestOptions
from headlesslb.core.pickers import ConsistentHash, Ordinal, make_picker
from headlesslb.core.pool import Attempt, Outcome, OutlierPolicy, Pool
from headlesslb.core.results import Result
from headlesslb.core.retry import ANSWERED, Failure, RetryBudget, RetryPolicy, Verdict
from headlesslb.core.snapshot import EndpointState
from headlesslb.errors import (
    ClientClosed,
    DeadlineExceeded,
    DiscoveryError,
    NoEndpointsAvailable,
    OrdinalNotFound,
)
from headlesslb.io.runtime import Runtime
from headlesslb.testing import StaticDiscovery

SERVICE = expand_service_name("web-hl.default")
FALLBACK = "10.96.0.10:80"
FALLBACK_NAME = "web-lb.default.svc.cluster.local"
NO_BACKOFF = RetryPolicy(backoff_base=0.0, backoff_max=0.0)


# -- a pool that keeps the books ---------------------------------------------------------------
class LedgerPool(Pool):
    """A pool that records every attempt begun and every report, to prove none leaks or doubles."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.begun: list[Attempt] = []
        self.reports: list[tuple[Attempt, Outcome]] = []
        self.states: set[EndpointState] = set()

    def begin(self, state: EndpointState) -> Attempt:
        attempt = super().begin(state)
        self.begun.append(attempt)
        self.states.add(state)  # Pods found by name are not members: keep them too
        return attempt

    def _finish(self, attempt: Attempt, outcome: Outcome) -> None:
        self.reports.append((attempt, outcome))
        super()._finish(attempt, outcome)

    def outcomes(self) -> list[Outcome]:
        return [outcome for _, outcome in self.reports]


POOLS: list[LedgerPool] = []


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Every scenario: each attempt reported exactly once, nothing left in flight."""
    POOLS.clear()
    yield
    for pool in POOLS:
        reported = [id(a) for a, _ in pool.reports]
        assert sorted(reported) == sorted(id(a) for a in pool.begun), "an attempt leaked or doubled"
        assert len(set(reported)) == len(reported)
        for state in {*pool.states, *pool.snapshot.members}:
            assert state.in_flight == 0, state
    POOLS.clear()


# -- building a router ---------------------------------------------------------------------------
def pods(n: int, *, hostnames: bool = True, port: int = 80) -> tuple[Endpoint, ...]:
    """``web-0`` … ``web-<n-1>`` at 10.0.0.1 …, with or without the hostnames SRV gives."""
    if hostnames:
        return tuple(Endpoint(f"10.0.0.{i + 1}", port, f"web-{i}", i) for i in range(n))
    return tuple(Endpoint(f"10.0.0.{i + 1}", port) for i in range(n))


@dataclass
class Env:
    clock: ManualClock
    pool: LedgerPool
    router: Router

    def start(self, method: str = "GET", *, replayable: bool = True, **options: Any) -> Call:
        return self.router.start(method, RequestOptions(**options), replayable=replayable)

    def run(
        self,
        method: str = "GET",
        script: Script = (200,),
        *,
        replayable: bool = True,
        lookups: Mapping[str, Endpoint | None] | None = None,
        fallback: int | httpx.TransportError = 200,
        **options: Any,
    ) -> Trace:
        call = self.start(method, replayable=replayable, **options)
        return drive(call, script, self.clock, lookups=lookups, fallback=fallback)

    def member(self, ip: str, port: int = 80) -> EndpointState:
        state = self.pool.member((ip, port))
        assert state is not None
        return state


def make(
    endpoints: int | Sequence[Endpoint] = 3,
    *,
    retry: RetryPolicy | None = None,
    budget: RetryBudget | None = None,
    picker: str = "round_robin",
    port: int | str = 80,
    fallback: bool = False,
    writes_to: int | None = None,
    statefulset: str | None = None,
    start_unhealthy: bool = False,
    discovery_error: BaseException | None = None,
    seed: int = 1234,
    hedge: HedgePolicy | None = None,
) -> Env:
    clock = ManualClock()
    rng = random.Random(seed)
    retry = retry or RetryPolicy()
    pool = LedgerPool(
        OutlierPolicy(), clock=clock, rng=rng, new_endpoints_healthy=not start_unhealthy
    )
    POOLS.append(pool)
    pool.update(Resolution(pods(endpoints) if isinstance(endpoints, int) else tuple(endpoints), 30))
    balancer = Balancer(
        pool,
        make_picker(picker, rng=rng, clock=clock),
        sharding=ConsistentHash(),
        ordinal=Ordinal(),
    )
    router = Router(
        service=SERVICE,
        pool=pool,
        balancer=balancer,
        retry=retry,
        budget=budget or retry.budget(clock),
        rng=rng,
        port=port,
        clock=clock,
        writes_to=writes_to,
        statefulset=statefulset,
        has_fallback=fallback,
        fallback_name=FALLBACK_NAME if fallback else None,
        last_discovery_error=lambda: discovery_error,
    )
    if hedge is not None:
        router.hedger = Hedger(hedge, retry, router.budget, clock=clock)
    return Env(clock, pool, router)


# -- the scripted shell --------------------------------------------------------------------------
@dataclass(frozen=True)
class Err:
    """A failed attempt: the error, as the shell classifies it."""

    kind: type[httpx.TransportError]
    failure: Failure | None
    outcome: Outcome
    in_body: bool = False
    """The body broke while the shell read it: its stream reports before the shell does."""


@dataclass(frozen=True)
class Slow:
    """The attempt takes ``seconds`` (on the manual clock), then ends as ``then``."""

    seconds: float
    then: Action


Action = int | Err | Slow
Script = Sequence[Action] | Callable[[Send], Action]

REFUSED = Err(httpx.ConnectError, Failure.NOT_SENT, Outcome.REFUSED)
CONNECT_TIMEOUT = Err(httpx.ConnectTimeout, Failure.NOT_SENT, Outcome.CONNECT_FAILURE)
RESET = Err(httpx.ReadError, Failure.MAYBE_PROCESSED, Outcome.RESET)
READ_TIMEOUT = Err(httpx.ReadTimeout, Failure.MAYBE_PROCESSED, Outcome.TIMEOUT)
BODY_BROKE = Err(httpx.RemoteProtocolError, Failure.MAYBE_PROCESSED, Outcome.RESET, in_body=True)
LOCAL_BUG = Err(httpx.LocalProtocolError, None, Outcome.RESET)


def always(action: Action) -> Callable[[Send], Action]:
    return lambda send: action


def by_ip(actions: Mapping[str, Action], default: Action = 200) -> Callable[[Send], Action]:
    return lambda send: actions.get(send.endpoint.ip, default)


@dataclass
class Trace:
    """Every step a call gave, and the call itself (for its report)."""

    call: Call
    steps: list[Step] = field(default_factory=list)

    @property
    def sends(self) -> list[Send]:
        return [s for s in self.steps if isinstance(s, Send)]

    @property
    def ips(self) -> list[str]:
        return [s.endpoint.ip for s in self.sends]

    @property
    def backoffs(self) -> list[float]:
        return [s.seconds for s in self.steps if isinstance(s, Backoff)]

    @property
    def lookups(self) -> list[LookupPod]:
        return [s for s in self.steps if isinstance(s, LookupPod)]

    @property
    def final(self) -> Step:
        return self.steps[-1]

    @property
    def delivered(self) -> bool:
        return isinstance(self.final, Deliver)

    @property
    def error(self) -> BaseException:
        assert isinstance(self.final, Fail), self.final
        return self.final.error

    @property
    def report(self) -> dict[str, Any]:
        return self.call.report()

    @property
    def statuses(self) -> list[int | str | None]:
        return [a.status or a.error for a in self.call.attempts]


def drive(
    call: Call,
    script: Script,
    clock: ManualClock,
    *,
    lookups: Mapping[str, Endpoint | None] | None = None,
    fallback: int | httpx.TransportError = 200,
) -> Trace:
    """Play the shell: perform each step as scripted and report back, until Deliver or Fail."""
    actions = None if callable(script) else list(script)
    trace = Trace(call)
    # The response handed to the caller, closed at the end, and what its sender judged it.
    delivered: tuple[Attempt, Verdict] | None = None
    step = call.first()
    for _ in range(100):
        trace.steps.append(step)
        if isinstance(step, Send):
            assert step.endpoint is step.state.endpoint and not step.attempt.finished
            assert step.state.in_flight >= 1
            if actions is None:
                assert callable(script)
                action = script(step)
            else:
                assert actions, f"unscripted attempt on {step.endpoint}"
                action = actions.pop(0)
            while isinstance(action, Slow):
                clock.advance(action.seconds)
                action = action.then
            if isinstance(action, int):
                verdict = call.router.retry.judge(action, {})  # the sender's, at header time
                step = call.feed(Responded(action, verdict))
                if isinstance(step, Deliver):
                    delivered = step_attempt(trace), verdict
                else:  # the shell closes an answer it does not deliver: its body reports
                    trace.sends[-1].attempt.done(verdict.outcome)
            else:
                if action.in_body:
                    trace.sends[-1].attempt.done(action.outcome)
                error = action.kind("scripted failure")
                step = call.feed(Failed(error, Verdict(action.outcome, action.failure)))
        elif isinstance(step, Backoff):
            clock.advance(step.seconds)
            step = call.feed(WAITED)
        elif isinstance(step, LookupPod):
            assert lookups is not None, f"unexpected lookup of {step.name}"
            step = call.feed(Found(lookups.get(step.hostname)))
        elif isinstance(step, SendToFallback):
            if isinstance(fallback, int):
                step = call.feed(FallbackResponded(FALLBACK, fallback))
            else:
                step = call.feed(FallbackFailed(FALLBACK, fallback))
        elif isinstance(step, Deliver):
            if delivered is not None:  # the caller reads and closes what it got
                attempt, verdict = delivered
                attempt.done(verdict.outcome)
            return trace
        else:
            assert isinstance(step, Fail)
            return trace
    raise AssertionError(f"the call did not end: {trace.steps[-5:]}")


def respond(call: Call, status: int) -> Step:
    """Play the shell for an answer: the core gets the verdict the sender made of it."""
    return call.feed(Responded(status, call.router.retry.judge(status, {})))


def step_attempt(trace: Trace) -> Attempt:
    return trace.sends[-1].attempt


def notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", []))


# -- the first attempt ---------------------------------------------------------------------------
def test_first_attempt_succeeds_and_reports() -> None:
    env = make(3)
    trace = env.run("GET", [200])
    assert trace.delivered and len(trace.sends) == 1
    ip = trace.ips[0]
    index = int(ip.rsplit(".", 1)[1]) - 1
    assert trace.report == {
        "endpoint": f"{ip}:80",
        "hostname": f"web-{index}",
        "ordinal": index,
        "attempts": [{"endpoint": f"{ip}:80", "hostname": f"web-{index}", "status": 200}],
        "fallback": False,
        "retry_budget_exhausted": False,
    }
    assert env.pool.outcomes() == [Outcome.SUCCESS]
    state = env.member(ip)
    assert state.requests == 1 and state.failures == 0
    assert trace.call.summary() == f"1 attempt(s): {ip}:80 → 200"


def test_failed_attempt_record_names_error_and_outcome() -> None:
    env = make(2, retry=NO_BACKOFF)
    trace = env.run("GET", [RESET, 200])
    first = trace.report["attempts"][0]
    assert first == {
        "endpoint": f"{trace.ips[0]}:80",
        "hostname": first["hostname"],
        "error": "ReadError",
        "outcome": "reset",
    }
    assert env.pool.outcomes() == [Outcome.RESET, Outcome.SUCCESS]


# -- what is retried -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "idempotent", "replayable", "action", "retried"),
    [
        # never sent: any method, any body
        ("POST", None, True, CONNECT_TIMEOUT, True),
        ("POST", None, True, REFUSED, True),
        ("PATCH", None, False, CONNECT_TIMEOUT, True),
        ("POST", None, False, REFUSED, True),
        # may have been processed: idempotent methods only, or idempotent=True
        ("GET", None, True, RESET, True),
        ("GET", None, True, READ_TIMEOUT, True),
        ("GET", None, True, BODY_BROKE, True),
        ("PUT", None, True, RESET, True),
        ("DELETE", None, True, READ_TIMEOUT, True),
        ("POST", None, True, RESET, False),
        ("POST", None, True, BODY_BROKE, False),
        ("PATCH", None, True, READ_TIMEOUT, False),
        ("POST", True, True, RESET, True),
        ("GET", False, True, RESET, False),
        # a streamed body cannot be sent again once it may have left
        ("GET", None, False, RESET, False),
        ("POST", True, False, RESET, False),
        # an error that says nothing retryable
        ("GET", None, True, LOCAL_BUG, False),
        # retryable statuses: idempotent and replayable only; otherwise the answer stands
        ("GET", None, True, 503, True),
        ("GET", None, True, 502, True),
        ("GET", None, True, 504, True),
        ("GET", None, True, 500, False),
        ("POST", None, True, 503, False),
        ("POST", True, True, 503, True),
        ("GET", None, False, 503, False),
    ],
)
def test_retry_matrix(
    method: str, idempotent: bool | None, replayable: bool, action: Action, retried: bool
) -> None:
    env = make(3)
    trace = env.run(method, [action, 200], replayable=replayable, idempotent=idempotent)
    if retried:
        assert trace.delivered and len(trace.sends) == 2
        assert trace.ips[0] != trace.ips[1]
        assert trace.report["endpoint"] == f"{trace.ips[1]}:80"
    elif isinstance(action, int):
        assert trace.delivered and len(trace.sends) == 1  # the answer itself, not an error
        assert trace.report["attempts"][0]["status"] == action
    else:
        assert isinstance(action, Err)
        assert len(trace.sends) == 1
        error = trace.error
        assert type(error) is action.kind
        assert f"headlesslb: 1 attempt(s): {trace.ips[0]}:80 → {action.kind.__name__}" in notes(
            error
        )


def test_retryable_status_delivers_the_last_answer_when_attempts_run_out() -> None:
    env = make(3, retry=RetryPolicy(max_attempts=3))
    trace = env.run("GET", always(503))
    assert trace.delivered
    assert len(set(trace.ips)) == 3
    assert trace.statuses == [503, 503, 503]
    assert trace.report["endpoint"] == f"{trace.ips[-1]}:80"
    assert env.pool.outcomes() == [Outcome.GATEWAY_ERROR] * 3


def test_failures_give_up_with_the_last_error_and_a_summary() -> None:
    env = make(3, retry=RetryPolicy(max_attempts=3))
    trace = env.run("GET", [RESET, READ_TIMEOUT, RESET])
    error = trace.error
    assert isinstance(error, httpx.ReadError)
    summary = ", ".join(
        f"{ip}:80 → {kind}"
        for ip, kind in zip(trace.ips, ["ReadError", "ReadTimeout", "ReadError"], strict=True)
    )
    assert notes(error) == f"headlesslb: 3 attempt(s): {summary}"


@pytest.mark.parametrize(
    ("picker", "key"),
    [
        ("round_robin", None),
        ("least_request", None),
        ("peak_ewma", None),
        ("round_robin", "user-42"),
    ],
)
def test_each_retry_goes_to_an_untried_pod(picker: str, key: str | None) -> None:
    env = make(5, picker=picker, retry=RetryPolicy(max_attempts=5))
    trace = env.run("GET", always(RESET), key=key)
    assert len(trace.ips) == 5 and len(set(trace.ips)) == 5
    assert isinstance(trace.error, httpx.ReadError)


def test_keyed_request_goes_to_the_keys_pod_first() -> None:
    env = make(5)
    first = env.run("GET", [200], key="user-42").ips[0]
    again = env.run("GET", [200], key="user-42").ips[0]
    retried = env.run("GET", [503, 200], key="user-42").ips
    assert again == first and retried[0] == first and retried[1] != first


def test_more_attempts_than_pods_go_round_again_without_a_fallback() -> None:
    env = make(2, retry=RetryPolicy(max_attempts=4))
    trace = env.run("GET", always(503))
    assert trace.delivered and len(trace.sends) == 4
    assert set(trace.ips[:2]) == {"10.0.0.1", "10.0.0.2"}  # both tried before any twice


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_attempts_are_capped(max_attempts: int) -> None:
    env = make(5, retry=RetryPolicy(max_attempts=max_attempts))
    trace = env.run("GET", always(503))
    assert trace.delivered and len(trace.sends) == max_attempts
    assert len(trace.backoffs) == max_attempts - 1


# -- the retry budget ----------------------------------------------------------------------------
@pytest.mark.parametrize(("action", "delivered"), [(503, True), (RESET, False), (REFUSED, False)])
def test_empty_budget_stops_retries_and_says_so(action: Action, delivered: bool) -> None:
    retry = RetryPolicy(budget_ratio=0.0, budget_min_per_second=0.0)
    env = make(3, retry=retry)
    trace = env.run("GET", [action, 200])
    assert len(trace.sends) == 1
    assert trace.call.budget_exhausted
    assert trace.report["retry_budget_exhausted"] is True
    if delivered:
        assert trace.delivered
    else:
        assert "retry budget exhausted" in notes(trace.error)


def test_budget_floor_refills_with_the_clock() -> None:
    env = make(3, retry=RetryPolicy(budget_ratio=0.0, budget_min_per_second=1.0))
    assert len(env.run("GET", [503, 200]).sends) == 2  # the floor's one token
    spent = env.run("GET", [503, 200])
    assert len(spent.sends) == 1 and spent.report["retry_budget_exhausted"]
    env.clock.advance(1.0)
    assert len(env.run("GET", [503, 200]).sends) == 2


def test_budget_grows_with_requests() -> None:
    env = make(3, retry=RetryPolicy(budget_ratio=0.5, budget_min_per_second=0.0))
    assert len(env.run("GET", [503, 200]).sends) == 1  # 0.5 banked: not a whole retry
    assert len(env.run("GET", [503, 200]).sends) == 2  # 1.0 banked
    assert env.router.budget.balance == pytest.approx(0.0)


# -- back-off ------------------------------------------------------------------------------------
def test_backoff_is_full_jitter_below_the_exponential_cap() -> None:
    retry = RetryPolicy(max_attempts=6, backoff_base=0.1, backoff_max=0.5, budget_ratio=10.0)
    env = make(6, retry=retry, seed=7)
    seen: list[list[float]] = [[] for _ in range(5)]
    for _ in range(60):
        backoffs = env.run("GET", always(503)).backoffs
        assert len(backoffs) == 5
        for n, seconds in enumerate(backoffs, start=1):
            assert 0.0 <= seconds <= min(0.5, 0.1 * 2 ** (n - 1))
            seen[n - 1].append(seconds)
    for n, values in enumerate(seen, start=1):
        cap = min(0.5, 0.1 * 2 ** (n - 1))
        assert min(values) < cap * 0.25 and max(values) > cap * 0.75  # spread over the range


def test_backoff_is_deterministic_with_a_seeded_rng() -> None:
    def backoffs(seed: int) -> list[float]:
        env = make(4, retry=RetryPolicy(max_attempts=4), seed=seed)
        return env.run("GET", always(503)).backoffs

    assert backoffs(3) == backoffs(3)
    assert backoffs(3) != backoffs(4)


def test_no_backoff_step_when_backoff_is_zero() -> None:
    env = make(3, retry=NO_BACKOFF)
    trace = env.run("GET", [503, 503, 200])
    assert [type(s) for s in trace.steps] == [Send, Send, Send, Deliver]


# -- the deadline --------------------------------------------------------------------------------
def test_deadline_clamps_each_try_then_fails() -> None:
    retry = RetryPolicy(deadline=1.0, per_try_timeout=0.4, backoff_base=0.0, backoff_max=0.0)
    env = make(3, retry=retry)
    trace = env.run("GET", [Slow(0.7, 503), Slow(0.5, 503)])
    timeouts = [s.timeout for s in trace.sends]
    assert timeouts[0] == pytest.approx(0.4)
    assert timeouts[1] == pytest.approx(0.3)  # what is left of the deadline
    error = trace.error
    assert isinstance(error, DeadlineExceeded) and isinstance(error, httpx.TimeoutException)
    assert "deadline of 1 s exceeded (2 attempt(s):" in str(error)


def test_a_post_cut_by_the_deadline_fails_with_the_deadline() -> None:
    # A blocking shell caps the attempt's timeouts at what is left: the read timeout it gets
    # is the deadline running out, for a POST (not retried) as for a GET.
    env = make(3, retry=RetryPolicy(deadline=0.5, backoff_base=0.0, backoff_max=0.0))
    trace = env.run("POST", [Slow(0.5, READ_TIMEOUT)])
    error = trace.error
    assert isinstance(error, DeadlineExceeded)
    assert isinstance(error.__cause__, httpx.ReadTimeout)
    assert "deadline of 0.5 s exceeded (1 attempt(s):" in str(error)
    # With time left, the same failure is the POST's own (it may have been processed).
    env = make(3, retry=RetryPolicy(deadline=5.0, per_try_timeout=0.5))
    assert isinstance(env.run("POST", [Slow(0.5, READ_TIMEOUT)]).error, httpx.ReadTimeout)


def test_deadline_alone_is_the_per_try_timeout() -> None:
    env = make(3, retry=RetryPolicy(deadline=2.0, backoff_base=0.0, backoff_max=0.0))
    trace = env.run("GET", [Slow(0.5, RESET), 200])
    assert [s.timeout for s in trace.sends] == [pytest.approx(2.0), pytest.approx(1.5)]
    assert trace.call.deadline == 2.0


def test_backoff_past_the_deadline_fails_before_sending() -> None:
    retry = RetryPolicy(deadline=0.05, backoff_base=0.25, backoff_max=0.25)
    env = make(3, retry=retry)
    call = env.start("GET")
    send = call.first()
    assert isinstance(send, Send)
    step = respond(call, 503)
    send.attempt.done(Outcome.GATEWAY_ERROR)
    assert isinstance(step, Backoff)
    env.clock.advance(0.06)  # the shell slept; the deadline is gone
    failed = call.feed(WAITED)
    assert isinstance(failed, Fail) and isinstance(failed.error, DeadlineExceeded)
    assert len(env.pool.begun) == 1


def test_no_deadline_and_no_per_try_timeout() -> None:
    env = make(1)
    assert [s.timeout for s in env.run("GET", [200]).sends] == [None]


# -- nowhere to send -----------------------------------------------------------------------------
def test_every_pod_refusing_without_fallback_is_no_endpoints_available() -> None:
    env = make(3, retry=RetryPolicy(max_attempts=3))
    trace = env.run("POST", always(REFUSED))
    assert len(set(trace.ips)) == 3
    error = trace.error
    assert isinstance(error, NoEndpointsAvailable)
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert "accepted a connection" in str(error) and "no fallback" in str(error)


def test_refusals_with_pods_left_untried_give_the_connect_error() -> None:
    env = make(5, retry=RetryPolicy(max_attempts=2))
    error = env.run("GET", always(REFUSED)).error
    assert type(error) is httpx.ConnectError and "2 attempt(s)" in notes(error)


def test_connect_timeouts_everywhere_give_the_timeout_itself() -> None:
    env = make(2, retry=RetryPolicy(max_attempts=2))
    error = env.run("GET", always(CONNECT_TIMEOUT)).error
    assert type(error) is httpx.ConnectTimeout


def test_no_members_and_a_discovery_error_is_discovery_error() -> None:
    cause = DiscoveryError("SERVFAIL")
    env = make(0, discovery_error=cause)
    trace = env.run("GET", [])
    error = trace.error
    assert isinstance(error, DiscoveryError) and error is not cause
    assert error.__cause__ is cause and "web-hl.default.svc.cluster.local" in str(error)
    assert trace.sends == []


def test_no_members_and_no_error_is_no_endpoints_available() -> None:
    env = make(0)
    error = env.run("GET", []).error
    assert isinstance(error, NoEndpointsAvailable) and "(0 in DNS, an empty answer)" in str(error)


def test_members_with_a_stale_error_are_still_used() -> None:
    env = make(2, discovery_error=DiscoveryError("SERVFAIL"))
    assert env.run("GET", [200]).delivered  # stale beats empty


# -- the fallback Service ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("action", [REFUSED, CONNECT_TIMEOUT])
def test_never_sent_goes_to_the_fallback(method: str, action: Err) -> None:
    env = make(2, fallback=True, retry=RetryPolicy(max_attempts=2))
    trace = env.run(method, always(action))
    assert isinstance(trace.steps[-2], SendToFallback) and trace.delivered
    report = trace.report
    assert report["fallback"] is True
    assert report["endpoint"] == FALLBACK
    assert report["hostname"] is None and report["ordinal"] is None
    assert report["service"] == FALLBACK_NAME and report["discovery_error"] is None
    assert report["attempts"][-1] == {"endpoint": FALLBACK, "fallback": True, "status": 200}
    assert [a.get("outcome") for a in report["attempts"][:-1]] == [action.outcome.value] * 2


def test_no_members_goes_straight_to_the_fallback_with_the_discovery_error() -> None:
    env = make(0, fallback=True, discovery_error=DiscoveryError("SERVFAIL"))
    trace = env.run("GET", [])
    assert [type(s) for s in trace.steps] == [SendToFallback, Deliver]
    assert trace.report["discovery_error"] == "DiscoveryError: SERVFAIL"
    assert trace.report["attempts"] == [{"endpoint": FALLBACK, "fallback": True, "status": 200}]


def test_maybe_processed_post_never_falls_back() -> None:
    env = make(2, fallback=True)
    trace = env.run("POST", [RESET])
    assert type(trace.error) is httpx.ReadError
    assert not any(isinstance(s, SendToFallback) for s in trace.steps)


def test_fallback_failure_is_raised_and_recorded() -> None:
    env = make(0, fallback=True)
    boom = httpx.ConnectError("fallback down")
    trace = env.run("GET", [], fallback=boom)
    assert trace.error is boom
    assert trace.call.attempts[-1].fallback and trace.call.attempts[-1].error == "ConnectError"


def test_fallback_that_cannot_be_resolved_is_raised_unrecorded() -> None:
    env = make(0, fallback=True)
    call = env.start("GET")
    assert isinstance(call.first(), SendToFallback)
    boom = DiscoveryError("no such Service")
    step = call.feed(FallbackFailed(None, boom))
    assert isinstance(step, Fail) and step.error is boom and call.attempts == []


def test_retries_left_after_every_pod_was_tried_go_to_the_fallback() -> None:
    env = make(2, fallback=True, retry=RetryPolicy(max_attempts=3))
    trace = env.run("GET", always(503))
    assert len(trace.sends) == 2 and isinstance(trace.steps[-2], SendToFallback)
    assert trace.report["fallback"] is True


# -- pinned to an ordinal ------------------------------------------------------------------------
def test_pinned_goes_to_that_pod_and_retries_on_it() -> None:
    env = make(3, retry=RetryPolicy(max_attempts=3))
    trace = env.run("GET", [503, RESET, 200], ordinal=2)
    assert trace.ips == ["10.0.0.3"] * 3 and trace.delivered
    assert trace.report["ordinal"] == 2 and trace.report["hostname"] == "web-2"
    assert trace.call.pinned_ordinal == 2


def test_pinned_pod_is_used_even_when_ejected() -> None:
    env = make(3)
    assert env.pool.eject(("10.0.0.2", 80))
    assert env.run("GET", [200], ordinal=1).ips == ["10.0.0.2"]


def test_pinned_ordinal_absent_when_srv_named_every_pod() -> None:
    env = make(3, statefulset="web", fallback=True)
    trace = env.run("GET", [], ordinal=7)
    error = trace.error
    assert isinstance(error, OrdinalNotFound)
    assert error.ordinal == 7 and error.available == (0, 1, 2)
    assert trace.lookups == [] and len(trace.steps) == 1  # no lookup, no fallback


def test_pinned_without_hostnames_or_statefulset_says_how_to_fix_it() -> None:
    env = make(pods(3, hostnames=False))
    error = env.run("GET", [], ordinal=1).error
    assert isinstance(error, OrdinalNotFound)
    assert "pass statefulset=<name>" in notes(error)


@pytest.mark.parametrize(
    ("endpoints", "port", "statefulset"),
    [
        (pods(3, hostnames=False), 80, "web"),  # a numeric port: A records, no hostnames
        (pods(3, hostnames=False, port=8080), "http", "web"),  # SRV too big to carry them
        ((*pods(1), *pods(3, hostnames=False)[1:]), 80, None),  # the set's name is inferred
    ],
)
def test_pinned_looks_the_pod_up_by_name(
    endpoints: tuple[Endpoint, ...], port: int | str, statefulset: str | None
) -> None:
    env = make(endpoints, port=port, statefulset=statefulset)
    pod_port = endpoints[-1].port
    web2 = Endpoint("10.0.0.3", pod_port, "web-2", 2)
    trace = env.run("GET", [200], ordinal=2, lookups={"web-2": web2})
    (lookup,) = trace.lookups
    assert lookup == LookupPod(
        2, "web-2", "web-2.web-hl.default.svc.cluster.local.", pod_port, fresh=False
    )
    assert trace.ips == ["10.0.0.3"] and trace.delivered
    # the Pod is a member (an A record of the Service): it shares the member's stats
    assert trace.sends[0].state is env.member("10.0.0.3", pod_port)
    # …and the report names the Pod found, even if the member's record has no hostname
    assert trace.report["hostname"] == "web-2" and trace.report["ordinal"] == 2
    assert trace.report["attempts"][0]["hostname"] == "web-2"


def test_pinned_pod_found_by_name_outside_the_pool() -> None:
    env = make(pods(2, hostnames=False), statefulset="web")
    web5 = Endpoint("10.0.0.50", 80, "web-5", 5)
    trace = env.run("GET", [503, 200], ordinal=5, lookups={"web-5": web5})
    assert trace.ips == ["10.0.0.50", "10.0.0.50"]
    assert len(trace.lookups) == 1  # a retry after an answer reuses what was found
    assert env.pool.member(web5.key) is None


def test_pinned_pod_looked_up_again_after_a_refusal() -> None:
    env = make(pods(3, hostnames=False), statefulset="web")
    answers = {"web-1": Endpoint("10.0.0.2", 80, "web-1", 1)}
    call = env.start("GET", ordinal=1)
    first = call.first()
    assert isinstance(first, LookupPod) and not first.fresh
    send = call.feed(Found(answers["web-1"]))
    assert isinstance(send, Send)
    step = call.feed(
        Failed(httpx.ConnectError("refused"), Verdict(Outcome.REFUSED, Failure.NOT_SENT))
    )
    while isinstance(step, Backoff):
        step = call.feed(WAITED)
    assert isinstance(step, LookupPod) and step.fresh and step.hostname == "web-1"
    moved = Endpoint("10.0.0.9", 80, "web-1", 1)  # the Pod came back at another address
    send = call.feed(Found(moved))
    assert isinstance(send, Send) and send.endpoint == moved
    assert isinstance(respond(call, 200), Deliver)
    send.attempt.done(Outcome.SUCCESS)
    assert call.report()["endpoint"] == "10.0.0.9:80"


def test_pinned_pod_refusing_while_the_pool_empties_is_looked_up_again() -> None:
    # A refusal asks discovery for an early round; it may land during the back-off and leave
    # the pool empty (or on other ports): the fresh lookup must still know the Pod's port.
    env = make(pods(2, hostnames=False, port=8080), port="http", statefulset="web")
    call = env.start("GET", ordinal=1)
    first = call.first()
    assert isinstance(first, LookupPod) and first.port == 8080
    send = call.feed(Found(Endpoint("10.0.0.2", 8080, "web-1", 1)))
    assert isinstance(send, Send)
    env.pool.update(Resolution((), 30))
    step = call.feed(
        Failed(httpx.ConnectError("refused"), Verdict(Outcome.REFUSED, Failure.NOT_SENT))
    )
    while isinstance(step, Backoff):
        step = call.feed(WAITED)
    assert isinstance(step, LookupPod) and step.fresh and step.port == 8080
    assert isinstance(call.feed(Found(None)), Fail)


def test_pinned_pod_dns_does_not_know_is_ordinal_not_found() -> None:
    env = make(pods(3, hostnames=False), statefulset="web", fallback=True)
    trace = env.run("GET", [], ordinal=4, lookups={"web-4": None})
    assert isinstance(trace.error, OrdinalNotFound) and trace.error.ordinal == 4
    assert [type(s) for s in trace.steps] == [LookupPod, Fail]


@pytest.mark.parametrize("action", [REFUSED, CONNECT_TIMEOUT, 503])
def test_pinned_never_falls_back(action: Action) -> None:
    env = make(3, fallback=True, retry=RetryPolicy(max_attempts=3))
    trace = env.run("POST" if action != 503 else "GET", always(action), ordinal=0)
    assert trace.ips == ["10.0.0.1"] * 3
    assert not any(isinstance(s, SendToFallback) for s in trace.steps)
    if isinstance(action, Err):
        assert type(trace.error) is action.kind  # not NoEndpointsAvailable: that Pod failed
    else:
        assert trace.delivered


@pytest.mark.parametrize(
    ("method", "options", "expected_ordinal"),
    [
        ("POST", {"key": "user-42"}, 0),  # writes_to wins over key= for writes
        ("PUT", {}, 0),
        ("DELETE", {}, 0),
        ("PATCH", {"key": "user-42"}, 0),
        ("GET", {"key": "user-42"}, None),  # reads shard as usual
        ("GET", {}, None),
        ("POST", {"ordinal": 2}, 2),  # an explicit ordinal wins over writes_to
        ("GET", {"ordinal": 1}, 1),
    ],
)
def test_writes_to_routes_writes(
    method: str, options: dict[str, Any], expected_ordinal: int | None
) -> None:
    env = make(3, writes_to=0)
    trace = env.run(method, [200], **options)
    assert trace.call.pinned_ordinal == expected_ordinal
    if expected_ordinal is not None:
        assert trace.ips == [f"10.0.0.{expected_ordinal + 1}"]
    if "key" in options and expected_ordinal is None:
        assert trace.ips == env.run(method, [200], **options).ips  # sharded: same Pod again


def test_writes_to_through_compose() -> None:
    discovery = StaticDiscovery([f"web-{i}=10.0.0.{i + 1}:80" for i in range(3)])
    clock = ManualClock()
    parts = compose(
        "web-hl.default",
        {
            "discovery": discovery,
            "nameservers": ["127.0.0.1:53"],
            "writes_to": 1,
            "clock": clock,
            "rng": random.Random(5),
        },
    )
    runtime = Runtime(parts.spec)
    runtime.pool.update(Resolution(discovery.endpoints, 30))
    router = parts.router(runtime)
    write = drive(router.start("POST", RequestOptions(key="k"), replayable=True), [200], clock)
    assert write.ips == ["10.0.0.2"]
    read = drive(router.start("GET", RequestOptions(), replayable=True), [200], clock)
    assert read.call.pinned_ordinal is None
    for state in runtime.pool.snapshot.members:
        assert state.in_flight == 0


# -- start_unhealthy -----------------------------------------------------------------------------
def test_pinned_pod_never_admitted_is_no_endpoints_available() -> None:
    env = make(3, start_unhealthy=True)
    error = env.run("GET", [], ordinal=1).error
    assert isinstance(error, NoEndpointsAvailable) and "start_unhealthy=True" in str(error)
    assert isinstance(env.run("GET", []).error, NoEndpointsAvailable)  # nothing admitted at all
    env.pool.set_health(("10.0.0.2", 80), True)
    assert env.run("GET", [200], ordinal=1).ips == ["10.0.0.2"]
    assert env.run("GET", [200]).ips == ["10.0.0.2"]  # the only admitted Pod


# -- cancellation and the books ------------------------------------------------------------------
def test_abandon_reports_cancelled_once() -> None:
    env = make(3)
    call = env.start("GET")
    send = call.first()
    assert isinstance(send, Send)
    assert send.state.in_flight == 1
    call.feed(ABANDONED)
    with pytest.raises(RuntimeError, match="Abandoned fed to a call that was abandoned"):
        call.feed(ABANDONED)  # the call is over: a second cancel is a shell's mistake
    assert send.attempt.finished and send.state.in_flight == 0
    assert env.pool.outcomes() == [Outcome.CANCELLED]
    assert send.state.failures == 0 and send.state.consecutive_failures == 0


def test_abandon_during_backoff_reports_nothing_and_ends_the_call() -> None:
    env = make(3)
    call = env.start("GET")
    send = call.first()
    assert isinstance(send, Send)
    step = respond(call, 503)
    send.attempt.done(Outcome.GATEWAY_ERROR)
    assert isinstance(step, Backoff)
    call.feed(ABANDONED)  # cancelled while sleeping: no attempt in flight
    assert env.pool.outcomes() == [Outcome.GATEWAY_ERROR]
    with pytest.raises(RuntimeError, match="Waited fed to a call that was abandoned"):
        call.feed(WAITED)


def test_a_delivered_call_takes_no_abandon() -> None:
    env = make(3)
    call = env.start("GET")
    send = call.first()
    assert isinstance(send, Send)
    assert isinstance(respond(call, 200), Deliver)
    with pytest.raises(RuntimeError, match="that ended with Deliver: it accepts nothing more"):
        call.feed(ABANDONED)  # the response's body reports its attempt, not the call
    send.attempt.done(Outcome.SUCCESS)
    assert env.pool.outcomes() == [Outcome.SUCCESS]


def test_failure_already_reported_by_the_body_is_not_reported_again() -> None:
    env = make(2, retry=NO_BACKOFF)
    trace = env.run("GET", [BODY_BROKE, 200])
    assert env.pool.outcomes() == [Outcome.RESET, Outcome.SUCCESS]
    assert trace.report["attempts"][0]["error"] == "RemoteProtocolError"


def test_many_mixed_calls_leave_the_books_balanced() -> None:
    env = make(4, fallback=True, retry=RetryPolicy(max_attempts=3, budget_ratio=1.0), seed=99)
    rng = random.Random(99)
    actions: list[Action] = [200, 200, 503, 502, RESET, READ_TIMEOUT, REFUSED, BODY_BROKE]
    for i in range(200):
        method = rng.choice(["GET", "POST", "PUT"])
        options: dict[str, Any] = rng.choice([{}, {"key": f"k{i % 7}"}, {"ordinal": i % 4}])
        env.run(method, lambda send: rng.choice(actions), **options)
        env.clock.advance(rng.uniform(0, 2))
    assert len(env.pool.reports) == len(env.pool.begun) > 200


def test_nothing_is_sent_after_the_router_closes() -> None:
    # The shells only call router.close(); the decision "no retry, no fallback, no new send" is
    # the core's, so both clients get it alike.
    env = make(fallback=True)
    call = env.start("GET")
    step = call.first()
    assert isinstance(step, Send)
    env.router.close()
    error = httpx.ReadError("connection closed by the client's own close")
    failed = call.feed(Failed(error, Verdict(Outcome.RESET, Failure.MAYBE_PROCESSED)))
    assert isinstance(failed, Fail) and failed.error is error  # not retried, not the fallback
    assert "closed" in notes(error)
    assert step.state.in_flight == 0
    later = env.start("GET").first()
    assert isinstance(later, Fail) and isinstance(later.error, ClientClosed)


# -- hedging: two attempts in flight ----------------------------------------------------------
def hedge_env(**kwargs: Any) -> Env:
    return make(3, retry=NO_BACKOFF, hedge=HedgePolicy(delay=0.05), **kwargs)


def hedged_race(env: Env) -> tuple[Call, Send, Send, list[Event]]:
    """An observed GET, its first attempt, and the hedge sent when the delay passed."""
    seen: list[Event] = []
    env.router.events.subscribe(seen.append)
    call = env.start("GET")
    call.log.observed = True
    first = call.first()
    assert isinstance(first, Send) and first.hedge_after == 0.05
    env.clock.advance(0.05)
    second = call.feed(HEDGE_DUE)
    assert second is not None and second.endpoint != first.endpoint
    return call, first, second, seen


def test_hedge_goes_to_another_pod_and_the_winner_is_delivered() -> None:
    env = hedge_env()
    call, first, second, seen = hedged_race(env)
    with pytest.raises(RuntimeError, match="HedgeDue fed to a call waiting on two racing"):
        call.feed(HEDGE_DUE)  # one race at a time: Race keeps one other attempt
    assert first.state.in_flight == 1 and second.state.in_flight == 1
    env.clock.advance(0.01)
    call.feed(Settled(second))  # the hedge answered first: the first attempt is cancelled
    assert first.attempt.finished and first.state.in_flight == 0
    step = respond(call, 200)
    assert isinstance(step, Deliver)
    second.attempt.done(Outcome.SUCCESS)
    report = call.report()
    assert report["endpoint"] == second.endpoint.authority
    assert [a.get("error") or a.get("status") for a in report["attempts"]] == ["cancelled", 200]
    started = [e for e in seen if isinstance(e, AttemptStarted)]
    finished = [e for e in seen if isinstance(e, AttemptFinished)]
    assert [e.resend_count for e in started] == [0, 1]
    assert {e.start for e in finished} == set(started) and len(finished) == 2


def test_first_attempt_winning_cancels_the_hedge() -> None:
    env = hedge_env()
    call = env.start("GET")
    first = call.first()
    assert isinstance(first, Send)
    second = call.feed(HEDGE_DUE)
    assert second is not None
    call.feed(Settled(first))
    assert second.attempt.finished and second.state.in_flight == 0
    assert isinstance(respond(call, 200), Deliver)
    first.attempt.done(Outcome.SUCCESS)
    assert call.report()["endpoint"] == first.endpoint.authority


def test_a_failed_winner_is_retried_and_counts_the_cancelled_loser() -> None:
    env = hedge_env()
    call = env.start("GET")
    first = call.first()
    assert isinstance(first, Send)
    assert call.feed(HEDGE_DUE) is not None
    call.feed(Settled(first))
    step = call.feed(
        Failed(httpx.ReadError("reset"), Verdict(Outcome.RESET, Failure.MAYBE_PROCESSED))
    )
    assert isinstance(step, Send)  # attempt 3 of 3
    assert isinstance(respond(call, 200), Deliver)
    step.attempt.done(Outcome.SUCCESS)
    assert len(call.attempts) == 3


def test_not_hedged_writes_pinned_requests_or_without_a_policy() -> None:
    env = hedge_env()
    for call in (env.start("POST"), env.start("GET", ordinal=1), make(3).start("GET")):
        step = call.first()
        assert isinstance(step, Send) and step.hedge_after is None
        with pytest.raises(RuntimeError, match="HedgeDue fed to a call waiting on a Send;"):
            call.feed(HEDGE_DUE)
        call.feed(ABANDONED)


def test_cancelled_during_a_race_reports_both_attempts() -> None:
    env = hedge_env()
    call = env.start("GET")
    first = call.first()
    second = call.feed(HEDGE_DUE)
    assert isinstance(first, Send) and second is not None
    call.feed(ABANDONED)
    assert first.attempt.finished and second.attempt.finished


def test_a_hedge_the_budget_refuses_is_not_sent() -> None:
    clock_budget = RetryBudget(0.0, 0.0)
    env = make(3, retry=NO_BACKOFF, budget=clock_budget, hedge=HedgePolicy(delay=0.05))
    call = env.start("GET")
    step = call.first()
    assert isinstance(step, Send) and step.hedge_after == 0.05
    assert call.feed(HEDGE_DUE) is None
    assert isinstance(respond(call, 200), Deliver)
    step.attempt.done(Outcome.SUCCESS)
    assert len(call.attempts) == 1


def test_no_hedge_once_the_deadline_has_passed_and_nothing_is_counted() -> None:
    clock_budget = RetryBudget(0.0, 1.0)  # exactly one token: a hedge would take it
    retry = RetryPolicy(backoff_base=0.0, backoff_max=0.0, deadline=0.25)
    env = make(3, retry=retry, budget=clock_budget, hedge=HedgePolicy(delay=0.25))
    call = env.start("GET")
    first = call.first()
    assert isinstance(first, Send) and first.hedge_after == 0.25
    env.clock.advance(0.25)  # the hedge delay and the deadline end together (exact in binary)
    assert call.feed(HEDGE_DUE) is None  # not an assertion failure on a Fail step
    assert call.tried == {first.state.key} and env.pool.begun == [first.attempt]
    assert call.race is not None and call.race.other is None and call.race.hedges == 0
    assert clock_budget.try_withdraw()  # the token is still there (taken now: no retry)
    timeout = httpx.ReadTimeout("per-try timeout")
    step = call.feed(Failed(timeout, Verdict(Outcome.TIMEOUT, Failure.MAYBE_PROCESSED)))
    assert isinstance(step, Fail) and isinstance(step.error, DeadlineExceeded)
    assert step.error.__cause__ is timeout  # the deadline ran out with the attempt


def test_a_keyed_hedge_goes_to_the_keys_next_owner_as_a_retry_does() -> None:
    # Eight Pods: a hedge picked by the balancing picker would miss the next owner 6 times in 7.
    budget = RetryBudget(0.0, 1000.0)
    env = make(8, retry=NO_BACKOFF, budget=budget, hedge=HedgePolicy(delay=0.05))
    for n in range(12):
        hedged = env.start("GET", key=f"user-{n}")
        first = hedged.first()
        hedge = hedged.feed(HEDGE_DUE)
        assert isinstance(first, Send) and hedge is not None
        retried = env.start("GET", key=f"user-{n}")
        owner = retried.first()
        assert isinstance(owner, Send) and owner.endpoint == first.endpoint
        reset = httpx.ReadError("reset")
        retry = retried.feed(Failed(reset, Verdict(Outcome.RESET, Failure.MAYBE_PROCESSED)))
        assert isinstance(retry, Send)
        assert hedge.endpoint == retry.endpoint, f"user-{n}"
        hedged.feed(ABANDONED)
        retried.feed(ABANDONED)


def test_a_first_attempt_beaten_by_its_hedge_is_a_timeout_a_beaten_hedge_nothing() -> None:
    env = hedge_env()
    call, first, hedge, seen = hedged_race(env)
    env.clock.advance(0.02)  # the hedge answers in 20 ms: the first had none in 70
    call.feed(Settled(hedge))
    slow = first.state
    assert env.pool.reports[-1] == (first.attempt, Outcome.TIMEOUT)
    latency = env.pool.latency.decayed(slow, env.clock())
    assert slow.consecutive_failures == 1 and latency == pytest.approx(0.07)  # a lower bound
    assert isinstance(respond(call, 200), Deliver)
    hedge.attempt.done(Outcome.SUCCESS)
    assert call.report()["attempts"][0] == {
        "endpoint": slow.endpoint.authority,
        "hostname": slow.endpoint.hostname,
        "error": "cancelled",
        "outcome": "timeout",
    }
    lost = [
        e for e in seen if isinstance(e, AttemptFinished) and e.address == slow.endpoint.authority
    ]
    assert [(e.error, e.outcome) for e in lost] == [("cancelled", "timeout")]

    other = env.start("GET")
    first = other.first()
    hedge = other.feed(HEDGE_DUE)
    assert isinstance(first, Send) and hedge is not None
    env.clock.advance(0.01)
    state = hedge.state

    def marks() -> tuple[int, int, float | None]:
        return state.consecutive_failures, state.failures, env.pool.latency.decayed(state, 0.0)

    before = marks()
    other.feed(Settled(first))  # the first answered: the hedge says nothing about its Pod
    assert env.pool.reports[-1] == (hedge.attempt, Outcome.CANCELLED)
    assert marks() == before
    assert other.attempts[-1].outcome is Outcome.CANCELLED
    assert isinstance(respond(other, 200), Deliver)
    first.attempt.done(Outcome.SUCCESS)


def test_a_pod_whose_first_attempts_always_lose_to_hedges_is_ejected() -> None:
    env = hedge_env()
    silent = None
    for _ in range(OutlierPolicy().consecutive_failures):
        call = env.start("GET", key="k")  # the key's owner gets every first attempt
        first = call.first()
        assert isinstance(first, Send) and (silent is None or first.state is silent)
        silent = first.state
        env.clock.advance(0.05)
        hedge = call.feed(HEDGE_DUE)
        assert hedge is not None
        call.feed(Settled(hedge))
        assert isinstance(respond(call, 200), Deliver)
        hedge.attempt.done(Outcome.SUCCESS)
    assert silent is not None and silent.ejected_until is not None
    assert silent not in env.pool.snapshot.eligible


def test_a_race_cut_short_by_the_clients_close_counts_against_no_pod() -> None:
    env = hedge_env()
    call, first, hedge, _ = hedged_race(env)
    env.router.close()  # the close breaks both; the hedge's error happens to come first
    call.feed(Settled(hedge))
    assert env.pool.reports[-1] == (first.attempt, Outcome.CANCELLED)
    step = call.feed(
        Failed(httpx.ReadError("closed"), Verdict(Outcome.RESET, Failure.MAYBE_PROCESSED))
    )
    assert isinstance(step, Fail)
    assert env.pool.outcomes()[-2:] == [Outcome.CANCELLED, Outcome.CANCELLED]


# -- the protocol: one way in, and only what the call waits for ----------------------------------
Steps = list[Step | None]
Feed = Result | Callable[[Steps], object]
"""A result to feed, or what makes one from the steps handed out so far (a fresh error, or
``Settled`` naming a Send); anything else a shell might wrongly feed, for the refusals."""


def ok(steps: Steps | None = None) -> Responded:
    return Responded(200, ANSWERED)


def unavailable(steps: Steps | None = None) -> Responded:
    return Responded(503, RetryPolicy().judge(503, {}))


def reset(steps: Steps | None = None) -> Failed:
    return Failed(httpx.ReadError("reset"), Verdict(Outcome.RESET, Failure.MAYBE_PROCESSED))


def found(endpoint: Endpoint | None) -> Callable[[Steps], Found]:
    return lambda steps: Found(endpoint)


def to_fallback_failed(steps: Steps) -> FallbackFailed:
    return FallbackFailed(None, httpx.ConnectError("the fallback's name did not resolve"))


def to_fallback_ok(steps: Steps) -> FallbackResponded:
    return FallbackResponded(FALLBACK, 200)


def won_by(index: int) -> Callable[[Steps], Settled]:
    """``Settled`` naming the ``index``-th Send handed out (0: the first attempt, 1: its hedge)."""
    return lambda steps: Settled([s for s in steps if isinstance(s, Send)][index])


def made(item: Feed, steps: Steps) -> Any:
    return item(steps) if callable(item) else item


def play(call: Call, feeds: Sequence[Feed]) -> Steps:
    """Play a shell feeding ``feeds`` in turn: every step handed out (None: the result gets no
    step), ``first()``'s included. A response's body reports its outcome once it was fed, as a
    real shell's does (read and closed, or closed unread when not delivered)."""
    steps: Steps = [call.first()]
    answering = steps[0]
    for item in feeds:
        result = made(item, steps)
        step = call.feed(result)
        if isinstance(result, Settled):
            answering = result.winner
        elif isinstance(result, Responded):
            assert isinstance(answering, Send)
            answering.attempt.done(result.verdict.outcome)
        if isinstance(step, Send) and result is not HEDGE_DUE:
            answering = step
        steps.append(step)
    return steps


LOOKUP: dict[str, Any] = {"endpoints": pods(3, hostnames=False), "statefulset": "web"}
FALLBACK_ONLY: dict[str, Any] = {"endpoints": 0, "fallback": True}
RACING: dict[str, Any] = {"retry": NO_BACKOFF, "hedge": HedgePolicy(delay=0.05)}
DRY_RACING: dict[str, Any] = {**RACING, "budget": RetryBudget(0.0, 0.0)}
WEB_1 = Endpoint("10.0.0.2", 80, "web-1", 1)
PINNED = {"ordinal": 1}


@pytest.mark.parametrize(
    ("env_args", "options", "feeds", "expected"),
    [
        pytest.param({}, {}, [ok], ["Send", "Deliver"], id="plain"),
        pytest.param(
            {"retry": NO_BACKOFF}, {}, [reset, ok], ["Send", "Send", "Deliver"], id="retried"
        ),
        pytest.param(
            {},
            {},
            [unavailable, WAITED, ok],
            ["Send", "Backoff", "Send", "Deliver"],
            id="backed-off",
        ),
        pytest.param(
            LOOKUP, PINNED, [found(WEB_1), ok], ["LookupPod", "Send", "Deliver"], id="pinned-lookup"
        ),
        pytest.param(LOOKUP, PINNED, [found(None)], ["LookupPod", "Fail"], id="pinned-not-found"),
        pytest.param(
            FALLBACK_ONLY, {}, [to_fallback_ok], ["SendToFallback", "Deliver"], id="fallback"
        ),
        pytest.param(
            FALLBACK_ONLY,
            {},
            [to_fallback_failed],
            ["SendToFallback", "Fail"],
            id="fallback-failed",
        ),
        pytest.param(
            RACING,
            {},
            [HEDGE_DUE, won_by(0), ok],
            ["Send", "Send", None, "Deliver"],
            id="first-wins",
        ),
        pytest.param(
            RACING,
            {},
            [HEDGE_DUE, won_by(1), ok],
            ["Send", "Send", None, "Deliver"],
            id="hedge-wins",
        ),
        pytest.param(
            RACING,
            {},
            [HEDGE_DUE, won_by(1), reset, ok],
            ["Send", "Send", None, "Send", "Deliver"],
            id="race-winner-failed-then-retried",
        ),
        pytest.param(RACING, {}, [ok], ["Send", "Deliver"], id="hedged-answered-in-time"),
        pytest.param(
            DRY_RACING, {}, [HEDGE_DUE, ok], ["Send", None, "Deliver"], id="hedge-not-sent"
        ),
        pytest.param({}, {}, [ABANDONED], ["Send", None], id="abandoned-sending"),
        pytest.param(
            {}, {}, [unavailable, ABANDONED], ["Send", "Backoff", None], id="abandoned-backing-off"
        ),
        pytest.param(LOOKUP, PINNED, [ABANDONED], ["LookupPod", None], id="abandoned-looking-up"),
        pytest.param(
            FALLBACK_ONLY, {}, [ABANDONED], ["SendToFallback", None], id="abandoned-to-fallback"
        ),
        pytest.param(
            RACING, {}, [HEDGE_DUE, ABANDONED], ["Send", "Send", None], id="abandoned-racing"
        ),
    ],
)
def test_each_kind_of_call_is_one_sequence_of_results(
    env_args: dict[str, Any],
    options: dict[str, Any],
    feeds: list[Feed],
    expected: list[str | None],
) -> None:
    env = make(**{"endpoints": 3, **env_args})
    call = env.start("GET", **options)
    steps = play(call, feeds)
    assert [None if s is None else type(s).__name__ for s in steps] == expected
    for step in steps:
        if isinstance(step, Send):
            assert step.attempt.finished  # by its body, by the call, or as a race's loser
    # The call is over: whatever comes next is a shell's mistake, and changes nothing.
    reports = list(env.pool.reports)
    with pytest.raises(RuntimeError, match=r"fed to a call (that ended with|that was abandoned)"):
        call.feed(ok())
    assert env.pool.reports == reports


@pytest.mark.parametrize(
    ("env_args", "options", "before", "wrong", "error"),
    [
        pytest.param(
            {},
            {},
            None,
            ok,
            "^Responded fed to a call not started: first\\(\\) gives",
            id="before-first",
        ),
        pytest.param(
            {},
            {},
            [],
            found(WEB_1),
            "^Found fed to a call waiting on a Send; it accepts Responded, Failed, Abandoned$",
            id="found-without-a-lookup",
        ),
        pytest.param(
            {},
            {},
            [],
            WAITED,
            "^Waited fed to a call waiting on a Send;",
            id="waited-while-sending",
        ),
        pytest.param(
            {},
            {},
            [unavailable],
            ok,
            "^Responded fed to a call waiting on a Backoff; it accepts Waited, Abandoned$",
            id="responded-while-backing-off",
        ),
        pytest.param(
            LOOKUP,
            PINNED,
            [],
            ok,
            "^Responded fed to a call waiting on a LookupPod; it accepts Found, Abandoned$",
            id="responded-to-a-lookup",
        ),
        pytest.param(
            FALLBACK_ONLY,
            {},
            [],
            ok,
            "waiting on a SendToFallback; it accepts FallbackResponded, FallbackFailed, Abandoned$",
            id="a-pods-answer-to-the-fallback",
        ),
        pytest.param(
            {},
            {},
            [],
            to_fallback_ok,
            "^FallbackResponded fed to a call waiting on a Send;",
            id="the-fallbacks-answer-to-a-pod",
        ),
        pytest.param(
            RACING,
            {},
            [HEDGE_DUE],
            ok,
            "^Responded fed to a call waiting on two racing Sends .*; it accepts Settled,"
            " Abandoned$",
            id="race-not-settled",
        ),
        pytest.param(
            RACING, {}, [HEDGE_DUE], reset, "^Failed fed to a call waiting on two", id="race-failed"
        ),
        pytest.param(
            RACING,
            {},
            [HEDGE_DUE],
            HEDGE_DUE,
            "^HedgeDue fed to a call waiting on two",
            id="hedge-twice",
        ),
        pytest.param(
            {}, {}, [], HEDGE_DUE, "^HedgeDue fed to a call waiting on a Send;", id="hedge-unhedged"
        ),
        pytest.param(
            DRY_RACING,
            {},
            [HEDGE_DUE],
            HEDGE_DUE,
            "^HedgeDue fed to a call waiting on a Send;",
            id="due-twice",
        ),
        pytest.param(
            RACING,
            {},
            [HEDGE_DUE, won_by(0)],
            HEDGE_DUE,
            "^HedgeDue fed to a call waiting on a Send;",
            id="hedge-after-the-race",
        ),
        pytest.param(
            RACING,
            {},
            [],
            won_by(0),
            "^Settled fed to a call waiting on a hedged Send; it accepts Responded, Failed,"
            " Abandoned, HedgeDue$",
            id="settled-without-a-race",
        ),
        pytest.param(
            RACING,
            {},
            [HEDGE_DUE, won_by(0)],
            won_by(0),
            "^Settled fed to a call waiting on a Send;",
            id="settled-twice",
        ),
        pytest.param(
            {},
            {},
            [ok],
            ABANDONED,
            "^Abandoned fed to a call that ended with Deliver: it accepts nothing more$",
            id="after-deliver",
        ),
        pytest.param(
            LOOKUP,
            PINNED,
            [found(None)],
            ok,
            "^Responded fed to a call that ended with Fail",
            id="after-fail",
        ),
        pytest.param(
            {},
            {},
            [ABANDONED],
            ok,
            "^Responded fed to a call that was abandoned",
            id="after-abandoned",
        ),
        pytest.param(
            {},
            {},
            [],
            (200, ANSWERED),
            "^tuple fed to a call waiting on a Send;",
            id="not-a-result",
        ),
    ],
)
def test_a_result_the_call_is_not_waiting_for_is_refused(
    env_args: dict[str, Any],
    options: dict[str, Any],
    before: list[Feed] | None,
    wrong: Feed,
    error: str,
) -> None:
    env = make(**{"endpoints": 3, **env_args})
    call = env.start("GET", **options)
    steps = [] if before is None else play(call, before)
    state, reports, records = call._state, list(env.pool.reports), list(call.attempts)
    with pytest.raises(RuntimeError, match=error):
        call.feed(made(wrong, steps))
    # Refused before anything happened: the call still waits for what it waited for.
    assert call._state is state and env.pool.reports == reports and call.attempts == records
    if Abandoned in call._state.accepts:
        call.feed(ABANDONED)  # what is still in flight ends: the books balance


def test_first_is_asked_once() -> None:
    env = make(3)
    call = env.start("GET")
    send = call.first()
    with pytest.raises(
        RuntimeError, match=r"^first\(\) on a call already started \(waiting on a Send\)"
    ):
        call.first()
    assert isinstance(send, Send) and env.pool.begun == [send.attempt]  # no second attempt
    call.feed(ABANDONED)


def test_settled_must_name_one_of_the_racing_sends() -> None:
    env = hedge_env()
    call, first, hedge, _ = hedged_race(env)
    other = env.start("GET")
    stranger = other.first()
    assert isinstance(stranger, Send)
    with pytest.raises(
        RuntimeError, match=r"^Settled names a Send to .* not one of the two racing$"
    ):
        call.feed(Settled(stranger))
    assert not first.attempt.finished and not hedge.attempt.finished  # nothing was settled
    call.feed(Settled(hedge))
    assert first.attempt.finished
    assert isinstance(call.feed(ok()), Deliver)
    hedge.attempt.done(Outcome.SUCCESS)
    other.feed(ABANDONED)


def test_the_old_input_methods_are_gone() -> None:
    # One way in: a shell cannot call the core out of order through a side door.
    public = {name for name in dir(Call) if not name.startswith("_")}
    old = {"responded", "failed", "abandon", "hedge", "settle", "waited", "found"}
    assert not public & (old | {"fallback_responded", "fallback_failed"})
    assert {"first", "feed"} <= public
