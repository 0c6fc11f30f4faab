"""The pool: membership, stats across refreshes, outlier ejection, panic, drain (no sockets)."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import pytest

from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pool import Outcome, OutlierPolicy, Pool
from headlesslb.errors import ConfigurationError


def eps(n: int, port: int = 80) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.0.0.{i + 1}", port, f"web-{i}", i) for i in range(n))


def make_pool(n: int = 4, **policy: float) -> tuple[Pool, ManualClock]:
    clock = ManualClock()
    pool = Pool(OutlierPolicy(jitter=0.0, **policy), clock=clock, rng=random.Random(1))  # type: ignore[arg-type]
    pool.update(Resolution(eps(n), ttl=5))
    return pool, clock


def fail(pool: Pool, index: int, outcome: Outcome = Outcome.GATEWAY_ERROR, times: int = 1) -> None:
    for _ in range(times):
        pool.begin(pool.snapshot.members[index]).done(outcome)


def test_update_builds_sorted_snapshot_and_keeps_stats() -> None:
    pool, _ = make_pool(3)
    snap = pool.snapshot
    assert [s.endpoint.ip for s in snap.members] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert snap.eligible == snap.members and not snap.panic
    assert set(snap.by_ordinal) == {0, 1, 2}
    pool.begin(snap.members[0]).done(Outcome.SUCCESS)
    pool.update(Resolution(eps(3)[::-1], ttl=5))  # same Pods, other order
    assert pool.snapshot is snap  # nothing changed: no rebuild
    pool.update(Resolution(eps(4), ttl=5))
    assert pool.snapshot.membership_version == snap.membership_version + 1
    assert pool.snapshot.members[0].requests == 1  # stats survived the refresh


def test_removed_endpoint_drains_and_in_flight_completes() -> None:
    pool, _ = make_pool(3)
    leaving = pool.snapshot.members[2]
    attempt = pool.begin(leaving)
    pool.update(Resolution(eps(2), ttl=5))
    assert leaving not in pool.snapshot.members
    assert leaving.draining and leaving.status(0.0).draining
    attempt.done(Outcome.SUCCESS)
    assert leaving.in_flight == 0


def test_attempt_reports_once() -> None:
    pool, _ = make_pool(1)
    attempt = pool.begin(pool.snapshot.members[0])
    attempt.done(Outcome.SUCCESS)
    with pytest.raises(RuntimeError, match="twice"):
        attempt.done(Outcome.SUCCESS)


def test_consecutive_failures_eject_with_growing_duration() -> None:
    pool, clock = make_pool(4, consecutive_failures=3, base_ejection=10.0)
    fail(pool, 0, times=2)
    assert pool.snapshot.members[0].available
    fail(pool, 0)
    victim = pool.snapshot.members[0]
    assert not victim.available
    assert victim not in pool.snapshot.eligible
    assert victim.ejected_until == pytest.approx(clock.now + 10.0)
    clock.advance(10.0)
    assert victim in pool.snapshot.eligible  # the snapshot accessor ran the due tick
    fail(pool, 0, times=3)
    assert victim.ejected_until == pytest.approx(clock.now + 20.0)  # second ejection: 2 × base


def test_success_resets_consecutive_count() -> None:
    pool, _ = make_pool(4, consecutive_failures=3)
    fail(pool, 1, times=2)
    fail(pool, 1, Outcome.SUCCESS)
    fail(pool, 1, times=2)
    assert pool.snapshot.members[1].available


def test_refused_ejects_at_once_and_asks_for_refresh() -> None:
    asked = []
    pool = Pool(OutlierPolicy(jitter=0), clock=ManualClock(), on_refused=lambda: asked.append(1))
    pool.update(Resolution(eps(4), ttl=5))
    fail(pool, 0, Outcome.REFUSED)
    assert not pool.snapshot.members[0].available
    assert asked == [1]


def test_max_ejection_percent_caps_ejections() -> None:
    pool, _ = make_pool(4, consecutive_failures=1, max_ejection_percent=50)
    for i in range(4):
        fail(pool, i)
    assert sum(not s.available for s in pool.snapshot.members) == 2


def test_panic_balances_over_all_members() -> None:
    pool, _ = make_pool(4, consecutive_failures=1, max_ejection_percent=100, panic_threshold=50)
    fail(pool, 0)
    assert not pool.snapshot.panic and len(pool.snapshot.eligible) == 3
    fail(pool, 1)
    fail(pool, 2)
    assert pool.snapshot.panic
    assert pool.snapshot.eligible == pool.snapshot.members


def test_cancelled_attempts_do_not_count_as_failures() -> None:
    pool, _ = make_pool(2, consecutive_failures=1)
    fail(pool, 0, Outcome.CANCELLED, times=5)
    state = pool.snapshot.members[0]
    assert state.available and state.failures == 0 and state.in_flight == 0


def test_peak_ewma_jumps_up_and_decays_down() -> None:
    pool, clock = make_pool(1, latency_decay=10.0)
    state = pool.snapshot.members[0]
    attempt = pool.begin(state)
    clock.advance(0.5)
    attempt.done(Outcome.SUCCESS)
    assert pool.latency.decayed(state, clock()) == pytest.approx(0.5)
    assert pool.snapshot.latency is pool.latency  # what pickers read it through
    clock.advance(10.0)
    assert pool.latency.decayed(state, clock()) == pytest.approx(0.5 / math.e)  # decay = 10 s
    attempt = pool.begin(state)
    clock.advance(0.1)
    attempt.done(Outcome.SUCCESS)
    assert 0.1 < pool.latency.decayed(state, clock()) < 0.5  # type: ignore[operator]


def test_latency_is_measured_to_the_headers_and_in_flight_lasts_to_the_end() -> None:
    # A streamed response: headers after 20 ms, its body open for a minute. Peak-EWMA must see
    # the Pod's 20 ms, and the Pod busy all along (not a one-minute latency afterwards).
    pool, clock = make_pool(1)
    state = pool.snapshot.members[0]
    attempt = pool.begin(state)
    clock.advance(0.02)
    attempt.answer()
    clock.advance(60.0)
    assert state.in_flight == 1
    attempt.done(Outcome.SUCCESS)
    assert state.in_flight == 0
    assert pool.latency.decayed(state, clock()) == pytest.approx(0.02)
    # A stream broken mid-body counts as a failure, with its headers' latency too.
    attempt = pool.begin(state)
    clock.advance(0.02)
    attempt.answer()
    clock.advance(60.0)
    attempt.done(Outcome.RESET)
    assert state.failures == 1 and pool.latency.decayed(state, clock()) == pytest.approx(0.02)


def test_health_verdicts_rebuild_snapshot() -> None:
    pool, _ = make_pool(2)
    key = pool.snapshot.members[0].key
    pool.set_health(key, False)
    assert [s.key for s in pool.snapshot.eligible] == [pool.snapshot.members[1].key]
    assert not pool.statuses()[0].healthy
    pool.set_health(key, True)
    assert len(pool.snapshot.eligible) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consecutive_failures": 0},
        {"base_ejection": 0},
        {"base_ejection": 500},
        {"max_ejection_percent": 120},
        {"jitter": 1.5},
        {"latency_decay": 0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        OutlierPolicy(**kwargs)  # type: ignore[arg-type]


def test_end_ejection_returns_a_member_early() -> None:
    pool, _ = make_pool(3)
    fail(pool, 0, Outcome.REFUSED)
    key = pool.snapshot.members[0].key
    assert not pool.snapshot.members[0].available
    assert pool.end_ejection(key)
    assert pool.snapshot.members[0] in pool.snapshot.eligible
    assert not pool.end_ejection(key)  # nothing to end


def terminating(endpoints: tuple[Endpoint, ...], *indices: int) -> tuple[Endpoint, ...]:
    return tuple(
        dataclasses.replace(e, terminating=True) if i in indices else e
        for i, e in enumerate(endpoints)
    )


def test_terminating_member_drains_in_place() -> None:
    pool, clock = make_pool(3)
    victim = pool.snapshot.members[1]
    attempt = pool.begin(victim)
    pool.update(Resolution(terminating(eps(3), 1), ttl=5))
    snap = pool.snapshot
    assert victim in snap.members and victim not in snap.eligible  # a member, no new requests
    assert snap.by_ordinal[1] is victim  # pinned requests still find their Pod
    status = victim.status(clock())
    assert victim.draining and status.terminating and status.draining
    clock.advance(0.5)
    attempt.done(Outcome.SUCCESS)  # the in-flight request finishes and counts
    assert victim.in_flight == 0 and victim.requests == 1
    # Ready again (a terminating flag cleared): new requests again.
    pool.update(Resolution(eps(3), ttl=5))
    assert victim in pool.snapshot.eligible and not victim.draining


def test_panic_never_routes_to_terminating_members() -> None:
    # A rolling update's end: 3 of 4 Pods terminating, the new one ejected. Panic balances over
    # the admitted live members only, never the terminating ones.
    pool, _ = make_pool(4, max_ejection_percent=100)
    pool.update(Resolution(terminating(eps(4), 0, 1, 2), ttl=5))
    assert [s.endpoint.ip for s in pool.snapshot.eligible] == ["10.0.0.4"]
    assert not pool.snapshot.panic  # 1 of 1 live member is eligible
    fail(pool, 3, Outcome.REFUSED)
    snap = pool.snapshot
    assert snap.panic and [s.endpoint.ip for s in snap.eligible] == ["10.0.0.4"]
    pool.update(Resolution(terminating(eps(4), 0, 1, 2, 3), ttl=5))
    assert pool.snapshot.eligible == () and not pool.snapshot.panic


def test_endpoints_report_remaining_seconds_not_clock_times() -> None:
    pool, clock = make_pool(2, consecutive_failures=1, base_ejection=10.0)
    clock.advance(1000.0)  # a monotonic clock's times are far from 0, and mean nothing elsewhere
    fail(pool, 0)
    clock.advance(4.0)
    ejected, other = pool.statuses()
    assert ejected.ejection_remaining == pytest.approx(6.0) and not ejected.healthy
    assert other.ejection_remaining is None and other.hold_off_remaining is None
    # It reads the same once written out: seconds, from the moment endpoints() was called.
    assert json.loads(json.dumps(dataclasses.asdict(ejected)))["ejection_remaining"] == 6.0
    clock.advance(6.0)
    assert pool.statuses()[0].ejection_remaining is None
