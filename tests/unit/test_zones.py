"""Zone-aware picking with spill-over (pure: the pool with an injected clock)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from headlesslb import ConfigurationError
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, EndpointStatus, Resolution, zone_shares
from headlesslb.core.pool import Outcome, OutlierPolicy, Pool
from headlesslb.core.zones import ZonePolicy


def pods(per_zone: int = 3, zones: str = "abc", hinted: bool = False) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(
            f"10.0.{z}.{i + 1}",
            80,
            zone=zone,
            for_zones=(zone,) if hinted else (),
        )
        for z, zone in enumerate(zones)
        for i in range(per_zone)
    )


def pool_of(endpoints: tuple[Endpoint, ...], **zone: float) -> Pool:
    pool = Pool(
        OutlierPolicy(jitter=0.0, max_ejection_percent=100),
        clock=ManualClock(),
        rng=random.Random(1),
        zone=ZonePolicy("a", **zone),
    )
    pool.update(Resolution(endpoints, ttl=5))
    return pool


def eject(pool: Pool, *ips: str) -> None:
    for ip in ips:
        assert pool.eject((ip, 80))


def zones_of(pool: Pool) -> set[str | None]:
    return {s.endpoint.zone for s in pool.snapshot.eligible}


def test_healthy_local_zone_keeps_the_traffic() -> None:
    pool = pool_of(pods())
    assert zones_of(pool) == {"a"} and pool.snapshot.in_zone
    assert len(pool.snapshot.eligible) == 3


def test_losing_one_of_three_stays_losing_two_spills() -> None:
    pool = pool_of(pods())
    eject(pool, "10.0.0.1")  # overload (3/2) × (8/9) = 1.33 <= 1.5
    assert zones_of(pool) == {"a"} and len(pool.snapshot.eligible) == 2
    eject(pool, "10.0.0.2")  # (3/1) × (7/9) = 2.33 > 1.5: every eligible Pod, local one too
    assert zones_of(pool) == {"a", "b", "c"} and not pool.snapshot.in_zone
    assert len(pool.snapshot.eligible) == 7
    assert pool.end_ejection(("10.0.0.2", 80))
    assert zones_of(pool) == {"a"}


def test_strict_envoy_rule_spills_at_the_first_loss() -> None:
    pool = pool_of(pods(), max_overload=1.0)
    eject(pool, "10.0.0.1")
    assert zones_of(pool) == {"a", "b", "c"}


def test_hints_choose_the_local_pods_when_every_pod_has_them() -> None:
    hinted = pods(hinted=True)
    # The controller lent one of zone b's Pods to zone a.
    lent = tuple(
        dataclasses.replace(e, for_zones=("a",)) if e.ip == "10.0.1.1" else e for e in hinted
    )
    pool = pool_of(lent)
    assert sorted(s.endpoint.ip for s in pool.snapshot.eligible) == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        "10.0.1.1",
    ]
    # One Pod without hints: hints are not used at all (kube-proxy's rule), zones are.
    mixed = (*lent[:-1], dataclasses.replace(lent[-1], for_zones=()))
    pool.update(Resolution(mixed, ttl=5))
    assert zones_of(pool) == {"a"} and len(pool.snapshot.eligible) == 3


def test_no_local_pods_or_panic_turn_it_off() -> None:
    pool = pool_of(pods(zones="bc"))
    assert zones_of(pool) == {"b", "c"} and not pool.snapshot.in_zone
    pool = pool_of(pods())
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.0.1.2"):
        pool.begin(pool.member((ip, 80)) or pytest.fail(ip)).done(Outcome.REFUSED)
    assert pool.snapshot.panic and not pool.snapshot.in_zone


def test_terminating_local_pods_count_as_gone() -> None:
    endpoints = tuple(
        dataclasses.replace(e, terminating=e.ip in ("10.0.0.1", "10.0.0.2")) for e in pods()
    )
    pool = pool_of(endpoints)
    # One live local Pod of 7 live: (1/1) × (7/7) = 1: it keeps the zone's (smaller) share.
    assert [s.endpoint.ip for s in pool.snapshot.eligible] == ["10.0.0.3"]


def test_policy_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        ZonePolicy("")
    with pytest.raises(ConfigurationError):
        ZonePolicy("a", max_overload=0.5)


def status(zone: str | None, requests: int) -> EndpointStatus:
    return EndpointStatus(
        "10.0.0.1", 80, None, None, True, False, 0, requests, 0, None, None, zone=zone
    )


def test_zone_shares() -> None:
    assert zone_shares([]) == {}
    shares = zone_shares([status("a", 9), status("a", 9), status("b", 2), status(None, 0)])
    assert shares == {"a": 0.9, "b": 0.1, None: 0.0}


def test_a_local_pod_turning_not_ready_is_lost_capacity() -> None:
    # The slices list 3 Pods per zone; two of zone a turn not ready and leave the members.
    listed = pods()
    ready = tuple(e for e in listed if e.ip not in ("10.0.0.1", "10.0.0.2"))
    sizes = (("a", 3), ("b", 3), ("c", 3))
    pool = pool_of(listed)
    pool.update(Resolution(ready, ttl=5, zone_sizes=sizes))
    # (3/1) × (7/9) = 2.33: spill, though the members alone would say a zone of one Pod.
    assert zones_of(pool) == {"a", "b", "c"}
    pool.update(Resolution(ready, ttl=5))  # without sizes: the members' zones
    assert zones_of(pool) == {"a"}
    # The same members, sizes changing alone, still rebuild.
    pool.update(Resolution(ready, ttl=5, zone_sizes=sizes))
    assert zones_of(pool) == {"a", "b", "c"}
