"""The event stream of the pure core: what the pool and the call core emit, and when.

No sockets: a real pool, balancer and router around a :class:`ManualClock`, and a recording
observer. Logs, metrics and spans are all built from these events, so this pins them once.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from headlesslb.core.balancer import Balancer
from headlesslb.core.call import (
    ABANDONED,
    Call,
    Deliver,
    Fail,
    Failed,
    FallbackResponded,
    Responded,
    Router,
    Send,
    SendToFallback,
    Step,
)
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.events import (
    AttemptFinished,
    AttemptStarted,
    DiscoveryRound,
    EndpointEjected,
    EndpointReadmitted,
    EndpointsChanged,
    Event,
    EventHub,
    FallbackEngaged,
    FallbackLeft,
    HealthChanged,
    ReadmitReason,
    RetryBudgetExhausted,
    RetryScheduled,
)
from headlesslb.core.names import expand_service_name
from headlesslb.core.options import RequestOptions
from headlesslb.core.pickers import ConsistentHash, Ordinal, make_picker
from headlesslb.core.pool import Outcome, OutlierPolicy, Pool
from headlesslb.core.retry import Failure, RetryBudget, RetryPolicy, Verdict
from headlesslb.errors import ConfigurationError
from headlesslb.telemetry.logs import LogObserver

SERVICE = expand_service_name("web-hl.default")
PODS = tuple(Endpoint(f"10.0.0.{i + 1}", 80, f"web-{i}", i) for i in range(3))


class Recorder:
    """An observer keeping every event; ``attempts`` says whether it wants attempt events."""

    def __init__(self, attempts: bool = True) -> None:
        self.events: list[Event] = []
        self.attempts = attempts

    def wants_attempts(self) -> bool:
        return self.attempts

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def make(
    *, fallback: bool = False, budget: RetryBudget | None = None, attempts: bool = True
) -> tuple[ManualClock, Pool, Router, Recorder]:
    clock = ManualClock()
    rng = random.Random(7)
    hub = EventHub(SERVICE.host)
    recorder = Recorder(attempts)
    hub.subscribe(recorder)
    pool = Pool(OutlierPolicy(base_ejection=10, jitter=0), clock=clock, rng=rng, events=hub)
    pool.update(Resolution(PODS, 30))
    balancer = Balancer(
        pool,
        make_picker("round_robin", rng=rng, clock=clock),
        sharding=ConsistentHash(),
        ordinal=Ordinal(),
    )
    retry = RetryPolicy(backoff_base=0, backoff_max=0)
    router = Router(
        service=SERVICE,
        pool=pool,
        balancer=balancer,
        retry=retry,
        budget=budget or retry.budget(clock),
        rng=rng,
        port=80,
        clock=clock,
        has_fallback=fallback,
        fallback_name="web-lb" if fallback else None,
        events=hub,
    )
    return clock, pool, router, recorder


def respond(call: Call, status: int) -> Step:
    """Play the shell for an answer: the core gets the verdict the sender made of it."""
    return call.feed(Responded(status, call.router.retry.judge(status, {})))


def test_membership_changes_name_who_joined_and_who_left() -> None:
    _, pool, _, recorder = make()
    (first,) = recorder.of(EndpointsChanged)
    assert first.added == PODS and first.removed == () and first.counts.total == 3
    pool.update(Resolution((*PODS[1:], Endpoint("10.0.0.9", 80, "web-3", 3)), 30))
    pool.update(Resolution((*PODS[1:], Endpoint("10.0.0.9", 80, "web-3", 3)), 30))  # unchanged
    changes = recorder.of(EndpointsChanged)
    assert len(changes) == 2
    assert [e.hostname for e in changes[1].added] == ["web-3"]
    assert changes[1].removed == (PODS[0],)


def test_a_refused_connection_ejects_once_and_expiry_readmits() -> None:
    clock, pool, _router, recorder = make()
    state = pool.member(PODS[1].key)
    assert state is not None
    for _ in range(3):  # a second refusal while ejected is no second ejection
        pool.begin(state).done(Outcome.REFUSED)
    (ejected,) = recorder.of(EndpointEjected)
    assert ejected.endpoint == PODS[1] and ejected.reason == "connection refused"
    assert ejected.duration == 10 and ejected.counts.ejected == 1
    assert ejected.service == "web-hl.default.svc.cluster.local"
    clock.advance(10.5)
    assert pool.snapshot.eligible  # reading the snapshot applies the expiry
    (back,) = recorder.of(EndpointReadmitted)
    assert back.endpoint == PODS[1] and back.reason is ReadmitReason.EXPIRED
    assert back.counts.ejected == 0


def test_consecutive_failures_say_how_many_and_the_last_outcome() -> None:
    _, pool, _, recorder = make()
    state = pool.member(PODS[0].key)
    assert state is not None
    for _ in range(5):
        pool.begin(state).done(Outcome.GATEWAY_ERROR)
    (ejected,) = recorder.of(EndpointEjected)
    assert ejected.reason == "5 consecutive failures (last: gateway_error)"


def test_health_flips_and_a_health_check_ending_an_ejection() -> None:
    _, pool, _, recorder = make()
    pool.set_health(PODS[2].key, False)
    pool.set_health(PODS[2].key, False)  # no flip, no event
    (flip,) = recorder.of(HealthChanged)
    assert flip.endpoint == PODS[2] and not flip.healthy and flip.counts.unhealthy == 1
    assert pool.eject(PODS[0].key)
    assert pool.end_ejection(PODS[0].key)
    (back,) = recorder.of(EndpointReadmitted)
    assert back.reason is ReadmitReason.HEALTH_CHECK
    assert recorder.of(EndpointEjected)[0].reason == "ejected on request"


def test_a_retry_shows_as_a_failed_attempt_then_a_resend() -> None:
    _, _, router, recorder = make()
    call = router.start("GET", RequestOptions(), replayable=True, url="http://web-hl/x")
    step = call.first()
    assert isinstance(step, Send)
    step = call.feed(
        Failed(ConnectionError("boom"), Verdict(Outcome.CONNECT_FAILURE, Failure.NOT_SENT))
    )
    assert isinstance(step, Send)
    step.attempt.done(Outcome.SUCCESS)
    assert isinstance(respond(call, 200), Deliver)
    started = recorder.of(AttemptStarted)
    finished = recorder.of(AttemptFinished)
    assert [s.resend_count for s in started] == [0, 1]
    assert [f.start for f in finished] == started
    assert finished[0].error == "ConnectionError" and finished[0].outcome == "connect_failure"
    assert finished[1].status == 200 and finished[1].error is None
    assert started[0].url == "http://web-hl/x" and started[0].endpoint != started[1].endpoint
    (retry,) = recorder.of(RetryScheduled)
    assert retry.retry == 1 and retry.failure == "ConnectionError"
    kinds = [type(e).__name__ for e in recorder.events if not isinstance(e, EndpointsChanged)]
    assert kinds == [
        "AttemptStarted",
        "AttemptFinished",
        "RetryScheduled",
        "AttemptStarted",
        "AttemptFinished",
    ]


def test_headers_an_observer_adds_go_with_that_attempt_only() -> None:
    _, _, router, _recorder = make()

    def tracer(event: Event) -> None:
        if isinstance(event, AttemptStarted):
            event.headers["traceparent"] = f"attempt-{event.resend_count}"

    router.events.subscribe(tracer)
    call = router.start("GET", RequestOptions(), replayable=True)
    step = call.first()
    assert isinstance(step, Send) and step.headers == (("traceparent", "attempt-0"),)
    step.attempt.done(Outcome.SUCCESS)
    respond(call, 200)


def test_no_attempt_events_when_no_observer_wants_them() -> None:
    _, _, router, recorder = make(attempts=False)
    call = router.start("GET", RequestOptions(), replayable=True)
    step = call.first()
    assert isinstance(step, Send) and step.headers == ()
    step.attempt.done(Outcome.SUCCESS)
    respond(call, 200)
    assert not recorder.of(AttemptStarted) and not recorder.of(AttemptFinished)


def test_fallback_engages_once_and_leaves_when_a_pod_answers() -> None:
    _, pool, router, recorder = make(fallback=True)
    pool.update(Resolution((), 30))  # every Pod gone
    for _ in range(3):
        call = router.start("GET", RequestOptions(), replayable=True)
        step = call.first()
        assert isinstance(step, SendToFallback)
        assert isinstance(call.feed(FallbackResponded("10.96.0.10:80", 200)), Deliver)
    (engaged,) = recorder.of(FallbackEngaged)
    assert engaged.fallback == "web-lb"
    assert engaged.reason == "no usable endpoint (0 in DNS, an empty answer)"
    fallback_attempts = [f for f in recorder.of(AttemptFinished) if f.start.fallback]
    assert len(fallback_attempts) == 3 and fallback_attempts[0].address == "10.96.0.10:80"
    pool.update(Resolution(PODS, 30))
    for _ in range(2):
        call = router.start("GET", RequestOptions(), replayable=True)
        step = call.first()
        assert isinstance(step, Send)
        step.attempt.done(Outcome.SUCCESS)
        respond(call, 200)
    assert len(recorder.of(FallbackLeft)) == 1


def test_budget_exhaustion_marks_the_first_denial_of_a_streak() -> None:
    _, _pool, router, recorder = make(budget=RetryBudget(0.0, 0.0))
    for _ in range(3):
        call = router.start("GET", RequestOptions(), replayable=True)
        step = call.first()
        assert isinstance(step, Send)
        step.attempt.done(Outcome.SUCCESS)
        assert isinstance(respond(call, 503), Deliver)
    denials = recorder.of(RetryBudgetExhausted)
    assert [d.first for d in denials] == [True, False, False]
    assert not recorder.of(RetryScheduled)


def test_a_cancelled_attempt_still_finishes() -> None:
    _, _, router, recorder = make()
    call = router.start("GET", RequestOptions(), replayable=True)
    assert isinstance(call.first(), Send)
    call.feed(ABANDONED)
    (finished,) = recorder.of(AttemptFinished)
    assert finished.error == "cancelled"


def test_an_observer_that_raises_is_logged_and_the_request_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, _, router, _ = make()

    def broken(event: Event) -> None:
        raise RuntimeError("observer bug")

    router.events.subscribe(broken)
    with caplog.at_level(logging.ERROR, logger="headlesslb.events"):
        call = router.start("GET", RequestOptions(), replayable=True)
        step = call.first()
        assert isinstance(step, Send)
        step.attempt.done(Outcome.SUCCESS)
        assert isinstance(respond(call, 200), Deliver)
    assert any("observer bug" in (r.exc_text or "") for r in caplog.records)


def test_unsubscribe_and_bad_observers() -> None:
    hub = EventHub("svc")
    recorder = Recorder()
    unsubscribe = hub.subscribe(recorder)
    assert hub.wants_attempts()
    unsubscribe()
    assert hub.observers == () and not hub.wants_attempts()
    with pytest.raises(ConfigurationError, match="callable"):
        hub.subscribe("not an observer")  # type: ignore[arg-type]


def test_a_closed_client_fails_without_announcing_an_attempt() -> None:
    _, _, router, recorder = make()
    router.close()
    call = router.start("GET", RequestOptions(), replayable=True)
    assert isinstance(call.first(), Fail)
    assert not recorder.of(AttemptStarted)


def test_nxdomain_is_logged_once_until_the_service_resolves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    observer = LogObserver()

    def round_(*, ok: bool = True, nxdomain: bool = False, endpoints: int = 0) -> None:
        observer(DiscoveryRound("web-h1", ok, 0.001, endpoints, 0.0, nxdomain=nxdomain))

    def warned() -> int:
        return sum("NXDOMAIN" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="headlesslb"):
        round_(nxdomain=True)
        round_(nxdomain=True)
        round_(ok=False)  # DNS failing meanwhile is no resolution
        round_(nxdomain=True)
        assert warned() == 1
        round_(endpoints=2)  # it resolved: the next NXDOMAIN is news
        round_(nxdomain=True)
        assert warned() == 2
        LogObserver()(DiscoveryRound("other", True, 0.001, 0, 0.0, nxdomain=True))
        assert warned() == 3  # per observer (one per runtime), not process-wide


def test_errors_say_nxdomain_or_an_empty_answer() -> None:
    for nxdomain, words in ((True, "NXDOMAIN"), (False, "empty answer")):
        _, pool, router, _ = make()
        pool.update(Resolution((), 0.0, nxdomain=nxdomain))
        call = router.start("GET", RequestOptions(), replayable=True)
        step = call.first()
        assert isinstance(step, Fail)
        assert words in str(step.error), step.error
