"""Ordinal pinning, the picker factory registry and protocol (pure)."""

from __future__ import annotations

import random

import pytest

from headlesslb.core.balancer import Balancer
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pickers import (
    ConsistentHash,
    LeastRequest,
    Ordinal,
    PeakEwma,
    PickerFactory,
    RoundRobin,
    make_picker,
)
from headlesslb.core.pickers.base import Pause, PickContext, Picker, TablePickerFactory, no_pause
from headlesslb.core.pool import OutlierPolicy, Pool
from headlesslb.core.snapshot import Snapshot
from headlesslb.errors import ConfigurationError, OrdinalNotFound


def statefulset(ordinals: list[int], clock: ManualClock | None = None) -> Pool:
    pool = Pool(OutlierPolicy(jitter=0), clock=clock or ManualClock(), rng=random.Random(0))
    pool.update(
        Resolution(tuple(Endpoint(f"10.0.0.{o + 1}", 80, f"web-{o}", o) for o in ordinals), ttl=5)
    )
    return pool


def test_picks_the_member_with_that_ordinal() -> None:
    pool = statefulset([0, 1, 2, 5])
    picker = Ordinal().build(pool.snapshot)
    for o in (0, 1, 2, 5):
        state = picker.pick(PickContext(ordinal=o))
        assert state is not None and state.endpoint.ordinal == o


def test_missing_ordinal_names_the_available_ones() -> None:
    picker = Ordinal().build(statefulset([0, 2, 1]).snapshot)
    with pytest.raises(OrdinalNotFound, match=r"ordinal 7.*0, 1, 2") as info:
        picker.pick(PickContext(ordinal=7))
    assert info.value.ordinal == 7
    assert info.value.available == (0, 1, 2)
    deployment = Pool(clock=ManualClock())
    deployment.update(Resolution((Endpoint("10.0.0.1", 80),), ttl=5))
    with pytest.raises(OrdinalNotFound, match="none") as info:
        Ordinal().build(deployment.snapshot).pick(PickContext(ordinal=0))
    assert info.value.available == ()


def test_ejected_pinned_member_is_still_returned() -> None:
    clock = ManualClock()
    pool = statefulset([0, 1, 2, 3], clock)
    target = pool.snapshot.by_ordinal[1]
    assert pool.eject(target.key)
    assert target not in pool.snapshot.eligible
    balancer = Balancer(pool, RoundRobin(random.Random(0)), ordinal=Ordinal())
    assert balancer.pick(PickContext(ordinal=1)) is target  # never silently elsewhere
    # ... unless this request already tried it: then there is no other choice.
    assert balancer.pick(PickContext(ordinal=1, exclude=frozenset({target.key}))) is None


def test_ordinal_follows_membership() -> None:
    pool = statefulset([0, 1])
    balancer = Balancer(pool, RoundRobin(random.Random(0)), ordinal=Ordinal())
    with pytest.raises(OrdinalNotFound):
        balancer.pick(PickContext(ordinal=2))
    grown = (*(s.endpoint for s in pool.snapshot.members), Endpoint("10.0.0.3", 80, "web-2", 2))
    pool.update(Resolution(grown, ttl=5))
    state = balancer.pick(PickContext(ordinal=2))
    assert state is not None and state.endpoint.hostname == "web-2"


def test_make_picker_by_name() -> None:
    assert isinstance(make_picker("round_robin"), RoundRobin)
    assert isinstance(make_picker("least_request"), LeastRequest)
    assert isinstance(make_picker("peak_ewma"), PeakEwma)
    assert make_picker("round_robin") is not make_picker("round_robin")  # fresh state each
    mine = LeastRequest(random.Random(1))
    assert make_picker(mine) is mine
    for factory in (RoundRobin(), LeastRequest(), PeakEwma(), ConsistentHash(), Ordinal()):
        assert isinstance(factory, PickerFactory)
        assert factory.name


def test_make_picker_errors() -> None:
    with pytest.raises(ConfigurationError, match="'round_robin', 'least_request', 'peak_ewma'"):
        make_picker("random")
    with pytest.raises(ConfigurationError, match="PickerFactory"):
        make_picker(42)  # type: ignore[arg-type]


class _Mine:
    """A user's factory: a name and build(snapshot), nothing more."""

    name = "mine"

    def build(self, snapshot: Snapshot) -> Picker:
        return RoundRobin(random.Random(0)).build(snapshot)


class _MineWithTable(_Mine):
    """A user's table factory: its "table" is the members' addresses."""

    def __init__(self) -> None:
        self.pauses: list[Pause] = []
        self.tables: list[object] = []

    def prepare(
        self, snapshot: Snapshot, current: tuple[str, ...] | None, pause: Pause
    ) -> tuple[str, ...] | None:
        self.pauses.append(pause)
        table = tuple(s.endpoint.ip for s in snapshot.members)
        return current if table == current else table

    def build_from(self, snapshot: Snapshot, table: tuple[str, ...] | None) -> Picker:
        self.tables.append(table)
        return self.build(snapshot)


def test_a_factory_of_ones_own_with_or_without_tables() -> None:
    pool = statefulset([0, 1])
    plain, tabled = _Mine(), _MineWithTable()
    assert not isinstance(plain, TablePickerFactory)
    assert isinstance(tabled, TablePickerFactory)

    def shells_pause() -> None:
        pass

    for factory in (plain, tabled):
        balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=factory)
        balancer.prepare(pool.snapshot, pause=shells_pause)
        assert balancer.pick(PickContext(key="k")) in pool.snapshot.members
    # prepare got the shell's pause, build_from the published table, and build never ran.
    assert tabled.pauses == [shells_pause]
    assert tabled.tables == [("10.0.0.1", "10.0.0.2")]
    assert balancer.tables.sharding == ("10.0.0.1", "10.0.0.2")
    # Unprepared, the balancer builds the table itself, with a pause that carries on.
    unprepared = Balancer(pool, RoundRobin(random.Random(0)), sharding=_MineWithTable())
    assert unprepared.pick(PickContext(key="k")) in pool.snapshot.members
    assert unprepared.factories.sharding.pauses == [no_pause]  # type: ignore[union-attr]
