"""Overload decisions of the pure core: rejections and hold-offs, the adaptive throttle, slow
start and bounded-load hashing. Injected ManualClock and seeded rng, no sockets."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import httpx
import pytest

from headlesslb.compose import compose
from headlesslb.core.balancer import Balancer
from headlesslb.core.call import Call, Deliver, Fail, Responded, Router, Send, Step
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.names import expand_service_name
from headlesslb.core.options import RequestOptions
from headlesslb.core.pickers import ConsistentHash, Ordinal, SlowStart, make_picker
from headlesslb.core.pickers.base import PickContext
from headlesslb.core.pool import Outcome, OutlierPolicy, Pool
from headlesslb.core.retry import Failure, RetryPolicy, Verdict, retry_after_seconds
from headlesslb.core.throttle import AdaptiveThrottle, Throttle
from headlesslb.errors import ConfigurationError, Throttled
from headlesslb.io.runtime import Runtime

SERVICE = expand_service_name("web-hl.default")
RETRY_AFTER_2 = {"retry-after": "2"}


def pods(n: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.0.0.{i + 1}", 80, f"web-{i}", i) for i in range(n))


def make(
    n: int = 3,
    *,
    retry: RetryPolicy | None = None,
    throttle: Throttle | None = None,
    picker: str = "round_robin",
    slow_start: SlowStart | None = None,
    clock: ManualClock | None = None,
    endpoints: tuple[Endpoint, ...] | None = None,
    outlier: OutlierPolicy | None = None,
    sharding: ConsistentHash | None = None,
) -> Router:
    clock = clock or ManualClock()
    rng = random.Random(5)
    retry = retry or RetryPolicy(backoff_base=0.0, backoff_max=0.0)
    pool = Pool(outlier or OutlierPolicy(), clock=clock, rng=rng)
    pool.update(Resolution(pods(n) if endpoints is None else endpoints, 30))
    picker_factory = make_picker(picker, rng=rng, clock=clock, slow_start=slow_start)
    sharding = sharding or ConsistentHash()
    balancer = Balancer(pool, picker_factory, sharding=sharding, ordinal=Ordinal())
    return Router(
        service=SERVICE,
        pool=pool,
        balancer=balancer,
        retry=retry,
        budget=retry.budget(clock),
        rng=rng,
        port=80,
        clock=clock,
        throttle=throttle,
    )


def answer(call: Call, step: Step, status: int, headers: dict[str, str] | None = None) -> Step:
    """Play the shell: the Pod of ``step`` answers; the sender judges the answer once, its body
    ends (reporting the verdict's outcome) first, and the core decides on the same verdict."""
    assert isinstance(step, Send)
    verdict = call.router.retry.judge(status, headers or {})
    step.attempt.done(verdict.outcome)
    return call.feed(Responded(status, verdict))


# -- rejections ----------------------------------------------------------------------------------
DEFAULT = RetryPolicy()  # retries 502, 503, 504; holds off 1 s, at most 10 s
ONLY_502 = RetryPolicy(retry_statuses=frozenset({502}))
ALSO_500 = RetryPolicy(retry_statuses=frozenset({500, 502, 503, 504}))
ALSO_429 = RetryPolicy(retry_statuses=frozenset({429, 503}))
EVERY_5XX = RetryPolicy(retry_statuses=range(500, 600))
NO_HOLD_OFF = RetryPolicy(max_hold_off=0)
REJECTED = Outcome.REJECTED, Failure.REJECTED
UNWELL = Outcome.GATEWAY_ERROR
RETRIED = Failure.RETRYABLE_STATUS


@pytest.mark.parametrize(
    ("status", "retry_after", "policy", "outcome", "failure", "hold_off"),
    [
        (200, None, DEFAULT, Outcome.SUCCESS, None, 0.0),
        (404, None, DEFAULT, Outcome.SUCCESS, None, 0.0),
        (200, "5", DEFAULT, Outcome.SUCCESS, None, 0.0),  # only 429 and 503 may reject
        (500, None, DEFAULT, Outcome.SUCCESS, None, 0.0),
        (500, None, ALSO_500, Outcome.SUCCESS, RETRIED, 0.0),  # retried, yet the Pod is well
        (500, None, EVERY_5XX, Outcome.SUCCESS, RETRIED, 0.0),
        (502, None, DEFAULT, UNWELL, RETRIED, 0.0),
        (502, "5", DEFAULT, UNWELL, RETRIED, 0.0),
        (503, None, DEFAULT, UNWELL, RETRIED, 0.0),
        (503, None, ONLY_502, UNWELL, None, 0.0),  # unwell, but not retried
        (504, None, ONLY_502, UNWELL, None, 0.0),
        (504, None, EVERY_5XX, UNWELL, RETRIED, 0.0),
        (503, "2", DEFAULT, *REJECTED, 2.0),
        (503, "2", ONLY_502, *REJECTED, 2.0),  # a rejection whatever the retried statuses
        (503, "soon", DEFAULT, *REJECTED, 1.0),  # unusable: RetryPolicy.hold_off
        (503, "3600", DEFAULT, *REJECTED, 10.0),  # bounded by RetryPolicy.max_hold_off
        (429, None, DEFAULT, *REJECTED, 1.0),
        (429, "2", DEFAULT, *REJECTED, 2.0),
        (429, "2", ALSO_429, *REJECTED, 2.0),  # a rejection before a retryable status
        (429, "2", NO_HOLD_OFF, *REJECTED, 0.0),  # still a rejection, with no hold-off
        (503, "2", NO_HOLD_OFF, *REJECTED, 0.0),
    ],
)
def test_a_response_is_judged_by_status_retry_after_and_policy(
    status: int,
    retry_after: str | None,
    policy: RetryPolicy,
    outcome: Outcome,
    failure: Failure | None,
    hold_off: float,
) -> None:
    headers = (
        httpx.Headers() if retry_after is None else httpx.Headers({"Retry-After": retry_after})
    )
    assert policy.judge(status, headers) == Verdict(outcome, failure, hold_off)


def test_a_verdict_is_immutable() -> None:
    verdict = DEFAULT.judge(503, RETRY_AFTER_2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.hold_off = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": " 0 "}, 0.0),
        ({"retry-after": "99999999999999"}, 1e9),
        (
            {
                "retry-after": "Wed, 21 Oct 2015 07:28:05 GMT",
                "date": "Wed, 21 Oct 2015 07:28:00 GMT",
            },
            5.0,
        ),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:05 GMT"}, None),  # no Date: unusable
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "٣"}, None),  # a non-ASCII digit is not delay-seconds
        ({}, None),
    ],
)
def test_retry_after_is_parsed_and_untrusted(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(headers) == seconds


def test_hold_off_is_bounded_and_defaults_when_retry_after_is_unusable() -> None:
    policy = RetryPolicy(hold_off=0.5, max_hold_off=4.0)
    assert policy.hold_off_for({"retry-after": "2"}) == 2.0
    assert policy.hold_off_for({"retry-after": "3600"}) == 4.0
    assert policy.hold_off_for({}) == 0.5
    assert RetryPolicy(hold_off=0, max_hold_off=0).hold_off_for({"retry-after": "9"}) == 0.0
    assert RetryPolicy(hold_off=5.0, max_hold_off=1.0).hold_off_for({}) == 1.0
    with pytest.raises(ConfigurationError, match=r"RetryPolicy\.hold_off"):
        RetryPolicy(hold_off=-1.0)
    with pytest.raises(ConfigurationError, match=r"RetryPolicy\.max_hold_off"):
        RetryPolicy(max_hold_off=-1)


def test_a_rejected_get_is_retried_on_another_pod_and_the_rejecter_held_off() -> None:
    router = make()
    clock = router.clock
    assert isinstance(clock, ManualClock)
    call = router.start("GET", RequestOptions(), replayable=True)
    first = call.first()
    assert isinstance(first, Send)
    second = answer(call, first, 429, RETRY_AFTER_2)
    assert isinstance(second, Send)
    assert second.endpoint != first.endpoint
    assert answer(call, second, 200) is not None
    rejecter = first.state
    assert rejecter.held_until == clock() + 2.0
    assert rejecter not in router.pool.snapshot.eligible
    for _ in range(10):  # nobody sends it anything while it holds off
        step = router.start("GET", RequestOptions(), replayable=True).first()
        assert isinstance(step, Send) and step.state is not rejecter
        step.attempt.done(Outcome.CANCELLED)
    clock.advance(2.0)
    assert rejecter in router.pool.snapshot.eligible
    assert call.report()["attempts"][0]["status"] == 429


def test_a_rejected_post_is_not_retried() -> None:
    router = make()
    call = router.start("POST", RequestOptions(), replayable=True)
    assert isinstance(answer(call, call.first(), 429), Deliver)


def test_when_every_pod_rejected_the_rejection_stands() -> None:
    router = make(2, retry=RetryPolicy(max_attempts=5, backoff_base=0.0, backoff_max=0.0))
    call = router.start("GET", RequestOptions(), replayable=True)
    step = answer(call, call.first(), 429)
    assert isinstance(step, Send)
    assert isinstance(answer(call, step, 429), Deliver)
    assert len(call.attempts) == 2


def test_a_keyed_rejection_stands_when_the_key_reaches_no_other_pod() -> None:
    # Jump over ordinals gives a Pod without an ordinal no keys: it is eligible and untried,
    # yet no retry of the key could reach it. The 429 is the answer, not NoEndpointsAvailable.
    router = make(
        endpoints=(*pods(1), Endpoint("10.0.0.9", 80)),
        outlier=OutlierPolicy(panic_threshold=0),
        sharding=ConsistentHash(over="ordinal"),
    )
    call = router.start("GET", RequestOptions(key="user-1"), replayable=True)
    first = call.first()
    assert isinstance(first, Send) and first.state.endpoint.ordinal == 0
    assert isinstance(answer(call, first, 429), Deliver)


def test_a_pinned_request_is_never_retried_on_a_rejection() -> None:
    router = make()
    call = router.start("GET", RequestOptions(ordinal=1), replayable=True)
    assert isinstance(answer(call, call.first(), 429, RETRY_AFTER_2), Deliver)


def test_a_fast_rejection_never_makes_a_pod_look_cheaper() -> None:
    clock = ManualClock()
    pool = Pool(clock=clock)
    pool.update(Resolution(pods(1), 30))
    state = pool.snapshot.members[0]
    attempt = pool.begin(state)
    clock.advance(0.2)
    attempt.done(Outcome.SUCCESS)
    assert pool.latency.decayed(state, clock()) == pytest.approx(0.2)
    clock.advance(5.0)
    for _ in range(20):  # a burst of instant 429s
        pool.begin(state).done(Outcome.REJECTED)
    # Neither averaged in nor decayed meanwhile: the decay restarts from the last real latency.
    assert pool.latency.decayed(state, clock()) == pytest.approx(0.2)
    assert state.consecutive_failures == 0 and state.ejected_until is None
    assert state.in_flight == 0


def test_when_most_pods_hold_off_the_pool_panics_over_all_of_them() -> None:
    router = make(3)
    pool = router.pool
    a, b, c = pool.snapshot.members
    pool.hold_off(a, 5.0)
    assert pool.snapshot.eligible == (b, c)
    pool.hold_off(b, 5.0)
    assert pool.snapshot.panic and set(pool.snapshot.eligible) == {a, b, c}


# -- the adaptive throttle -------------------------------------------------------------------------
def test_throttle_probability_follows_the_sre_formula() -> None:
    clock = ManualClock()
    throttle = AdaptiveThrottle(k=2.0, window=10.0, min_requests=0).build(clock, random.Random(1))
    for _ in range(100):
        throttle.answered(False)
    for _ in range(20):
        throttle.answered(True)
    assert throttle.probability == pytest.approx((120 - 2 * 20) / 121)
    clock.advance(10.0)  # the window slides past all of it
    assert throttle.probability == 0.0


def test_throttle_sheds_nothing_while_half_is_accepted_or_too_little_was_seen() -> None:
    clock = ManualClock()
    throttle = AdaptiveThrottle().build(clock, random.Random(1))
    for _ in range(5):
        throttle.answered(False)
    assert throttle.probability == 0.0  # below min_requests
    for _ in range(50):
        throttle.answered(True)
        throttle.answered(False)
    for _ in range(5):
        throttle.answered(True)  # 55 rejected, 55 accepted: K × accepts covers the requests
    assert throttle.probability == 0.0
    assert all(throttle.admit() for _ in range(100))


def test_throttled_first_attempt_fails_typed_and_sends_nothing() -> None:
    clock = ManualClock()
    throttle = AdaptiveThrottle(min_requests=0).build(clock, random.Random(3))
    for _ in range(1000):
        throttle.answered(False)
    router = make(throttle=throttle, clock=clock)
    outcomes: Counter[str] = Counter()
    for _ in range(200):
        step = router.start("GET", RequestOptions(), replayable=True).first()
        if isinstance(step, Fail):
            assert isinstance(step.error, Throttled)
            outcomes["shed"] += 1
        else:
            assert isinstance(step, Send)
            step.attempt.done(Outcome.CANCELLED)
            outcomes["sent"] += 1
    assert outcomes["shed"] > 190
    assert throttle.shed == outcomes["shed"]


def test_throttle_validation_names_the_argument() -> None:
    with pytest.raises(ConfigurationError, match=r"AdaptiveThrottle\.k"):
        AdaptiveThrottle(k=0.5)
    with pytest.raises(ConfigurationError, match=r"AdaptiveThrottle\.window"):
        AdaptiveThrottle(window=0)
    with pytest.raises(ConfigurationError, match="throttle"):
        compose("web-hl", {"throttle": {"k": 2}, "nameservers": ["127.0.0.1:53"]})


# -- slow start --------------------------------------------------------------------------------
def test_slow_start_weight_is_envoys_formula_with_a_floor() -> None:
    linear = SlowStart(window=10.0)
    assert linear.weight(0.0) == 0.1
    assert linear.weight(5.0) == pytest.approx(0.5)
    assert linear.weight(10.0) == 1.0
    fast = SlowStart(window=10.0, aggression=2.0)
    assert fast.weight(2.5) == pytest.approx(0.5)
    with pytest.raises(ConfigurationError, match=r"SlowStart\.min_weight"):
        SlowStart(min_weight=0.05)


@pytest.mark.parametrize(
    "picker",
    ["round_robin", "least_request", "peak_ewma", "weighted_round_robin", "least_loaded"],
)
def test_a_newcomer_ramps_up_but_the_first_pods_do_not(picker: str) -> None:
    clock = ManualClock()
    router = make(3, picker=picker, slow_start=SlowStart(window=10.0), clock=clock)
    pool, balancer = router.pool, router.balancer

    def shares(n: int = 4000) -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(n):
            state = balancer.pick()
            assert state is not None
            seen[state.endpoint.ip] += 1
        return seen

    start = shares(3000)
    assert min(start.values()) > 800  # the pool's first Pods start at full weight
    clock.advance(60.0)
    pool.update(Resolution(pods(4), 30))
    newcomer = "10.0.0.4"
    at_start = shares()[newcomer] / 4000
    assert at_start < 0.07  # 10 % weight: ≈ 0.1 / 3.1 of picks, far below a full 25 %
    clock.advance(5.0)
    halfway = shares()[newcomer] / 4000
    assert at_start < halfway < 0.2
    clock.advance(5.0)
    assert shares()[newcomer] / 4000 > 0.2


def test_no_slow_start_when_every_pod_is_new() -> None:
    clock = ManualClock()
    router = make(2, slow_start=SlowStart(window=10.0), clock=clock)
    clock.advance(60.0)
    # The whole set is replaced at once: everybody ramps, so nobody is slowed.
    router.pool.update(Resolution(tuple(Endpoint(f"10.0.1.{i}", 80) for i in range(1, 4)), 30))
    seen = Counter(router.balancer.pick().endpoint.ip for _ in range(3000))  # type: ignore[union-attr]
    assert min(seen.values()) > 900


def test_slow_start_after_an_ejection_ends() -> None:
    clock = ManualClock()
    router = make(3, slow_start=SlowStart(window=10.0), clock=clock)
    pool = router.pool
    clock.advance(60.0)
    victim = pool.snapshot.members[0]
    assert pool.eject(victim.key)
    clock.advance(100.0)
    assert victim in pool.snapshot.eligible  # back, and ramping
    seen = Counter(router.balancer.pick().key for _ in range(3000))  # type: ignore[union-attr]
    assert seen[victim.key] < 3000 * 0.07


def test_slow_start_with_a_factory_of_ones_own_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="slow_start"):
        make_picker(ConsistentHash(), slow_start=SlowStart())


# -- bounded load ----------------------------------------------------------------------------------
def _keyed(factor: float | None) -> tuple[Pool, Balancer]:
    pool = Pool(clock=ManualClock())
    pool.update(Resolution(pods(5), 30))
    balancer = Balancer(
        pool, make_picker("round_robin"), sharding=ConsistentHash(balance_factor=factor)
    )
    return pool, balancer


def test_bounded_load_moves_a_hot_key_off_a_busy_owner_and_back() -> None:
    pool, balancer = _keyed(1.25)
    ctx = PickContext(key="hot")
    owner = balancer.pick(ctx)
    assert owner is not None
    attempts = [pool.begin(owner) for _ in range(3)]  # 3 in flight, all on the owner
    # total 3, n 5: the bound is ceil(1.25 × 4 / 5) = 1, so the owner (at 3) is over it.
    moved = balancer.pick(ctx)
    assert moved is not None and moved is not owner
    assert balancer.pick(ctx) is moved  # deterministic: every client moves it to the same Pod
    for attempt in attempts:
        attempt.done(Outcome.SUCCESS)
    assert balancer.pick(ctx) is owner  # the load dropped: back to its owner


def test_no_pod_goes_over_the_bound() -> None:
    pool, balancer = _keyed(1.25)
    held = []
    for i in range(40):
        state = balancer.pick(PickContext(key="hot" if i % 2 else f"k{i}"))
        assert state is not None
        total = sum(s.in_flight for s in pool.snapshot.eligible)
        assert state.in_flight + 1 <= -(-1.25 * (total + 1) // 5)
        held.append(pool.begin(state))
    for attempt in held:
        attempt.done(Outcome.SUCCESS)


def test_strict_affinity_is_the_default() -> None:
    pool, balancer = _keyed(None)
    owner = balancer.pick(PickContext(key="hot"))
    assert owner is not None
    attempts = [pool.begin(owner) for _ in range(10)]
    assert balancer.pick(PickContext(key="hot")) is owner
    for attempt in attempts:
        attempt.done(Outcome.SUCCESS)


def test_balance_factor_validation_names_the_argument() -> None:
    with pytest.raises(ConfigurationError, match=r"ConsistentHash\.balance_factor"):
        ConsistentHash(balance_factor=0.9)


def test_bounded_load_works_over_ordinals_too() -> None:
    pool = Pool(clock=ManualClock())
    pool.update(Resolution(pods(5), 30))
    balancer = Balancer(
        pool,
        make_picker("round_robin"),
        sharding=ConsistentHash(over="ordinal", balance_factor=1.25),
    )
    owner = balancer.pick(PickContext(key="hot"))
    assert owner is not None
    attempts = [pool.begin(owner) for _ in range(3)]
    moved = balancer.pick(PickContext(key="hot"))
    assert moved is not None and moved is not owner
    for attempt in attempts:
        attempt.done(Outcome.SUCCESS)
    assert balancer.pick(PickContext(key="hot")) is owner


def test_the_options_go_through_compose_for_both_clients() -> None:
    from headlesslb.sync.pool import LockedPool
    from headlesslb.testing import StaticDiscovery

    discovery = StaticDiscovery(["10.0.0.1:80"])
    slow = SlowStart(window=5)
    for pool_class in (Pool, LockedPool):
        parts = compose(
            "web-hl.default",
            {
                "discovery": discovery,
                "slow_start": slow,
                "throttle": AdaptiveThrottle(k=1.5),
                "picker": "least_request",
            },
            pool_class=pool_class,
        )
        runtime = Runtime(parts.spec)
        router = parts.router(runtime)
        assert isinstance(runtime.pool, pool_class)
        assert router.throttle is not None and router.throttle.settings.k == 1.5
        picker = runtime.balancer.factories.balancing
        assert getattr(picker, "slow_start", None) is slow
    with pytest.raises(ConfigurationError, match="slow_start"):
        compose("web-hl.default", {"discovery": discovery, "slow_start": 30})
