"""Sharding: a request with a key goes to the endpoint that owns the key.

:class:`ConsistentHash` has two modes:

``over="endpoint"`` (default)
    A Maglev table over the members' identities ``"ip:port"`` (:class:`~.hashtables.MaglevTable`):
    ``owner = table[key_hash(key) % M]``. Balance within ~1 %; adding or removing one member moves
    ≈ 1/N of the keys (while the table size stays put: it changes only when the member count
    crosses a power of two, see :func:`~.hashtables.maglev_table_size`).

``over="ordinal"``
    Jump consistent hash over StatefulSet ordinals: ``owner = by_ordinal[base + jump(key_hash(key),
    N)]``, bucket b standing for ordinal base + b, with N = highest ordinal among the members −
    base + 1. Scaling N → N+1 moves exactly the keys that now belong to the new highest ordinal,
    and N → N−1 exactly those of the old one. Members without an ordinal (or below the base) get
    no keys; when no member has an ordinal, ``pick`` returns ``None``.

    The base is where the StatefulSet's ordinals start (``spec.ordinals.start``: 0 unless set, but
    it may be 1000 or 4,000,000). Pass it as ``ConsistentHash(over="ordinal", start=...)`` to pin
    it. Without it, it is read off the members: the lowest ordinal present rounded down to a
    multiple of the smallest power of ten that is >= 10 and >= the span of the ordinals present
    (highest − lowest + 1). That is 0 for an ordinary StatefulSet, and stays 0 while ``web-0``
    restarts (a rolling update restarts it last; the bare lowest ordinal would then move every
    key, twice), and it is 4,000,000 for Pods 4,000,000 … 4,000,009, with or without the first.
    Owners are kept by bucket in a dict, so the cost depends on the Pods present, never on the
    ordinal values (gaps after a scale-down included).

Keys are hashed with :func:`~.hashtables.key_hash` (stable across processes; ``str`` as UTF-8,
``int`` as decimal text).

**Fallover.** When a key's owner may not take the request (ejected, failing health checks, absent,
or in ``ctx.exclude`` because this request already tried it), the pick moves on deterministically,
so every client sends the key to the same second choice, and the key returns to its owner as soon
as the owner is eligible again (nothing is rebuilt on health changes):

- Maglev walks the table forward (wrapping) from the key's slot to the first slot whose owner is
  eligible and not excluded. Consecutive slots belong to unrelated members, so an ejected member's
  keys spread over all the others instead of piling onto one neighbour. When no member of the
  table may take the key, it goes to an eligible Pod outside the table, by a jump over the
  eligible Pods in (ip, port) order as below: with ``subset=``, the table covers the client's N
  core Pods whatever their health, and when all N are held off or ejected the ring's
  replacements take their keys instead of every keyed request failing.
- Jump re-jumps with the key re-hashed, ``jump(mix64(h + i), N)`` for i = 1 … 8, which again
  spreads the keys evenly; should all of those miss (a bucket with no eligible Pod: absent,
  ejected, excluded, or a gap), it jumps over the list of eligible Pods sorted by ordinal,
  ``eligible[jump(mix64(h + 9), len(eligible))]``, stepping on past any excluded one: again even,
  and never a walk over the ordinals' span. When fewer than half of the N buckets have a Pod
  (sparse ordinals), the re-jumps would mostly miss and are skipped: a pick costs one jump over N
  and one over the eligible Pods, whatever the ordinal values.

**Rebuilds and the event loop.** A Maglev build takes 15-25 ms of pure Python up to 512 members
and ~40-50 ms at 1,000 (M = 102,407).
The table depends on membership alone and is kept as long as the snapshot's members are the same
objects (``membership_version`` moves on hostname changes too, which Maglev does not care about).
The I/O shells run :meth:`ConsistentHash.prepare` in a worker thread when they start (over the
pool they start with, usually empty) and after every membership change
(``anyio.to_thread.run_sync(balancer.prepare, snapshot)``, every configured factory, used yet or
not). The new table is built in locals, holding the factory's lock, and published with one
attribute assignment, so a picker on the loop sees either the old table or the complete new one,
never a half-built one.

Once :meth:`~ConsistentHash.prepare` has been called, :meth:`~ConsistentHash.build` (on the
event loop, or in a sync client's request thread) neither builds a table nor takes that lock, so
no request waits for a build. Until the new membership's table is published its picker serves
from the previous table — members that left count as ineligible (fallover), members that joined
own no keys yet — and where that table has nobody for a key (none of its members left eligible:
the whole membership replaced, as a blue/green selector switch or a Recreate rollout does), or
there is no table yet, by the jump over the eligible Pods in (ip, port) order that is every
table's last resort: deterministic, so clients in the same state agree. It switches itself to
the new table on its first pick after publication. A factory nobody prepares (the pure core used
on its own) builds each new membership's table in ``build`` instead.

**fork().** A child forked while the parent's thread was building holds a copy of the taken
lock, which nothing there will release: the lock comes from :mod:`~headlesslb.core.forksafe`,
so the child has a new one, and the child's discovery builds the table again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence, Set
from typing import Literal

from ...errors import ConfigurationError
from .. import forksafe
from ..names import ORDINAL_MAX
from ..snapshot import EndpointState, Snapshot
from .base import PickContext, Picker
from .bounded import BoundedLoadPicker
from .hashtables import _KEY_HASHER as _PROTO
from .hashtables import (
    MASK64,
    MaglevTable,
    jump_hash,
    key_hash,
    maglev_table_size,
    mix64,
    next_prime,
)

__all__ = ["ConsistentHash", "JumpPicker", "MaglevPicker", "identity", "key_hash"]

# key_hash inlined for str keys in pick(): saves a call, ~80 ns of a ~600 ns pick.
_new_hasher = _PROTO.copy
_from_bytes = int.from_bytes

_REJUMPS = 8
"""Salted re-jumps before the jump picker falls back to jumping over the eligible Pods."""


def identity(state: EndpointState) -> str:
    """What a member is hashed by in the Maglev table: ``"ip:port"``, port in decimal."""
    ip, port = state.key
    return f"{ip}:{port}"


def _hash_key(key: object) -> int:
    if key is None:
        raise TypeError("the sharding picker needs ctx.key")
    return key_hash(key)  # type: ignore[arg-type]  # key_hash rejects other types itself


class _Table:
    """A published Maglev table and the members (same objects, same order) it was built from."""

    __slots__ = ("maglev", "members")

    def __init__(
        self, members: tuple[EndpointState, ...], maglev: MaglevTable[EndpointState]
    ) -> None:
        self.members = members
        self.maglev = maglev


class MaglevPicker:
    """Picks a key's owner from a Maglev table, falling over along the table."""

    __slots__ = ("_all_ok", "_entries", "_factory", "_ok", "_seen", "_size", "_snapshot")

    def __init__(
        self, table: _Table, snapshot: Snapshot, pending: ConsistentHash | None = None
    ) -> None:
        self._snapshot = snapshot
        self._factory = pending
        self._seen = table
        self._use(table)

    def _use(self, table: _Table) -> None:
        maglev = table.maglev
        in_table = frozenset(maglev.items)
        # Health and exclusion are checked per pick against the snapshot: the table itself never
        # changes on an ejection, which is what brings keys back to their owner afterwards.
        ok = frozenset(s for s in self._snapshot.eligible if s in in_table)
        all_ok = len(ok) == len(in_table)
        self._ok = ok
        self._all_ok = all_ok
        self._size = maglev.size
        self._entries = maglev.entries

    @property
    def stale(self) -> bool:
        """True while serving from a previous membership's table (the new one is being built)."""
        return self._factory is not None

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The owner of ``ctx.key``, or the next eligible owner along the table."""
        if self._factory is not None:
            self._catch_up()
        key = ctx.key
        if type(key) is str:
            hasher = _new_hasher()
            hasher.update(key.encode())
            h = _from_bytes(hasher.digest(), "big")
        else:
            h = _hash_key(key)
        slot = h % self._size
        state = self._entries[slot]
        exclude = ctx.exclude
        if (self._all_ok or state in self._ok) and (not exclude or state.key not in exclude):
            return state
        return self._fallover(slot, h, exclude)

    def owner(self, key: str | bytes | int) -> EndpointState:
        """The table owner of ``key``, eligible or not (for tests and diagnostics)."""
        return self._entries[key_hash(key) % self._size]

    def _fallover(self, slot: int, h: int, excluded: Set[tuple[str, int]]) -> EndpointState | None:
        ok = self._ok
        # Walking the whole table to find nobody would cost ~10 ms at 1,000 members.
        if ok and not (len(excluded) >= len(ok) and all(s.key in excluded for s in ok)):
            entries = self._entries
            size = self._size
            all_ok = self._all_ok
            i = slot
            # Every member owns a slot (M >= N, members take turns): this finds one in ok.
            for _ in range(size):
                i += 1
                if i == size:
                    i = 0
                state = entries[i]
                if (all_ok or state in ok) and state.key not in excluded:
                    return state
        # No member of the table may take the key; eligible Pods outside it may (a subset's
        # replacements for its held-off or ejected core, Pods that joined since the build).
        return _jump_among(self._snapshot.eligible, h, excluded)

    def _catch_up(self) -> None:
        factory = self._factory
        assert factory is not None
        published = factory._table
        if published is self._seen or published is None:
            return
        self._seen = published
        if published.members == self._snapshot.table_members:
            self._use(published)
            self._factory = None


def _ordinal_base(ordinals: Iterable[int]) -> int:
    """The jump picker's base when ``start`` is not given (see the module docstring)."""
    present = [o for o in ordinals if 0 <= o <= ORDINAL_MAX]
    if not present:
        return 0
    low = min(present)
    span = max(present) - low + 1
    step = 10
    while step < span:
        step *= 10
    return low - low % step


class JumpPicker:
    """Picks a key's owner among StatefulSet ordinals with jump consistent hash."""

    __slots__ = ("_base", "_eligible", "_n", "_owners", "_rejumps")

    def __init__(self, snapshot: Snapshot, start: int | None = None) -> None:
        by_ordinal = snapshot.by_ordinal
        base = _ordinal_base(by_ordinal) if start is None else start
        eligible = frozenset(snapshot.eligible)
        owners: dict[int, EndpointState] = {}
        n = present = 0
        for ordinal, state in by_ordinal.items():
            if not base <= ordinal <= ORDINAL_MAX:
                continue  # below spec.ordinals.start: a Pod on its way out
            bucket = ordinal - base
            n = max(n, bucket + 1)
            present += 1
            if state in eligible:
                owners[bucket] = state
        self._base = base
        self._n = n
        self._owners = owners
        self._eligible = tuple(owners[b] for b in sorted(owners))
        # Re-jumps pay only when most buckets have a Pod; over sparse ordinals they would miss.
        self._rejumps = _REJUMPS if 2 * present >= n else 0

    @property
    def buckets(self) -> int:
        """N: the highest ordinal among the members − :attr:`base` + 1 (0 when none has one)."""
        return self._n

    @property
    def base(self) -> int:
        """The ordinal of bucket 0: ``start`` if given, else read off the members."""
        return self._base

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The member whose ordinal owns ``ctx.key``, or the deterministic fallover."""
        n = self._n
        if not n:
            return None
        key = ctx.key
        if type(key) is str:
            hasher = _new_hasher()
            hasher.update(key.encode())
            h = _from_bytes(hasher.digest(), "big")
        else:
            h = _hash_key(key)
        # jump_hash inlined: a call is ~10 % of the pick.
        k = h
        b = -1
        j = 0
        while j < n:
            b = j
            k = (k * 2862933555777941757 + 1) & MASK64
            j = ((b + 1) << 31) // ((k >> 33) + 1)
        state = self._owners.get(b)
        exclude = ctx.exclude
        if state is not None and (not exclude or state.key not in exclude):
            return state
        return self._fallover(h, exclude)

    def ordinal_of(self, key: str | bytes | int) -> int:
        """The ordinal that owns ``key`` (present or not); -1 when there are no ordinals."""
        return self._base + jump_hash(key_hash(key), self._n) if self._n else -1

    def _fallover(self, h: int, excluded: Set[tuple[str, int]]) -> EndpointState | None:
        owners = self._owners
        n = self._n
        for i in range(1, self._rejumps + 1):
            state = owners.get(jump_hash(mix64(h + i), n))
            if state is not None and state.key not in excluded:
                return state
        return _jump_among(self._eligible, h, excluded)


def _jump_among(
    candidates: Sequence[EndpointState], h: int, excluded: Set[tuple[str, int]]
) -> EndpointState | None:
    """The last resort of both pickers for key hash ``h``: jump over ``candidates`` (in an order
    every client agrees on), stepping on past excluded ones; None if all are excluded."""
    count = len(candidates)
    if not count or (len(excluded) >= count and all(s.key in excluded for s in candidates)):
        return None
    # Every step past an excluded Pod is one fewer left to exclude: at most len(excluded) + 1.
    i = jump_hash(mix64(h + _REJUMPS + 1), count)
    while candidates[i].key in excluded:
        i = i + 1 if i + 1 < count else 0
    return candidates[i]


class _Unbuilt:
    """The picker of a membership whose first table is still being built off the request path:
    keys jump over the eligible Pods (a table's own last resort), and from the first pick after
    a table is published, the picker of that table serves instead."""

    __slots__ = ("_factory", "_picker", "_snapshot")

    def __init__(self, snapshot: Snapshot, factory: ConsistentHash) -> None:
        self._snapshot = snapshot
        self._factory = factory
        self._picker: Picker | None = None

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The jump over the eligible Pods, or the published table's pick."""
        picker = self._picker
        if picker is None:
            if self._factory._table is None:
                return _jump_among(self._snapshot.eligible, _hash_key(ctx.key), ctx.exclude)
            picker = self._picker = self._factory._build(self._snapshot)
        return picker.pick(ctx)


class _NoMembers:
    """The picker of an empty snapshot."""

    __slots__ = ()

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """Always ``None``: there is nobody to pick."""
        return None


class ConsistentHash:
    """Factory: sharding by ``ctx.key``, over endpoints (Maglev) or StatefulSet ordinals (jump).

    ``table_size_factor`` sets the Maglev table size to about that many slots per member (rounded
    up to a power of two of members, then to a prime); ``table_size`` fixes it instead (a prime,
    e.g. 65537 as Envoy does) so that scaling never reshuffles keys, at a fixed build cost.
    ``start`` (``over="ordinal"`` only) is the StatefulSet's ``spec.ordinals.start``, the ordinal
    jump's bucket 0 stands for; by default it is read off the members (see the module docstring).
    """

    def __init__(
        self,
        over: Literal["endpoint", "ordinal"] = "endpoint",
        *,
        table_size_factor: int = 100,
        table_size: int | None = None,
        start: int | None = None,
        balance_factor: float | None = None,
    ) -> None:
        from ..validate import count, number  # imported here: this edit stays inside __init__

        if over not in ("endpoint", "ordinal"):
            raise ConfigurationError(
                f'ConsistentHash.over must be "endpoint" or "ordinal", not {over!r}'
            )
        # The StatefulSet's spec.ordinals.start: the ordinal of jump bucket 0 (over="ordinal").
        self.start = count("ConsistentHash.start", start, min=0, max=ORDINAL_MAX, allow_none=True)
        if start is not None and over != "ordinal":
            raise ConfigurationError('ConsistentHash.start applies to over="ordinal" only')
        count("ConsistentHash.table_size_factor", table_size_factor, min=1, max=10_000)
        # Envoy caps a Maglev table at 5,000,011 slots; a bigger one would only cost build time.
        size = count("ConsistentHash.table_size", table_size, min=2, max=5_000_011, allow_none=True)
        if size is not None and next_prime(size) != size:
            raise ConfigurationError(f"ConsistentHash.table_size must be a prime, not {size}")
        self.balance_factor = number(
            "ConsistentHash.balance_factor", balance_factor, min=1, allow_none=True
        )
        """Bounded load (see :mod:`.bounded`): a key's owner takes it while its load is at most
        this × the mean; None (default) keeps strict affinity."""
        self.name = "consistent_hash"
        self.over = over
        self.table_size_factor = table_size_factor
        self.table_size = table_size
        self._table: _Table | None = None
        # A forked child gets a new one: a build the parent's thread ran holding it never ends
        # there, so the copied lock would stay taken for ever.
        self._lock = forksafe.lock(self)
        self._prepared = False
        """Whether :meth:`prepare` was ever called: from then on it builds every table, and
        :meth:`build` builds none."""

    def _settings(self) -> tuple[object, ...]:
        return (self.over, self.table_size_factor, self.table_size, self.start, self.balance_factor)

    def __eq__(self, other: object) -> bool:
        """Equal settings build equal tables: two clients' runtime specs compare it by value."""
        if not isinstance(other, ConsistentHash):
            return NotImplemented
        return self._settings() == other._settings()

    def __hash__(self) -> int:
        return hash(self._settings())

    def prepare(self, snapshot: Snapshot, pause: Callable[[], None] | None = None) -> None:
        """Build the Maglev table for ``snapshot``'s members unless it exists (slow; thread-safe).

        Meant for a worker thread after a membership change; a no-op for ``over="ordinal"``.
        ``pause`` is offered every fraction of a millisecond of the build (see
        :class:`MaglevTable`). Once called, even on an empty snapshot (as the I/O shells do
        when they start), it is the one place tables are built.
        """
        self._prepared = True
        if self.over == "endpoint" and snapshot.table_members:
            self._ensure(snapshot.table_members, pause)

    def build(self, snapshot: Snapshot) -> Picker:
        """A picker for ``snapshot``, cheap once :meth:`prepare` has been called (else it builds
        the table for a new membership itself). With a ``balance_factor`` the picker bounds each
        owner's load at pick time."""
        picker = self._build(snapshot)
        factor = self.balance_factor
        return picker if factor is None else BoundedLoadPicker(picker, snapshot, factor)

    def _build(self, snapshot: Snapshot) -> Picker:
        if self.over == "ordinal":
            return JumpPicker(snapshot, self.start)
        members = snapshot.table_members
        if not members:
            return _NoMembers()
        table = self._table
        if table is not None and table.members == members:
            return MaglevPicker(table, snapshot)
        if not self._prepared:
            return MaglevPicker(self._ensure(members), snapshot)  # nobody else builds it
        # A worker thread builds it (or is about to), holding the lock: never wait for that.
        if table is None:
            return _Unbuilt(snapshot, self)
        return MaglevPicker(table, snapshot, pending=self)

    def _ensure(
        self, members: tuple[EndpointState, ...], pause: Callable[[], None] | None = None
    ) -> _Table:
        table = self._table
        if table is not None and table.members == members:
            return table
        with self._lock:  # one build per membership even if several threads ask
            table = self._table
            if table is not None and table.members == members:
                return table
            size = self.table_size
            if size is None or size < len(members):
                size = maglev_table_size(len(members), self.table_size_factor)
            maglev = MaglevTable(members, [identity(s) for s in members], size, pause)
            table = _Table(members, maglev)
            self._table = table  # the one publishing assignment
            return table
