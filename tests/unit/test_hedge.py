"""The hedging decisions (:mod:`headlesslb.core.hedge`): policy checks, the learned delay, and
whether and where a hedge goes. Pure: a :class:`ManualClock`, a seeded rng, no sockets (the
shell tests at the end use mocked Pods: ``StaticDiscovery`` and ``httpx.MockTransport``)."""

from __future__ import annotations

import math
import random
import sys
import threading

import httpx
import pytest

import headlesslb.sync
from headlesslb.core.balancer import Balancer
from headlesslb.core.call import Call, Send
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.hedge import HedgePlan, HedgePolicy, Hedger, LatencyEstimator
from headlesslb.core.pickers import ConsistentHash, Ordinal, make_picker
from headlesslb.core.pool import OutlierPolicy, Pool
from headlesslb.core.race import Race
from headlesslb.core.retry import RetryBudget, RetryPolicy
from headlesslb.errors import ConfigurationError
from headlesslb.testing import StaticDiscovery


def balancer(n: int, clock: ManualClock) -> Balancer:
    rng = random.Random(7)
    pool = Pool(OutlierPolicy(), clock=clock, rng=rng)
    pool.update(Resolution(tuple(Endpoint(f"10.0.0.{i + 1}", 80) for i in range(n)), 30))
    return Balancer(
        pool,
        make_picker("round_robin", rng=rng, clock=clock),
        sharding=ConsistentHash(),
        ordinal=Ordinal(),
    )


def hedger(policy: HedgePolicy, clock: ManualClock, budget: RetryBudget | None = None) -> Hedger:
    retry = RetryPolicy()
    return Hedger(policy, retry, budget or RetryBudget(0.2, 10.0, clock=clock), clock=clock)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({}, "HedgePolicy.delay"),
        ({"delay": 0.1, "quantile": 0.9}, "HedgePolicy.delay"),
        ({"delay": -1.0}, "HedgePolicy.delay"),
        ({"delay": float("nan")}, "HedgePolicy.delay"),
        ({"quantile": 1.0}, "HedgePolicy.quantile"),
        ({"quantile": 0.0}, "HedgePolicy.quantile"),
        ({"quantile": 0.9, "min_samples": 0}, "HedgePolicy.min_samples"),
        ({"quantile": 0.9, "min_samples": 50, "window": 10}, "HedgePolicy.min_samples"),
        ({"delay": 0.1, "max_hedges": 0}, "HedgePolicy.max_hedges"),
        ({"delay": 0.1, "max_hedges": True}, "HedgePolicy.max_hedges"),
        ({"delay": 0.1, "max_age": 0}, "HedgePolicy.max_age"),
    ],
)
def test_bad_policy_is_a_typed_error_naming_the_argument(
    kwargs: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        HedgePolicy(**kwargs)  # type: ignore[arg-type]


def test_estimator_quantile_is_nearest_rank_and_ages_out() -> None:
    clock = ManualClock()
    estimator = LatencyEstimator(window=100, max_age=10.0, clock=clock)
    assert estimator.quantile(0.5) is None
    for ms in range(1, 101):
        estimator.record(ms / 1000)
    estimator.record(float("nan"))
    estimator.record(-1.0)
    assert len(estimator) == 100
    assert estimator.quantile(0.95) == pytest.approx(0.095)
    assert estimator.quantile(0.5) == pytest.approx(0.050)
    clock.advance(5.0)
    estimator.record(1.0)  # the window is full: the oldest sample falls out
    assert len(estimator) == 100 and estimator.quantile(0.01) == pytest.approx(0.002)
    clock.advance(5.5)
    assert len(estimator) == 1 and estimator.quantile(0.5) == 1.0


def test_estimator_shared_by_threads_stays_whole_and_in_order() -> None:
    """The sync client's request threads record and read one estimator at once. With a switch
    every microsecond, an unlocked one raised "deque mutated during iteration" from a
    quantile's sort (and could keep a sorted copy made before the latest sample)."""
    clock = ManualClock()
    estimator = LatencyEstimator(window=100, max_age=1.0, clock=clock)
    errors: list[BaseException] = []
    together = threading.Barrier(4)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        together.wait()
        try:
            for _ in range(2000):
                estimator.record(rng.random())
                estimator.quantile(0.9)
                len(estimator)
                if seed == 0:
                    clock.advance(0.002)  # samples age out meanwhile: expiry races too
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
    kept = sorted(seconds for _, seconds in estimator._samples)
    assert estimator._sorted == kept and 0 < len(estimator) <= 100
    for q in (0.01, 0.5, 0.9, 0.99):
        assert estimator.quantile(q) == kept[max(0, math.ceil(q * len(kept)) - 1)]


def test_fixed_delay_plans_idempotent_replayable_requests_only() -> None:
    clock = ManualClock()
    h = hedger(HedgePolicy(delay=0.05), clock)
    assert h.plan("GET", None, replayable=True) == HedgePlan(0.05, 1)
    assert h.plan("get", None, replayable=True) == HedgePlan(0.05, 1)
    assert h.plan("POST", None, replayable=True) is None
    assert h.plan("POST", True, replayable=True) == HedgePlan(0.05, 1)  # idempotent=True opts in
    assert h.plan("GET", False, replayable=True) is None
    assert h.plan("PUT", None, replayable=False) is None


def test_learned_delay_waits_for_min_samples() -> None:
    clock = ManualClock()
    h = hedger(HedgePolicy(quantile=0.9, min_samples=10), clock)
    for i in range(9):
        h.observe(0.01 * (i + 1))
    assert h.plan("GET", None, replayable=True) is None
    h.observe(0.10)
    assert h.plan("GET", None, replayable=True) == HedgePlan(pytest.approx(0.09), 1)


def test_target_is_another_pod_within_the_cap_and_the_budget() -> None:
    clock = ManualClock()
    budget = RetryBudget(0.0, 1.0, clock=clock)  # one hedge per second, no request credit
    h = hedger(HedgePolicy(delay=0.05), clock, budget)
    b = balancer(2, clock)
    plan = HedgePlan(0.05, 1)
    first = b.pick()
    assert first is not None
    tried = {first.key}
    second = h.target(b, tried, 0, plan, key=None)
    assert second is not None and second.key != first.key
    assert h.target(b, tried, 1, plan, key=None) is None  # max_hedges reached
    refused = h.target(b, tried, 0, plan, key=None)  # the budget refuses a second this second
    assert refused is None
    clock.advance(1.0)
    both = {first.key, second.key}
    assert h.target(b, both, 0, plan, key=None) is None  # no other Pod: not charged
    assert h.target(b, tried, 0, plan, key=None) is not None


def test_single_pod_is_never_hedged_to_itself() -> None:
    clock = ManualClock()
    b = balancer(1, clock)
    only = b.pick()
    assert only is not None
    h = hedger(HedgePolicy(delay=0.01), clock)
    assert h.target(b, {only.key}, 0, HedgePlan(0.01, 1), key=None) is None


@pytest.mark.parametrize("flavor", ["async", "sync"])
def test_the_hedge_option_is_checked_on_both_transports(flavor: str) -> None:
    import headlesslb
    import headlesslb.sync

    module = headlesslb if flavor == "async" else headlesslb.sync
    with pytest.raises(ConfigurationError, match="hedge"):
        module.HeadlessTransport("web-hl.default", hedge=0.05, nameservers=["127.0.0.1:53"])  # type: ignore[arg-type]
    transport = module.HeadlessTransport(
        "web-hl.default", hedge=HedgePolicy(delay=0.05), nameservers=["127.0.0.1:53"]
    )
    assert transport.parts.hedger is not None


def test_sync_hedge_timer_at_the_deadline_sends_no_hedge(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hedge delay outlasts the deadline, so the sync shell asks for the hedge once the
    deadline has passed. The first attempt answers only after the core has decided (a hook on
    :meth:`Race.hedge`, which the call asks when fed ``HEDGE_DUE``), so that order holds however
    slow the machine is."""
    decided = threading.Event()
    hedge = Race.hedge

    def hedge_then_answer(race: Race, call: Call) -> Send | None:
        try:
            return hedge(race, call)
        finally:
            decided.set()

    monkeypatch.setattr(Race, "hedge", hedge_then_answer)
    asked: list[str] = []

    def pod(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.host)
        assert decided.wait(10)  # a bound for a broken build only
        return httpx.Response(200, text=request.url.host)

    with headlesslb.sync.HeadlessClient(
        "web-hl.default",
        discovery=StaticDiscovery(["web-0=10.0.0.1:80", "web-1=10.0.0.2:80"]),
        pod_transport=httpx.MockTransport(pod),
        hedge=HedgePolicy(delay=0.05),
        retry=RetryPolicy(deadline=0.04),
    ) as client:
        response = client.get("/")  # before the fix: AssertionError from the hedge decision
    assert decided.is_set() and len(asked) == 1  # no hedge was sent
    assert response.status_code == 200  # the sync shell has no hard cap: the answer stands
    assert [a.get("status") for a in response.extensions["headlesslb"]["attempts"]] == [200]
