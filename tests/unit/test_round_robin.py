"""Round-robin picker and the balancer's routing (pure)."""

from __future__ import annotations

import collections
import random

import pytest

from headlesslb.core.balancer import Balancer
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pickers.base import PickContext
from headlesslb.core.pickers.round_robin import RoundRobin
from headlesslb.core.pool import Outcome, OutlierPolicy, Pool
from headlesslb.errors import ConfigurationError


def pool_of(n: int) -> Pool:
    pool = Pool(OutlierPolicy(jitter=0), clock=ManualClock(), rng=random.Random(0))
    pool.update(Resolution(tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(1, n + 1)), ttl=5))
    return pool


def test_round_robin_is_exactly_even() -> None:
    balancer = Balancer(pool_of(3), RoundRobin(random.Random(3)))
    counts = collections.Counter(balancer.pick().endpoint.ip for _ in range(300))  # type: ignore[union-attr]
    assert set(counts.values()) == {100}


def test_random_start_offset() -> None:
    firsts = {
        Balancer(pool_of(5), RoundRobin(random.Random(seed))).pick().endpoint.ip  # type: ignore[union-attr]
        for seed in range(40)
    }
    assert len(firsts) > 1  # clients do not all start on the same Pod


def test_position_survives_a_snapshot_change() -> None:
    pool = pool_of(3)
    balancer = Balancer(pool, RoundRobin(random.Random(1)))
    seen = [balancer.pick().endpoint.ip for _ in range(2)]  # type: ignore[union-attr]
    pool.update(Resolution(tuple(s.endpoint for s in pool.snapshot.members), ttl=5))
    pool.set_health(pool.snapshot.members[0].key, True)  # forces a new snapshot, same members
    seen.append(balancer.pick().endpoint.ip)  # type: ignore[union-attr]
    assert len(set(seen)) == 3


def test_exclude_skips_tried_endpoints() -> None:
    pool = pool_of(3)
    balancer = Balancer(pool, RoundRobin(random.Random(0)))
    keys = [s.key for s in pool.snapshot.members]
    for _ in range(10):
        state = balancer.pick(PickContext(exclude=frozenset(keys[:2])))
        assert state is not None and state.key == keys[2]
    assert balancer.pick(PickContext(exclude=frozenset(keys))) is None


def test_ejected_endpoints_get_no_picks() -> None:
    pool = pool_of(3)
    balancer = Balancer(pool, RoundRobin(random.Random(0)))
    victim = pool.snapshot.members[1]
    pool.begin(victim).done(Outcome.REFUSED)
    assert all(balancer.pick() is not victim for _ in range(30))


def test_empty_pool_picks_nothing() -> None:
    pool = Pool(clock=ManualClock())
    assert Balancer(pool, RoundRobin()).pick() is None


def test_unconfigured_routes_raise() -> None:
    balancer = Balancer(pool_of(2), RoundRobin())
    with pytest.raises(ConfigurationError, match="sharding"):
        balancer.pick(PickContext(key="k"))
    with pytest.raises(ConfigurationError, match="ordinal"):
        balancer.pick(PickContext(ordinal=0))
