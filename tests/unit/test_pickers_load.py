"""Pickers on the Pods' own load reports (pure): weighted round robin after gRFC A58 and
load-aware P2C. Injected ManualClock, seeded rng, reports set as the sink would set them."""

from __future__ import annotations

import collections
import random

import pytest

from headlesslb.core.balancer import Balancer
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.orca import HEADER, LoadReports
from headlesslb.core.pickers import LeastLoaded, WeightedRoundRobin, make_picker
from headlesslb.core.pickers.base import PickContext, PickerFactory, ReadsLoad
from headlesslb.core.pickers.weighted import report_weight, stride_weights
from headlesslb.core.pool import Outcome, OutlierPolicy, Pool
from headlesslb.core.snapshot import EndpointState
from headlesslb.core.subset import Subset, Subsetter
from headlesslb.errors import ConfigurationError


def make_pool(n: int, clock: ManualClock, **kwargs: object) -> Pool:
    pool = Pool(OutlierPolicy(jitter=0), clock=clock, rng=random.Random(0), **kwargs)  # type: ignore[arg-type]
    pool.update(Resolution(tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(1, n + 1)), 5))
    pool.load_reports = LoadReports(clock, max_age=180.0)
    return pool


def report(pool: Pool, state: EndpointState, text: str) -> None:
    assert pool.load_reports is not None
    pool.load_reports.offer(state, {HEADER: "TEXT " + text})


def shares(
    balancer: Balancer, count: int, ctx: PickContext | None = None
) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        state = balancer.pick(ctx) if ctx is not None else balancer.pick()
        assert state is not None
        seen[state.endpoint.ip] += 1
    return seen


def wrr(clock: ManualClock, **kwargs: float) -> WeightedRoundRobin:
    return WeightedRoundRobin(random.Random(1), clock=clock, **kwargs)  # type: ignore[arg-type]


# -- weighted round robin --------------------------------------------------------------------------
def test_both_read_load_reports_and_the_others_do_not() -> None:
    assert isinstance(WeightedRoundRobin(), ReadsLoad) and isinstance(LeastLoaded(), ReadsLoad)
    assert isinstance(WeightedRoundRobin(), PickerFactory)
    for name in ("round_robin", "least_request", "peak_ewma"):
        assert not isinstance(make_picker(name), ReadsLoad)  # type: ignore[arg-type]
    assert isinstance(make_picker("weighted_round_robin"), WeightedRoundRobin)
    assert isinstance(make_picker("least_loaded"), LeastLoaded)


def test_weight_is_a58s_formula() -> None:
    clock = ManualClock()
    pool = make_pool(1, clock)
    state = pool.snapshot.members[0]
    report(pool, state, "rps_fractional=100, cpu_utilization=0.5, eps=10")
    clock.advance(20.0)
    kw = {"blackout": 10.0, "expiry": 180.0}
    # 100 / (0.5 + 10 / 100 × 2)
    assert report_weight(state, clock(), penalty=2.0, **kw) == pytest.approx(100 / 0.7)
    report(pool, state, "rps_fractional=100, cpu_utilization=0.5, application_utilization=0.25")
    assert report_weight(state, clock(), penalty=1.0, **kw) == pytest.approx(400.0)
    report(pool, state, "rps_fractional=0, cpu_utilization=0.5")
    assert report_weight(state, clock(), penalty=1.0, **kw) == 0.0  # no qps: no weight
    report(pool, state, "rps_fractional=10")
    assert report_weight(state, clock(), penalty=1.0, **kw) == 0.0  # no utilization: none


def test_no_reports_is_exact_round_robin() -> None:
    clock = ManualClock()
    balancer = Balancer(make_pool(3, clock), wrr(clock))
    assert set(shares(balancer, 300).values()) == {100}


def _weighted(
    clock: ManualClock, utilizations: list[float], **kwargs: float
) -> tuple[Pool, Balancer]:
    pool = make_pool(len(utilizations), clock)
    for state, utilization in zip(pool.snapshot.members, utilizations, strict=True):
        report(pool, state, f"rps_fractional=100, cpu_utilization={utilization}")
    return pool, Balancer(pool, wrr(clock, **kwargs))


def test_shares_follow_the_weights_after_the_blackout_period() -> None:
    clock = ManualClock()
    _pool, balancer = _weighted(clock, [0.6, 0.3, 0.2])  # weights 1 : 2 : 3
    assert set(shares(balancer, 300).values()) == {100}  # blacked out: round robin
    clock.advance(10.0)
    seen = shares(balancer, 6000)
    assert seen["10.0.0.1"] == pytest.approx(1000, rel=0.02)
    assert seen["10.0.0.2"] == pytest.approx(2000, rel=0.02)
    assert seen["10.0.0.3"] == pytest.approx(3000, rel=0.02)


def test_weights_change_only_every_update_period() -> None:
    clock = ManualClock()
    pool, balancer = _weighted(clock, [0.5, 0.5, 0.5], weight_update_period=5.0)
    clock.advance(10.0)
    assert set(shares(balancer, 300).values()) == {100}
    report(pool, pool.snapshot.members[0], "rps_fractional=100, cpu_utilization=0.1")
    assert set(shares(balancer, 300).values()) == {100}  # not recomputed yet
    clock.advance(5.0)
    assert shares(balancer, 700)["10.0.0.1"] == pytest.approx(500, rel=0.02)  # 5 : 1 : 1


def test_stale_weights_expire_back_to_round_robin() -> None:
    clock = ManualClock()
    _pool, balancer = _weighted(clock, [0.6, 0.3, 0.2], weight_expiration_period=30.0)
    clock.advance(10.0)
    assert shares(balancer, 600)["10.0.0.3"] > 250
    clock.advance(21.0)  # 31 s since the last reports
    assert set(shares(balancer, 300).values()) == {100}


def test_one_pod_reporting_is_round_robin() -> None:
    clock = ManualClock()
    pool = make_pool(3, clock)
    report(pool, pool.snapshot.members[0], "rps_fractional=100, cpu_utilization=0.01")
    clock.advance(11.0)
    assert set(shares(Balancer(pool, wrr(clock)), 300).values()) == {100}


def test_a_pod_claiming_no_load_gets_the_mean_and_one_claiming_little_at_most_ten_times() -> None:
    clock = ManualClock()
    pool, balancer = _weighted(clock, [0.5, 0.5, 0.0])
    clock.advance(10.0)
    assert set(shares(balancer, 300).values()) == {100}  # 0 utilization: no weight, the mean
    report(pool, pool.snapshot.members[2], "rps_fractional=100, cpu_utilization=0.000001")
    clock.advance(1.0)
    liar = shares(balancer, 12000)["10.0.0.3"]
    assert liar == pytest.approx(12000 * 10 / 12, rel=0.02)  # clamped to 10 × the mean


def test_errors_weigh_a_pod_down() -> None:
    clock = ManualClock()
    pool = make_pool(2, clock)
    a, b = pool.snapshot.members
    report(pool, a, "rps_fractional=100, cpu_utilization=0.5")
    report(pool, b, "rps_fractional=100, cpu_utilization=0.5, eps=50")  # 0.5 + 0.5 × 1
    clock.advance(10.0)
    seen = shares(Balancer(pool, wrr(clock)), 3000)
    assert seen["10.0.0.1"] == pytest.approx(2000, rel=0.02)


def test_exclusion_ejection_and_a_new_blackout_after_an_ejection() -> None:
    clock = ManualClock()
    pool, balancer = _weighted(clock, [0.6, 0.3, 0.2])
    clock.advance(10.0)
    c = pool.snapshot.members[2]
    ctx = PickContext(exclude=frozenset({c.key}))
    assert "10.0.0.3" not in shares(balancer, 300, ctx)
    assert (
        balancer.pick(PickContext(exclude=frozenset(s.key for s in pool.snapshot.members))) is None
    )
    assert pool.eject(c.key)
    assert "10.0.0.3" not in shares(balancer, 300)
    clock.advance(30.0)
    pool.snapshot  # noqa: B018 - the ejection ends when the snapshot is read
    for state, utilization in zip(pool.snapshot.members, [0.6, 0.3, 0.2], strict=True):
        report(pool, state, f"rps_fractional=100, cpu_utilization={utilization}")
    clock.advance(1.0)
    back = shares(balancer, 3000)
    # Blacked out again: the mean of the others' weights (100/0.6 and 100/0.3), a third.
    assert back["10.0.0.3"] == pytest.approx(1000, rel=0.02)
    clock.advance(10.0)
    assert shares(balancer, 6000)["10.0.0.3"] == pytest.approx(3000, rel=0.02)


def test_subsetting_applies() -> None:
    clock = ManualClock()
    place = Subset(3, client=7).place({}, random.Random(7))
    pool = make_pool(20, clock, subset=Subsetter(3, place))
    for state in pool.snapshot.members:
        report(pool, state, "rps_fractional=100, cpu_utilization=0.5")
    clock.advance(10.0)
    seen = shares(Balancer(pool, wrr(clock)), 600)
    assert set(seen) == {s.endpoint.ip for s in pool.snapshot.eligible} and len(seen) == 3


def test_stride_weights() -> None:
    assert stride_weights([0.0, 0.0, 5.0]) is None  # fewer than two weights: round robin
    assert stride_weights([2.0, 2.0, 0.0]) is None  # all the same once the mean fills in
    assert stride_weights([1.0, 2.0, 0.0]) == (32768, 65535, 49151)
    assert stride_weights([1.0, 1000.0]) == (3280, 65535)  # clamped to median / 10 …
    assert stride_weights([1.0, 1.0, 1e6]) == (6554, 6554, 65535)  # … median × 10


def test_validation_names_the_argument() -> None:
    with pytest.raises(ConfigurationError, match=r"WeightedRoundRobin\.blackout_period"):
        WeightedRoundRobin(blackout_period=-1)
    with pytest.raises(ConfigurationError, match=r"WeightedRoundRobin\.weight_update_period"):
        WeightedRoundRobin(weight_update_period=0.01)
    with pytest.raises(ConfigurationError, match=r"WeightedRoundRobin\.weight_expiration_period"):
        WeightedRoundRobin(weight_expiration_period=float("nan"))


# -- load-aware P2C --------------------------------------------------------------------------------
def least_loaded(clock: ManualClock, **kwargs: object) -> LeastLoaded:
    return LeastLoaded(random.Random(2), clock=clock, **kwargs)  # type: ignore[arg-type]


def test_without_reports_it_is_least_request() -> None:
    clock = ManualClock()
    pool = make_pool(3, clock)
    busy = pool.snapshot.members[0]
    for _ in range(3):
        pool.begin(busy)
    seen = shares(Balancer(pool, least_loaded(clock)), 600)
    assert "10.0.0.1" not in seen  # in a pair with it, the other always wins


def test_a_pod_reporting_a_queue_is_avoided() -> None:
    clock = ManualClock()
    pool = make_pool(3, clock)
    a, b, c = pool.snapshot.members
    report(pool, a, "named_metrics.num_requests_waiting=8")
    report(pool, b, "named_metrics.num_requests_waiting=0")
    report(pool, c, "named_metrics.num_requests_waiting=1")
    seen = shares(Balancer(pool, least_loaded(clock)), 900)
    assert "10.0.0.1" not in seen
    assert seen["10.0.0.2"] == pytest.approx(600, rel=0.15)  # wins 2 of the 3 pairs


def test_the_metric_adds_to_in_flight() -> None:
    clock = ManualClock()
    pool = make_pool(2, clock)
    a, b = pool.snapshot.members
    report(pool, a, "named_metrics.num_requests_waiting=0")
    report(pool, b, "named_metrics.num_requests_waiting=3")
    for _ in range(5):
        pool.begin(a)  # 5 + 0 > 0 + 3
    assert set(shares(Balancer(pool, least_loaded(clock)), 50)) == {"10.0.0.2"}


def test_a_metric_of_the_users_choice_with_its_weight() -> None:
    clock = ManualClock()
    pool = make_pool(2, clock)
    a, b = pool.snapshot.members
    report(pool, a, "named_metrics.kv_cache_usage_perc=0.9")
    report(pool, b, "named_metrics.kv_cache_usage_perc=0.2")
    pool.begin(b)
    # 1 in flight + 10 × 0.2 = 3 beats 0 + 10 × 0.9 = 9; with weight 1, 1.2 loses to 0.9.
    picker = least_loaded(clock, metric="kv_cache_usage_perc", metric_weight=10.0)
    assert set(shares(Balancer(pool, picker), 50)) == {"10.0.0.2"}
    picker = least_loaded(clock, metric="kv_cache_usage_perc", metric_weight=1.0)
    assert set(shares(Balancer(pool, picker), 50)) == {"10.0.0.1"}
    report(pool, a, "cpu_utilization=0.1")
    report(pool, b, "cpu_utilization=0.8")
    pool.begin(a)
    picker = least_loaded(clock, metric="cpu_utilization", metric_weight=10.0)
    assert set(shares(Balancer(pool, picker), 50)) == {"10.0.0.1"}


def test_stale_and_missing_reports_cost_the_median() -> None:
    clock = ManualClock()
    pool = make_pool(4, clock)
    a, b, c, d = pool.snapshot.members
    report(pool, a, "named_metrics.num_requests_waiting=2")
    report(pool, b, "named_metrics.num_requests_waiting=4")
    report(pool, c, "named_metrics.num_requests_waiting=100")
    picker = least_loaded(clock, max_age=5.0).build(pool.snapshot)
    now = clock()
    assert picker.cost(d, now) == 4.0  # no report: the median of 2, 4, 100
    clock.advance(6.0)
    report(pool, a, "named_metrics.num_requests_waiting=2")
    report(pool, b, "named_metrics.num_requests_waiting=4")
    now = clock()
    # c's report is stale now: it counts as none, as d's, at the median of 2 and 4.
    picker = least_loaded(clock, max_age=5.0).build(pool.snapshot)
    assert picker.cost(c, now) == picker.cost(d, now) == 3.0


def test_ejected_and_excluded_pods_are_not_picked() -> None:
    clock = ManualClock()
    pool = make_pool(3, clock)
    a, b, _c = pool.snapshot.members
    balancer = Balancer(pool, least_loaded(clock))
    pool.begin(a).done(Outcome.REFUSED)  # ejected at once
    assert "10.0.0.1" not in shares(balancer, 100)
    assert set(shares(balancer, 50, PickContext(exclude=frozenset({b.key})))) == {"10.0.0.3"}


def test_least_loaded_validation() -> None:
    with pytest.raises(ConfigurationError, match=r"LeastLoaded\.metric"):
        LeastLoaded(metric="")
    with pytest.raises(ConfigurationError, match=r"LeastLoaded\.metric_weight"):
        LeastLoaded(metric_weight=-1)
    with pytest.raises(ConfigurationError, match=r"LeastLoaded\.max_age"):
        LeastLoaded(max_age=0)


# -- both, with the pool's other mechanisms ----------------------------------------------------
@pytest.mark.parametrize("factory", [WeightedRoundRobin, LeastLoaded])
def test_held_off_ejected_and_unsubset_pods_get_nothing(
    factory: type[WeightedRoundRobin] | type[LeastLoaded],
) -> None:
    clock = ManualClock()
    place = Subset(4, client=3).place({}, random.Random(3))
    pool = make_pool(12, clock, subset=Subsetter(4, place))
    for state in pool.snapshot.members:
        report(pool, state, "rps_fractional=10, cpu_utilization=0.5, named_metrics.x=1")
    clock.advance(11.0)
    balancer = Balancer(pool, factory(random.Random(4), clock=clock))
    in_use = {s.endpoint.ip for s in pool.snapshot.eligible}
    assert set(shares(balancer, 400)) == in_use and len(in_use) == 4
    held, ejected = pool.snapshot.eligible[:2]
    pool.hold_off(held, 5.0)  # a 429 with Retry-After: 5
    assert pool.eject(ejected.key)
    seen = set(shares(balancer, 400))
    assert held.endpoint.ip not in seen and ejected.endpoint.ip not in seen
    assert len(seen) == 4  # the subset's ring replaced both from outside
    clock.advance(6.0)  # the hold-off ends; the ejection (10 s) does not yet
    assert held.endpoint.ip in set(shares(balancer, 400))
