"""Least-request and peak-EWMA (power of two choices), pure, with a manual clock and seeded rng."""

from __future__ import annotations

import collections
import math
import random

import pytest

from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.ewma import PeakEwmaEstimator
from headlesslb.core.pickers import make_picker
from headlesslb.core.pickers.base import NO_CONTEXT, PickContext
from headlesslb.core.pickers.p2c import PENALTY, LeastRequest, PeakEwma, PeakEwmaPicker
from headlesslb.core.pool import Attempt, Outcome, OutlierPolicy, Pool
from headlesslb.core.snapshot import EndpointState
from headlesslb.errors import ConfigurationError


def make_pool(n: int, clock: ManualClock) -> Pool:
    pool = Pool(OutlierPolicy(jitter=0), clock=clock, rng=random.Random(0))
    pool.update(Resolution(tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(1, n + 1)), ttl=5))
    return pool


def serve(pool: Pool, clock: ManualClock, state: EndpointState, latency: float) -> None:
    """One request on ``state`` that takes ``latency`` seconds."""
    attempt = pool.begin(state)
    clock.advance(latency)
    attempt.done(Outcome.SUCCESS)


def picks(picker: object, count: int, ctx: PickContext = NO_CONTEXT) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        state = picker.pick(ctx)  # type: ignore[attr-defined]
        assert state is not None
        out[state.endpoint.ip] += 1
    return out


@pytest.mark.parametrize("factory", [LeastRequest, PeakEwma])
def test_no_member_starved_when_equal(factory: type[LeastRequest] | type[PeakEwma]) -> None:
    clock = ManualClock()
    for n in (2, 5, 20):
        pool = make_pool(n, clock)
        kwargs = {"clock": clock} if factory is PeakEwma else {}
        picker = factory(rng=random.Random(n), **kwargs).build(pool.snapshot)  # type: ignore[arg-type]
        counts = picks(picker, n * 20)
        assert len(counts) == n
        big = picks(picker, 20_000)  # ties are broken fairly
        assert max(big.values()) / min(big.values()) < 1.25


def test_least_request_avoids_a_loaded_member() -> None:
    clock = ManualClock()
    pool = make_pool(5, clock)
    busy = pool.snapshot.members[2]
    held = [pool.begin(busy) for _ in range(50)]
    picker = LeastRequest(random.Random(1)).build(pool.snapshot)
    counts = picks(picker, 2000)
    assert counts[busy.endpoint.ip] <= 20  # P2C never prefers it over a less loaded one
    for attempt in held:
        attempt.done(Outcome.SUCCESS)
    assert picks(picker, 2000)[busy.endpoint.ip] > 250  # live counters: back at once


def test_least_request_prefers_fewer_in_flight() -> None:
    clock = ManualClock()
    pool = make_pool(4, clock)
    members = pool.snapshot.members
    held: list[Attempt] = []
    for i, state in enumerate(members):
        held += [pool.begin(state) for _ in range(i * 3)]
    counts = picks(LeastRequest(random.Random(2)).build(pool.snapshot), 6000)
    shares = [counts[s.endpoint.ip] for s in members]
    assert shares == sorted(shares, reverse=True)
    # Exactly: member i wins when paired with anyone busier, i.e. (n−1−i) of its pairs.
    assert shares[0] == pytest.approx(6000 / 2, rel=0.08)
    assert shares[3] == 0


@pytest.mark.parametrize("factory", [LeastRequest, PeakEwma])
def test_exclude(factory: type[LeastRequest] | type[PeakEwma]) -> None:
    clock = ManualClock()
    pool = make_pool(4, clock)
    keys = [s.key for s in pool.snapshot.members]
    picker = factory(rng=random.Random(0)).build(pool.snapshot)
    assert set(picks(picker, 200, PickContext(exclude=frozenset(keys[:2])))) == {
        "10.0.0.3",
        "10.0.0.4",
    }
    assert set(picks(picker, 20, PickContext(exclude=frozenset(keys[:3])))) == {"10.0.0.4"}
    assert picker.pick(PickContext(exclude=frozenset(keys))) is None


@pytest.mark.parametrize("factory", [LeastRequest, PeakEwma])
def test_empty_and_single(factory: type[LeastRequest] | type[PeakEwma]) -> None:
    clock = ManualClock()
    assert factory().build(Pool(clock=clock).snapshot).pick(NO_CONTEXT) is None
    pool = make_pool(1, clock)
    only = pool.snapshot.members[0]
    assert factory().build(pool.snapshot).pick(NO_CONTEXT) is only


def test_ejected_members_are_not_picked() -> None:
    clock = ManualClock()
    pool = make_pool(5, clock)
    victim = pool.snapshot.members[0]
    pool.eject(victim.key)
    for factory in (LeastRequest(random.Random(0)), PeakEwma(random.Random(0), clock=clock)):
        assert victim.endpoint.ip not in picks(factory.build(pool.snapshot), 500)


def test_peak_ewma_steers_away_from_a_slow_member_and_back_after_decay() -> None:
    clock = ManualClock()
    pool = make_pool(5, clock)
    members = pool.snapshot.members
    slow = members[0]
    serve(pool, clock, slow, 1.0)
    for state in members[1:]:
        serve(pool, clock, state, 0.01)
    picker = PeakEwma(random.Random(3), clock=clock).build(pool.snapshot)  # decay: 10 s
    assert picks(picker, 2000)[slow.endpoint.ip] == 0  # 100× slower: never the cheaper of two
    # A minute without traffic: its average decays (e^-6 ≈ 0.0025 s) while the others keep
    # answering in 10 ms, so it is attractive again.
    clock.advance(60)
    for state in members[1:]:
        serve(pool, clock, state, 0.01)
    share = picks(picker, 2000)[slow.endpoint.ip] / 2000
    assert share > 0.3


def test_peak_ewma_weighs_in_flight() -> None:
    clock = ManualClock()
    pool = make_pool(2, clock)
    a, b = pool.snapshot.members
    serve(pool, clock, a, 0.01)
    serve(pool, clock, b, 0.01)
    held = [pool.begin(a) for _ in range(3)]
    picker = PeakEwma(random.Random(0), clock=clock).build(pool.snapshot)
    assert set(picks(picker, 50)) == {b.endpoint.ip}
    for attempt in held:
        attempt.done(Outcome.CANCELLED)
    assert picks(picker, 50)[a.endpoint.ip] > 0  # back as soon as its requests finish


def test_peak_ewma_unknown_members_are_neither_starved_nor_flooded() -> None:
    clock = ManualClock()
    pool = make_pool(5, clock)
    members = pool.snapshot.members
    newcomer = members[4]
    for latency, state in zip((0.01, 0.02, 0.03, 0.04), members[:4], strict=True):
        serve(pool, clock, state, latency)
    assert pool.latency.decayed(newcomer, clock()) is None
    picker = PeakEwma(random.Random(4), clock=clock).build(pool.snapshot)
    share = picks(picker, 4000)[newcomer.endpoint.ip] / 4000
    assert 0.1 < share < 0.45  # costed like the median (~25 ms): between the 2nd and 3rd
    # No latency known anywhere: everyone costs default_rtt, a fair share each.
    fresh = make_pool(4, clock)
    counts = picks(PeakEwma(random.Random(5), clock=clock).build(fresh.snapshot), 4000)
    assert min(counts.values()) > 800


def test_peak_ewma_penalises_zero_latency_with_pending_requests() -> None:
    clock = ManualClock()
    pool = make_pool(2, clock)
    a, b = pool.snapshot.members
    serve(pool, clock, a, 0.0)  # answered in "no time" (a manual clock, or a cached reply)
    serve(pool, clock, b, 0.05)
    picker = PeakEwma(random.Random(0), clock=clock).build(pool.snapshot)
    assert picker.cost(a, clock()) == 0.0
    held = pool.begin(a)
    assert picker.cost(a, clock()) == PENALTY + 1
    assert set(picks(picker, 50)) == {b.endpoint.ip}
    held.done(Outcome.SUCCESS)


def test_peak_ewma_validation() -> None:
    with pytest.raises(ConfigurationError):
        PeakEwmaEstimator(decay=0)
    with pytest.raises(ConfigurationError):
        PeakEwma(default_rtt=-1)


@pytest.mark.parametrize("decay", [1.0, 10.0, 60.0])
def test_peak_ewma_reads_latencies_with_the_pools_decay(decay: float) -> None:
    # One estimator, the pool's, updates the averages and decays them for the pickers: a
    # picker by name decays with whatever OutlierPolicy.latency_decay the pool has.
    clock = ManualClock()
    pool = Pool(OutlierPolicy(latency_decay=decay), clock=clock)
    pool.update(Resolution(tuple(Endpoint(f"10.0.0.{i}", 80) for i in (1, 2)), ttl=5))
    a, b = pool.snapshot.members
    serve(pool, clock, a, 0.1)
    serve(pool, clock, b, 0.1)
    clock.advance(decay)
    picker = make_picker("peak_ewma", rng=random.Random(0), clock=clock).build(pool.snapshot)
    assert isinstance(picker, PeakEwmaPicker)
    assert picker.cost(b, clock()) == pytest.approx(0.1 / math.e)  # b answered last
    assert pool.snapshot.latency == PeakEwmaEstimator(decay)


def test_seeded_rng_is_deterministic() -> None:
    clock = ManualClock()
    pool = make_pool(10, clock)
    runs = [
        [
            s.key
            for s in (
                LeastRequest(random.Random(9)).build(pool.snapshot).pick(NO_CONTEXT)
                for _ in range(50)
            )
            if s is not None
        ]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
