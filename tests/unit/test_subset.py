"""Deterministic subsetting, in pure simulation: fleets of clients over Pools, no sockets."""

from __future__ import annotations

import collections
import random
import threading

import pytest

from headlesslb import ConfigurationError, Subset
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pool import Pool
from headlesslb.core.snapshot import EndpointState
from headlesslb.core.subset import (
    ClientPlace,
    Subsetter,
    as_subset,
    placement,
    van_der_corput,
    window,
)


def pods(count: int, *, ordinals: bool = True) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(
            f"10.{i // 250}.{i % 250}.1",
            80,
            f"web-{i}" if ordinals else None,
            i if ordinals else None,
        )
        for i in range(count)
    )


def fleet_load(clients: int, servers: int, size: int, *, ordinals: bool = True) -> list[int]:
    ring = placement([EndpointState(e) for e in pods(servers, ordinals=ordinals)])
    load: collections.Counter[tuple[str, int]] = collections.Counter()
    for c in range(clients):
        place = Subset(size, client=c).place({}, random.Random(0))
        for state in window(ring, place.position)[:size]:
            load[state.key] += 1
    return [load[s.key] for s in ring]


def test_van_der_corput_fills_the_largest_gap() -> None:
    assert [van_der_corput(i) for i in range(4)] == [0.0, 0.5, 0.25, 0.75]


@pytest.mark.parametrize(("clients", "servers"), [(100, 100), (1000, 500)])
@pytest.mark.parametrize("ordinals", [True, False])
def test_a_fleet_of_ordinal_clients_spreads_evenly(
    clients: int, servers: int, ordinals: bool
) -> None:
    load = fleet_load(clients, servers, 10, ordinals=ordinals)
    assert max(load) / (sum(load) / len(load)) <= 1.1


def test_scaling_ordinal_pods_moves_about_the_ideal() -> None:
    def assignments(servers: int) -> list[frozenset[tuple[str, int]]]:
        ring = placement([EndpointState(e) for e in pods(servers)])
        return [frozenset(s.key for s in window(ring, van_der_corput(c))[:10]) for c in range(1000)]

    before, after = assignments(500), assignments(501)
    moved = sum(len(b - a) for a, b in zip(before, after, strict=True))
    assert moved <= 1.1 * 1000 * 10 / 501


def make_pool(client: int, members: tuple[Endpoint, ...], clock: ManualClock) -> Pool:
    place = Subset(10, client=client).place({}, random.Random(client))
    pool = Pool(clock=clock, rng=random.Random(client), subset=Subsetter(10, place))
    pool.update(Resolution(members, 5.0))
    return pool


def test_pools_use_n_pods_and_replace_an_ejected_one_from_outside() -> None:
    clock = ManualClock()
    members = pods(500)
    fleet = [make_pool(c, members, clock) for c in range(250)]  # 1000 × 500: the tests above
    assert all(len(p.snapshot.eligible) == 10 for p in fleet)
    victim = fleet[0].snapshot.eligible[0]
    users = [p for p in fleet if victim in p.snapshot.eligible]
    replacements = collections.Counter()
    for pool in users:
        before = set(pool.snapshot.eligible)
        assert pool.eject(victim.key)
        after = set(pool.snapshot.eligible)
        assert len(after) == 10 and victim not in after
        (new,) = after - before
        replacements[new.key] += 1
        assert victim in pool.snapshot.watched  # probed, so a health check can bring it back
    assert max(replacements.values()) <= 2  # its load spreads over many Pods, not onto one
    clock.advance(400)
    assert all(victim in p.snapshot.eligible for p in users)  # back after the ejection


def test_identity_from_the_environment() -> None:
    rng = random.Random(1)
    assert Subset(5).place({"POD_NAME": "worker-3"}, rng).mode == "ordinal"
    assert Subset(5).place({"HOSTNAME": "api-7d9f8-x2kq"}, rng).mode == "name"
    assert Subset(5).place({}, rng).mode == "random"
    assert Subset(5, "worker-3").place({}, rng).position == Subset(5, 3).place({}, rng).position


@pytest.mark.parametrize(
    ("size", "client", "match"),
    [
        (0, None, "Subset.size"),
        (True, None, "Subset.size"),
        (3, 2.5, "Subset.client"),
        (3, -1, "Subset.client"),
        (3, " ", "Subset.client"),
    ],
)
def test_bad_subsets_are_refused(size: object, client: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Subset(size, client)  # type: ignore[arg-type]


def test_health_checks_watch_at_most_twice_n_while_pods_start_unhealthy() -> None:
    place = Subset(10, client=0).place({}, random.Random(0))
    pool = Pool(clock=ManualClock(), new_endpoints_healthy=False, subset=Subsetter(10, place))
    pool.update(Resolution(pods(500), 5.0))
    assert len(pool.snapshot.watched) == 20 and not pool.snapshot.eligible
    for state in pool.snapshot.watched[:15]:
        pool.set_health(state.key, True)
    assert len(pool.snapshot.eligible) == 10


@pytest.mark.parametrize("value", ["10", True, 2.0])
def test_the_subset_argument_is_checked(value: object) -> None:
    with pytest.raises(ConfigurationError, match="subset must be"):
        as_subset(value)
    assert as_subset(3) == Subset(3) and as_subset(None) is None


def test_keys_spread_over_the_subset_and_stay_inside_it() -> None:
    from headlesslb.core.balancer import Balancer
    from headlesslb.core.pickers import ConsistentHash, make_picker
    from headlesslb.core.pickers.base import PickContext

    pool = make_pool(3, pods(100), ManualClock())
    balancer = Balancer(pool, make_picker("round_robin"), sharding=ConsistentHash())
    owners = collections.Counter(balancer.pick(PickContext(key=f"k{i}")) for i in range(2000))
    assert set(owners) == set(pool.snapshot.eligible)
    assert max(owners.values()) < 2 * 2000 / 10
    first = pool.snapshot.eligible[0]
    pool.eject(first.key)
    moved = {balancer.pick(PickContext(key=f"k{i}")) for i in range(2000)}
    assert first not in moved and moved <= set(pool.snapshot.eligible) | set(
        pool.snapshot.subset or ()
    )


class _PausingSize(Subsetter):
    """A Subsetter whose ``size``, read once the ring order is known, waits once when armed."""

    def __init__(self, size: int, place: ClientPlace) -> None:
        self.armed = False
        self.paused = threading.Event()
        self.resume = threading.Event()
        super().__init__(size, place)

    @property  # type: ignore[override]
    def size(self) -> int:
        if self.armed:
            self.armed = False
            self.paused.set()
            assert self.resume.wait(5.0)
        return self._size

    @size.setter
    def size(self, value: int) -> None:
        self._size = value


def test_a_membership_cached_in_another_thread_meanwhile_never_mixes_with_this_one() -> None:
    # Two threads place two memberships at once: the first is paused between working out its
    # ring order and its core, the second places its own meanwhile. What stays cached must be
    # one membership's order and core, whichever thread published last.
    place = ClientPlace(0.3, "ordinal", "index 3")
    subsetter = _PausingSize(3, place)
    first = tuple(EndpointState(e) for e in pods(8))
    second = tuple(EndpointState(e) for e in pods(6))
    subsetter.armed = True
    thread = threading.Thread(target=subsetter.order, args=(first,), daemon=True)
    thread.start()
    assert subsetter.paused.wait(5.0)
    subsetter.order(second)
    subsetter.resume.set()
    thread.join(5.0)
    assert not thread.is_alive()
    for members in (first, second, first):
        order = window(placement(members), place.position)
        assert subsetter.order(members) == order
        assert subsetter.core(members) == tuple(sorted(order[:3], key=lambda s: s.key))
