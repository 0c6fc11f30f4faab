"""Sharding: the stable key hash, the Maglev table and picker, jump hash over ordinals (pure)."""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headlesslb.core.balancer import Balancer
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pickers.base import PickContext
from headlesslb.core.pickers.hashing import ConsistentHash, JumpPicker, MaglevPicker
from headlesslb.core.pickers.hashtables import (
    MaglevTable,
    endpoint_hashes,
    jump_hash,
    key_hash,
    maglev_table_size,
    next_prime,
)
from headlesslb.core.pickers.round_robin import RoundRobin
from headlesslb.core.pool import OutlierPolicy, Pool
from headlesslb.core.snapshot import EndpointState, Snapshot
from headlesslb.errors import ConfigurationError

KEYS = [f"key-{i}" for i in range(100_000)]


def endpoints(ips: Sequence[int], *, ordinals: bool = False) -> tuple[Endpoint, ...]:
    return tuple(
        Endpoint(
            f"10.0.{i // 250}.{i % 250 + 1}",
            8080,
            f"web-{i}" if ordinals else None,
            i if ordinals else None,
        )
        for i in ips
    )


def make_pool(eps: Sequence[Endpoint], clock: ManualClock | None = None) -> Pool:
    pool = Pool(OutlierPolicy(jitter=0), clock=clock or ManualClock(), rng=random.Random(0))
    pool.update(Resolution(tuple(eps), ttl=5))
    return pool


def owners(eps: Sequence[Endpoint], keys: Sequence[str], over: str = "endpoint") -> list[str]:
    """Where each key goes with a fresh pool and factory (as a separate client would see it)."""
    picker = ConsistentHash(over).build(make_pool(eps).snapshot)  # type: ignore[arg-type]
    out = []
    for k in keys:
        state = picker.pick(PickContext(key=k))
        assert state is not None
        out.append(state.endpoint.ip)
    return out


def pick(
    picker: object, key: str, exclude: frozenset[tuple[str, int]] = frozenset()
) -> EndpointState | None:
    return picker.pick(PickContext(key=key, exclude=exclude))  # type: ignore[attr-defined, no-any-return]


# -- the key hash ------------------------------------------------------------------------------
def test_key_hash_known_values() -> None:
    # Pinned: changing the hash or the key encoding silently re-shards every user's keys.
    assert key_hash("") == 0xCAB7A1BD5BD8D92D
    assert key_hash("user-42") == 0x1843C1FB8FEEC96A
    assert key_hash(b"\x00\xff") == 0x8595B54F3B2CAAE0
    assert key_hash(42) == 0x33807D3AB12B2CAD
    assert key_hash("ключ") == 0x0BEA0A133E8049E5


def test_key_hash_encodings() -> None:
    assert key_hash(42) == key_hash("42") == key_hash(b"42")  # ints hash as their decimal text
    assert key_hash(-7) == key_hash("-7")
    assert key_hash(2**100) == key_hash(str(2**100))  # no size limit
    assert key_hash(True) == key_hash(1)
    assert key_hash("é") == key_hash("é".encode())  # str is UTF-8
    assert key_hash(bytearray(b"ab")) == key_hash(memoryview(b"ab")) == key_hash(b"ab")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str, bytes or int"):
        key_hash(1.5)  # type: ignore[arg-type]


@given(st.one_of(st.text(), st.binary(), st.integers()))
def test_key_hash_is_64_bit(key: str | bytes | int) -> None:
    assert 0 <= key_hash(key) < 2**64


def test_key_hash_is_stable_across_processes() -> None:
    keys: list[str | bytes | int] = [f"user-{i}" for i in range(200)]
    keys += [i * 7919 - 500 for i in range(100)] + [bytes([i, 255 - i]) * 3 for i in range(100)]
    script = (
        "import json, sys\n"
        "from headlesslb.core.pickers.hashtables import key_hash, endpoint_hashes\n"
        "keys = json.load(sys.stdin)\n"
        "keys = [bytes.fromhex(k[2:]) if isinstance(k, str) and k.startswith('b:') else k "
        "for k in keys]\n"
        "print(json.dumps([key_hash(k) for k in keys] + list(endpoint_hashes('10.0.0.1:80'))))\n"
    )
    wire = [f"b:{k.hex()}" if isinstance(k, bytes) else k for k in keys]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(wire),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    there = json.loads(out.stdout)
    here = [key_hash(k) for k in keys] + list(endpoint_hashes("10.0.0.1:80"))
    assert there == here


# -- the Maglev table --------------------------------------------------------------------------
def textbook_maglev(identities: Sequence[str], m: int) -> list[int]:
    """The population loop exactly as written in the Maglev paper, for comparison."""
    order = sorted(range(len(identities)), key=identities.__getitem__)
    perms = []
    for i in order:
        h1, h2 = endpoint_hashes(identities[i])
        perms.append((h1 % m, h2 % (m - 1) + 1))
    nxt = [0] * len(order)
    table = [-1] * m
    filled = 0
    while True:
        for n, i in enumerate(order):
            offset, skip = perms[n]
            c = (offset + nxt[n] * skip) % m
            while table[c] >= 0:
                nxt[n] += 1
                c = (offset + nxt[n] * skip) % m
            table[c] = i
            nxt[n] += 1
            filled += 1
            if filled == m:
                return table


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 5000), min_size=1, max_size=40, unique=True),
    st.sampled_from([211, 401, 1009, 4099]),
)
def test_maglev_table_matches_the_paper(ids: list[int], m: int) -> None:
    identities = [f"10.1.{i // 256}.{i % 256}:80" for i in ids]
    if m < len(identities):
        return
    table = MaglevTable(list(range(len(ids))), identities, m)
    assert table.entries == textbook_maglev(identities, m)
    counts = collections.Counter(table.entries)
    assert max(counts.values()) - min(counts.values()) <= 1  # members take turns


def test_maglev_table_ignores_input_order() -> None:
    identities = [f"10.0.0.{i}:80" for i in range(1, 30)]
    a = MaglevTable(identities, identities)
    shuffled = identities[:]
    random.Random(5).shuffle(shuffled)
    b = MaglevTable(shuffled, shuffled)
    assert a.entries == b.entries


def test_table_size() -> None:
    assert next_prime(100) == 101 and next_prime(101) == 101 and next_prime(1) == 2
    assert maglev_table_size(1) == maglev_table_size(512) == 65537
    assert maglev_table_size(513) == maglev_table_size(1000) == maglev_table_size(1024)
    assert maglev_table_size(1000) == next_prime(102400)
    assert maglev_table_size(10, factor=10_000) == next_prime(160_000)
    for n in (1, 3, 10, 100, 999):
        assert maglev_table_size(n) >= 100 * n
    with pytest.raises(ValueError):
        MaglevTable([1, 2], ["a", "a"])
    with pytest.raises(ValueError):
        MaglevTable([1, 2, 3], ["a", "b", "c"], size=2)


# -- the Maglev picker -------------------------------------------------------------------------
def test_maglev_balance() -> None:
    counts = collections.Counter(owners(endpoints(range(10)), KEYS))
    assert len(counts) == 10
    mean = len(KEYS) / 10
    assert max(counts.values()) / mean <= 1.05


def test_maglev_adding_a_member_moves_about_one_nth() -> None:
    before = owners(endpoints(range(10)), KEYS)
    after = owners(endpoints(range(11)), KEYS)
    new_ip = endpoints([10])[0].ip
    moved = [a for b, a in zip(before, after, strict=True) if a != b]
    assert len(moved) / len(KEYS) <= 1.1 * (1 / 11)
    assert sum(1 for a in moved if a == new_ip) / len(moved) > 0.9  # mostly onto the newcomer


def test_maglev_removing_a_member_moves_its_keys_and_little_else() -> None:
    before = owners(endpoints(range(10)), KEYS)
    gone = endpoints([4])[0].ip
    after = owners(endpoints([i for i in range(10) if i != 4]), KEYS)
    others_moved = sum(1 for b, a in zip(before, after, strict=True) if b != gone and a != b)
    assert others_moved / len(KEYS) <= 0.01
    assert all(a != gone for a in after)


def test_maglev_fallover_and_return() -> None:
    clock = ManualClock()
    pool = make_pool(endpoints(range(10)), clock)
    factory = ConsistentHash()
    balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=factory)
    keys = KEYS[:3000]

    def route() -> list[EndpointState | None]:
        return [balancer.pick(PickContext(key=k)) for k in keys]

    home = route()
    victim = home[0]
    assert victim is not None
    assert pool.eject(victim.key)
    away = route()
    assert victim not in away and None not in away
    for h, a in zip(home, away, strict=True):
        if h is not victim:
            assert a is h  # only the ejected member's keys move
    # The ejected member's keys spread over the others instead of piling onto one.
    spread = collections.Counter(a for h, a in zip(home, away, strict=True) if h is victim)
    assert len(spread) >= 5
    # Deterministic: another client (own pool, own factory) falls over the same way.
    other_pool = make_pool(endpoints(range(10)))
    assert other_pool.eject(victim.key)
    other = ConsistentHash().build(other_pool.snapshot)
    assert [s.key for s in away] == [pick(other, k).key for k in keys]  # type: ignore[union-attr]
    clock.advance(11)  # base ejection 10 s, no jitter
    pool.tick()
    assert route() == home


def test_maglev_respects_exclude() -> None:
    pool = make_pool(endpoints(range(5)))
    picker = ConsistentHash().build(pool.snapshot)
    all_keys = frozenset(s.key for s in pool.snapshot.members)
    for k in KEYS[:500]:
        first = pick(picker, k)
        assert first is not None
        second = pick(picker, k, frozenset({first.key}))
        assert second is not None and second is not first
        assert pick(picker, k, frozenset({first.key})) is second  # deterministic
        third = pick(picker, k, frozenset({first.key, second.key}))
        assert third is not None and third not in (first, second)
        assert pick(picker, k, all_keys) is None


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30),
    st.sets(st.integers(0, 29)),
    st.sets(st.integers(0, 29)),
    st.lists(st.text(max_size=8), min_size=1, max_size=20),
)
def test_maglev_picks_are_eligible_and_not_excluded(
    n: int, ejected: set[int], excluded: set[int], keys: list[str]
) -> None:
    eps = endpoints(range(n))
    pool = Pool(OutlierPolicy(max_ejection_percent=100, panic_threshold=0), clock=ManualClock())
    pool.update(Resolution(eps, ttl=5))
    for i in ejected & set(range(n)):
        pool.eject(eps[i].key)
    snapshot = pool.snapshot
    picker = ConsistentHash().build(snapshot)
    exclude = frozenset(eps[i].key for i in excluded if i < n)
    candidates = [s for s in snapshot.eligible if s.key not in exclude]
    for k in keys:
        state = pick(picker, k, exclude)
        if not candidates:
            assert state is None
        else:
            assert state in candidates
            owner = picker.owner(k)  # type: ignore[union-attr]
            if owner in candidates:
                assert state is owner


def test_empty_snapshot_and_missing_key() -> None:
    pool = Pool(clock=ManualClock())
    pool.update(Resolution((), ttl=5))
    assert ConsistentHash().build(pool.snapshot).pick(PickContext(key="x")) is None
    picker = ConsistentHash().build(make_pool(endpoints(range(3))).snapshot)
    with pytest.raises(TypeError):
        picker.pick(PickContext())
    assert picker.pick(PickContext(key=b"bytes")) is not None
    assert picker.pick(PickContext(key=12345)) is picker.pick(PickContext(key="12345"))


def test_factory_validation() -> None:
    with pytest.raises(ConfigurationError):
        ConsistentHash("ring")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ConsistentHash(table_size_factor=0)
    with pytest.raises(ConfigurationError):
        ConsistentHash(table_size=1000)
    fixed = ConsistentHash(table_size=65537)
    table = fixed.prepare(make_pool(endpoints(range(3))).snapshot)
    assert table is not None and table.maglev.size == 65537


def test_factories_are_values() -> None:
    # Clients whose settings are equal may share a runtime: their factories compare equal.
    assert ConsistentHash() == ConsistentHash() and hash(ConsistentHash()) == hash(ConsistentHash())
    assert ConsistentHash("ordinal", start=5) == ConsistentHash(over="ordinal", start=5)
    assert ConsistentHash() != ConsistentHash(balance_factor=1.25)
    with pytest.raises(AttributeError):
        ConsistentHash().over = "ordinal"  # type: ignore[misc]


# -- rebuilds off the loop ---------------------------------------------------------------------
def test_table_is_reused_while_membership_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []
    real = MaglevTable.__init__

    def counting(self: MaglevTable[object], *args: object, **kwargs: object) -> None:
        built.append(1)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MaglevTable, "__init__", counting)
    pool = make_pool(endpoints(range(5)))
    balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=ConsistentHash())
    balancer.pick(PickContext(key="k"))
    table = balancer.tables.sharding
    pool.eject(pool.snapshot.members[0].key)
    pool.set_health(pool.snapshot.members[1].key, False)
    balancer.pick(PickContext(key="k"))
    balancer.prepare(pool.snapshot)
    assert len(built) == 1 and balancer.tables.sharding is table
    assert ConsistentHash().prepare(pool.snapshot, table) is table  # the factory says so


def test_new_membership_serves_from_previous_table_until_prepared() -> None:
    pool = make_pool(endpoints(range(10)))
    balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=ConsistentHash())
    keys = KEYS[:2000]
    balancer.prepare(pool.snapshot)  # as the I/O shells do, from the first membership on
    before = {k: balancer.pick(PickContext(key=k)) for k in keys}
    old_table = balancer.tables.sharding
    pool.update(Resolution(endpoints([*range(1, 10), 10]), ttl=5))  # 0 leaves, 10 joins
    snapshot = pool.snapshot
    gone = next(s for s in before.values() if s is not None and s.endpoint.ip == "10.0.0.1")
    # The request path does not build: it serves from the old table with fallover.
    during = {k: balancer.pick(PickContext(key=k)) for k in keys}
    assert balancer.tables.sharding is old_table
    picker = balancer.installed.pickers.sharding
    assert isinstance(picker, MaglevPicker) and picker.stale
    for k in keys:
        state = during[k]
        assert state is not None and state in snapshot.members and state is not gone
        assert state.endpoint.ip != "10.0.0.11"  # the newcomer owns no keys yet
        if before[k] is not gone:
            assert state is before[k]
    # The shell prepares in a worker thread and publishes; the next pick installs the table.
    worker = threading.Thread(target=balancer.prepare, args=(snapshot,))
    worker.start()
    worker.join()
    assert balancer.tables.sharding is not old_table
    after = {k: balancer.pick(PickContext(key=k)) for k in keys}
    picker = balancer.installed.pickers.sharding
    assert isinstance(picker, MaglevPicker) and not picker.stale
    assert any(s is not None and s.endpoint.ip == "10.0.0.11" for s in after.values())
    fresh = ConsistentHash().build(snapshot)
    assert all(after[k] is pick(fresh, k) for k in keys)


def test_prepare_builds_the_table_before_any_keyed_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = make_pool(endpoints(range(4)))
    balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=ConsistentHash())
    worker = threading.Thread(target=balancer.prepare, args=(pool.snapshot,))
    worker.start()
    worker.join()
    assert balancer.tables.sharding is not None  # built off the request path, at once
    built = []
    real = MaglevTable.__init__

    def counting(self: MaglevTable[object], *args: object, **kwargs: object) -> None:
        built.append(1)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MaglevTable, "__init__", counting)
    assert balancer.pick(PickContext(key="user-1")) in pool.snapshot.members
    assert built == []  # the first keyed request found the table ready


def test_without_prepare_the_balancer_builds_each_new_table() -> None:
    # The pure core used alone: nobody prepares, so a new membership's table is built when its
    # pickers are installed.
    pool = make_pool(endpoints(range(3)))
    balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=ConsistentHash())
    for ips in (range(3), range(1, 4), range(4, 7)):  # the first, an overlapping, a disjoint
        pool.update(Resolution(endpoints(ips), ttl=5))
        snapshot: Snapshot = pool.snapshot
        picks = {k: balancer.pick(PickContext(key=k)) for k in KEYS[:50]}
        picker = balancer.installed.pickers.sharding
        assert isinstance(picker, MaglevPicker) and not picker.stale
        fresh = ConsistentHash().build(snapshot)
        assert all(picks[k] is pick(fresh, k) for k in KEYS[:50])


@pytest.mark.parametrize("before", ["no table yet", "a disjoint table"])
def test_keyed_picks_never_wait_for_a_table_build(before: str) -> None:
    # The I/O shells prepare the empty pool they start with, then every membership, in a
    # worker thread; here that thread stops mid-build (holding the balancer's lock) until
    # released, while keyed picks for the new membership go on.
    pool = make_pool(endpoints(range(10) if before == "a disjoint table" else []))
    balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=ConsistentHash())
    balancer.prepare(pool.snapshot)
    pool.update(Resolution(endpoints(range(10, 20)), ttl=5))
    building, release = threading.Event(), threading.Event()

    def stop_here() -> None:
        building.set()
        release.wait(30)

    builder = threading.Thread(target=balancer.prepare, args=(pool.snapshot, stop_here))
    builder.start()
    assert building.wait(30)
    keys = KEYS[:500]
    during: dict[str, EndpointState | None] = {}
    picker = threading.Thread(
        target=lambda: during.update({k: balancer.pick(PickContext(key=k)) for k in keys})
    )
    picker.start()
    picker.join(5)  # a deadline, not a timing: the build cannot end before release
    waited = picker.is_alive()
    release.set()
    picker.join()
    assert not waited, "a keyed pick waited for the table build"
    builder.join()
    # Served at once by a jump over the new eligible Pods: spread, and what any other client
    # in the same state picks (one whose old table has no eligible member left).
    assert set(during.values()) == set(pool.snapshot.members)
    other = ConsistentHash()
    stale = other.build_from(pool.snapshot, other.prepare(make_pool(endpoints(range(5))).snapshot))
    assert all(during[k] is pick(stale, k) for k in keys)
    # Published: the next pick switches to the table.
    after = {k: balancer.pick(PickContext(key=k)) for k in keys}
    fresh = ConsistentHash().build(pool.snapshot)
    assert all(after[k] is pick(fresh, k) for k in keys)


# -- jump hash over ordinals -------------------------------------------------------------------
@given(st.integers(0, 2**64 - 1), st.integers(1, 2000))
def test_jump_hash_moves_only_to_the_new_bucket(key: int, n: int) -> None:
    a = jump_hash(key, n)
    b = jump_hash(key, n + 1)
    assert 0 <= a < n
    assert b in (a, n)


def test_jump_hash_reference_values() -> None:
    # Guava's golden values ("implementations across languages are equivalent").
    golden100 = [0, 55, 62, 8, 45, 59, 86, 97, 82, 59, 73, 37, 17, 56, 86, 21, 90, 37, 38, 83]
    assert [jump_hash(i, 100) for i in range(20)] == golden100
    assert jump_hash(10863919174838991, 11) == 6
    assert jump_hash(2016238256797177309, 11) == 3
    assert jump_hash(1673758223894951030, 11) == 5
    assert jump_hash(2, 100001) == 80343
    assert jump_hash(2201, 100001) == 22152
    assert jump_hash(2202, 100001) == 15018
    with pytest.raises(ValueError):
        jump_hash(1, 0)


@pytest.mark.parametrize("n", [3, 10, 50])
def test_jump_scaling_moves_exactly_the_new_ordinals_keys(n: int) -> None:
    keys = KEYS[:20_000]
    small = owners(endpoints(range(n), ordinals=True), keys, over="ordinal")
    big = owners(endpoints(range(n + 1), ordinals=True), keys, over="ordinal")
    newest = endpoints([n], ordinals=True)[0].ip
    for s, b in zip(small, big, strict=True):
        assert b in (s, newest)
    assert abs(big.count(newest) / len(keys) - 1 / (n + 1)) < 0.02
    # N → N−1 is the same pair read the other way: only ordinal N−1's keys move.
    counts = collections.Counter(big)
    assert max(counts.values()) / (len(keys) / (n + 1)) < 1.15


def test_jump_fallover_and_exclude() -> None:
    clock = ManualClock()
    eps = endpoints(range(6), ordinals=True)
    pool = make_pool(eps, clock)
    factory = ConsistentHash("ordinal")
    balancer = Balancer(pool, RoundRobin(random.Random(0)), sharding=factory)
    keys = KEYS[:3000]
    home = [balancer.pick(PickContext(key=k)) for k in keys]
    victim = pool.snapshot.by_ordinal[2]
    assert pool.eject(victim.key)
    away = [balancer.pick(PickContext(key=k)) for k in keys]
    assert victim not in away and None not in away
    assert all(a is h for h, a in zip(home, away, strict=True) if h is not victim)
    spread = collections.Counter(a for h, a in zip(home, away, strict=True) if h is victim)
    assert len(spread) == 5  # spread over every other ordinal
    other_pool = make_pool(eps)
    other_pool.eject(victim.key)
    other = JumpPicker(other_pool.snapshot)
    assert [s.key for s in away] == [pick(other, k).key for k in keys]  # type: ignore[union-attr]
    clock.advance(11)
    pool.tick()
    assert [balancer.pick(PickContext(key=k)) for k in keys] == home
    every = frozenset(e.key for e in eps)
    picker = JumpPicker(pool.snapshot)
    for k in keys[:200]:
        first = pick(picker, k)
        assert first is not None
        second = pick(picker, k, frozenset({first.key}))
        assert second is not None and second is not first
        assert pick(picker, k, every) is None


def test_jump_missing_ordinals() -> None:
    # web-1 is gone from DNS (restarting): N stays 4, its keys fall over, the rest stay.
    full = make_pool(endpoints(range(4), ordinals=True)).snapshot
    partial = make_pool(endpoints([0, 2, 3], ordinals=True)).snapshot
    a, b = JumpPicker(full), JumpPicker(partial)
    assert a.buckets == b.buckets == 4
    for k in KEYS[:2000]:
        pa, pb = pick(a, k), pick(b, k)
        assert pa is not None and pb is not None
        assert pb.endpoint.ordinal != 1
        if pa.endpoint.ordinal != 1:
            assert pa.endpoint == pb.endpoint
        assert a.ordinal_of(k) == pa.endpoint.ordinal
    # No ordinals at all (a Deployment): nothing to shard over.
    assert JumpPicker(make_pool(endpoints(range(3))).snapshot).pick(PickContext(key="k")) is None


# -- jump over real StatefulSet ordinals (spec.ordinals.start, gaps, huge values) ---------------
def pods(ordinals: Sequence[int]) -> tuple[Endpoint, ...]:
    """Pods ``web-<o>`` with the given ordinals, on distinct addresses (by position)."""
    return tuple(
        Endpoint(f"10.1.{i // 250}.{i % 250 + 1}", 8080, f"web-{o}", o)
        for i, o in enumerate(ordinals)
    )


def spread(picker: object, keys: Sequence[str]) -> collections.Counter[int]:
    counts: collections.Counter[int] = collections.Counter()
    for k in keys:
        state = pick(picker, k)
        assert state is not None and state.endpoint.ordinal is not None
        counts[state.endpoint.ordinal] += 1
    return counts


def assert_even(counts: collections.Counter[int], ordinals: Sequence[int], total: int) -> None:
    assert set(counts) == set(ordinals)
    for o in ordinals:
        assert abs(counts[o] / total - 1 / len(ordinals)) < 0.3 / len(ordinals), (o, counts)


@pytest.mark.parametrize("start", [1, 1000, 4_000_000])
def test_jump_over_ordinals_from_spec_ordinals_start(start: int) -> None:
    keys = KEYS[:10_000]
    ten = list(range(start, start + 10))
    picker = JumpPicker(make_pool(pods(ten)).snapshot)
    assert_even(spread(picker, keys), ten, len(keys))
    assert picker.buckets <= 20  # not start + 10: nothing is sized by the ordinal values
    for k in keys[:500]:
        assert picker.ordinal_of(k) in range(picker.base, picker.base + picker.buckets)
    # Scaling 10 → 11 moves only keys to the new Pod, about 1/11 of them.
    bigger = JumpPicker(make_pool(pods([*ten, start + 10])).snapshot)
    before, after = (
        [pick(p, k).endpoint.ordinal for k in keys]  # type: ignore[union-attr]
        for p in (picker, bigger)
    )
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert all(a == start + 10 for _, a in moved)
    assert abs(len(moved) / len(keys) - 1 / 11) < 0.02


@pytest.mark.parametrize("first", [0, 1000, 4_000_000])
def test_jump_keys_stay_put_while_the_lowest_pod_restarts(first: int) -> None:
    # A rolling update restarts the lowest ordinal last: while it is out of DNS only its keys
    # may move, exactly as for any other Pod.
    keys = KEYS[:5000]
    full = JumpPicker(make_pool(pods(range(first, first + 6))).snapshot)
    without = JumpPicker(make_pool(pods(range(first + 1, first + 6))).snapshot)
    for k in keys:
        a, b = pick(full, k), pick(without, k)
        assert a is not None and b is not None and b.endpoint.ordinal != first
        if a.endpoint.ordinal != first:
            assert a.endpoint.ordinal == b.endpoint.ordinal


def test_jump_over_sparse_and_huge_ordinals() -> None:
    keys = KEYS[:10_000]
    top_ordinal = 2**31 - 1  # ORDINAL_MAX
    sparse = [0, 7, 1000, 50_000, top_ordinal]
    pool = make_pool(pods(sparse))
    picker = JumpPicker(pool.snapshot)
    assert_even(spread(picker, keys), sparse, len(keys))
    # The same answer from another client; exclusion and ejection fall over among the others.
    again = JumpPicker(make_pool(pods(sparse)).snapshot)
    assert all(pick(picker, k).key == pick(again, k).key for k in keys[:500])  # type: ignore[union-attr]
    every = frozenset(e.key for e in pods(sparse))
    for k in keys[:500]:
        first = pick(picker, k)
        assert first is not None
        second = pick(picker, k, frozenset({first.key}))
        assert second is not None and second is not first
        assert pick(picker, k, every) is None
    top = [top_ordinal - 2, top_ordinal - 1, top_ordinal]
    assert_even(spread(JumpPicker(make_pool(pods(top)).snapshot), keys), top, len(keys))


def test_jump_with_an_explicit_start() -> None:
    keys = KEYS[:4000]
    factory = ConsistentHash("ordinal", start=1000)
    picker = factory.build(make_pool(pods(range(1000, 1004))).snapshot)
    assert isinstance(picker, JumpPicker) and picker.base == 1000 and picker.buckets == 4
    # Pinned, the base never moves, whoever is missing; Pods below the start get no keys.
    gone = factory.build(make_pool(pods([999, 1002, 1003])).snapshot)
    assert isinstance(gone, JumpPicker) and gone.base == 1000
    for k in keys:
        a, b = pick(picker, k), pick(gone, k)
        assert a is not None and b is not None and b.endpoint.ordinal in (1002, 1003)
        if a.endpoint.ordinal in (1002, 1003):
            assert a.endpoint.ordinal == b.endpoint.ordinal
    assert ConsistentHash("ordinal", start=0).start == 0


@pytest.mark.parametrize("start", [-1, True, 2**31, "5", 1.0, 10**30])
def test_jump_start_is_validated(start: object) -> None:
    with pytest.raises(ConfigurationError, match="start"):
        ConsistentHash("ordinal", start=start)  # type: ignore[arg-type]


def test_jump_start_is_for_ordinals_only() -> None:
    with pytest.raises(ConfigurationError, match="start"):
        ConsistentHash("endpoint", start=0)


def test_a_table_build_pauses_often_and_builds_the_same_table() -> None:
    ids = [f"10.0.{i // 250}.{i % 250}:80" for i in range(600)]
    pauses: list[int] = []
    paused = MaglevTable(ids, ids, 65537, pause=lambda: pauses.append(1))
    assert paused.entries == MaglevTable(ids, ids, 65537).entries
    assert len(pauses) > 65537 // 1024  # about every thousand fills, more as the table fills
