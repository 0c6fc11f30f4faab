"""Sharding: a request with a key goes to the endpoint that owns the key.

:class:`ConsistentHash` has two modes:

``over="endpoint"`` (default)
    A Maglev table over the members' identities ``"ip:port"`` (:class:`~.hashtables.MaglevTable`):
    ``owner = table[key_hash(key) % M]``. Balance within ~1 %; adding or removing one member moves
    ≈ 1/N of the keys (while the table size stays put: it changes only when the member count
    crosses a power of two, see :func:`~.hashtables.maglev_table_size`).

``over="ordinal"``
    Jump consistent hash over StatefulSet ordinals: ``owner = by_ordinal[jump(key_hash(key), N)]``
    with N = highest ordinal among the members + 1. Scaling N → N+1 moves exactly the keys that now
    belong to ordinal N, and N → N−1 exactly those of ordinal N−1. Members without an ordinal get
    no keys; when no member has an ordinal, ``pick`` returns ``None``.

Keys are hashed with :func:`~.hashtables.key_hash` (stable across processes; ``str`` as UTF-8,
``int`` as decimal text).

**Fallover.** When a key's owner may not take the request (ejected, failing health checks, absent,
or in ``ctx.exclude`` because this request already tried it), the pick moves on deterministically,
so every client sends the key to the same second choice, and the key returns to its owner as soon
as the owner is eligible again (nothing is rebuilt on health changes):

- Maglev walks the table forward (wrapping) from the key's slot to the first slot whose owner is
  eligible and not excluded. Consecutive slots belong to unrelated members, so an ejected member's
  keys spread over all the others instead of piling onto one neighbour.
- Jump re-jumps with the key re-hashed, ``jump(mix64(h + i), N)`` for i = 1 … 16, which again
  spreads the keys evenly; should all of those miss, it takes the next ordinal upwards (wrapping)
  that is present, eligible and not excluded.

**Rebuilds and the event loop.** A Maglev build takes 15-25 ms of pure Python up to 512 members
and ~40-50 ms at 1,000 (M = 102,407).
The table depends on membership alone and is kept as long as the snapshot's members are the same
objects (``membership_version`` moves on hostname changes too, which Maglev does not care about).
A rebuild happens only in :meth:`ConsistentHash.prepare`, which the I/O shell runs in a worker
thread after a membership change (``anyio.to_thread.run_sync(balancer.prepare, snapshot)``). The
new table is built in locals and published with one attribute assignment, so a picker on the loop
sees either the old table or the complete new one, never a half-built one.

:meth:`ConsistentHash.build` (which may run on the loop) never builds a table when one exists:
until the new table is published, the picker for the new snapshot serves from the previous table —
members that left count as ineligible (fallover), members that joined own no keys yet — and it
switches itself to the new table on its first pick after publication. Only the very first build
(no table yet: the first keyed request) is done inline, as is the rare build whose previous table
shares no eligible member with the new snapshot (the whole membership replaced at once).
"""

from __future__ import annotations

import threading
from collections.abc import Set
from typing import Literal

from ..errors import ConfigurationError
from ..snapshot import EndpointState, Snapshot
from .base import PickContext
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

_REJUMPS = 16
"""Salted re-jumps before the jump picker falls back to scanning ordinals."""


def identity(state: EndpointState) -> str:
    """What a member is hashed by in the Maglev table: ``"ip:port"``, port in decimal."""
    ip, port = state.key
    return f"{ip}:{port}"


def _hash_other(key: object) -> int:
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
            h = _hash_other(key)
        slot = h % self._size
        state = self._entries[slot]
        exclude = ctx.exclude
        if (self._all_ok or state in self._ok) and (not exclude or state.key not in exclude):
            return state
        return self._fallover(slot, exclude)

    def owner(self, key: str | bytes | int) -> EndpointState:
        """The table owner of ``key``, eligible or not (for tests and diagnostics)."""
        return self._entries[key_hash(key) % self._size]

    def _fallover(self, slot: int, excluded: Set[tuple[str, int]]) -> EndpointState | None:
        ok = self._ok
        if not ok:
            return None
        # Walking the whole table to find nobody would cost ~10 ms at 1,000 members.
        if len(excluded) >= len(ok) and all(s.key in excluded for s in ok):
            return None
        entries = self._entries
        size = self._size
        all_ok = self._all_ok
        i = slot
        # Every member owns at least one slot (M >= N, members take turns), so this terminates.
        for _ in range(size):
            i += 1
            if i == size:
                i = 0
            state = entries[i]
            if (all_ok or state in ok) and state.key not in excluded:
                return state
        return None

    def _catch_up(self) -> None:
        factory = self._factory
        assert factory is not None
        published = factory._table
        if published is self._seen or published is None:
            return
        self._seen = published
        if published.members == self._snapshot.members:
            self._use(published)
            self._factory = None


class JumpPicker:
    """Picks a key's owner among StatefulSet ordinals with jump consistent hash."""

    __slots__ = ("_n", "_owners")

    def __init__(self, snapshot: Snapshot) -> None:
        by_ordinal = snapshot.by_ordinal
        n = max(by_ordinal) + 1 if by_ordinal else 0
        eligible = frozenset(snapshot.eligible)
        owners: list[EndpointState | None] = [None] * n
        for ordinal, state in by_ordinal.items():
            if ordinal >= 0 and state in eligible:
                owners[ordinal] = state
        self._n = n
        self._owners = owners

    @property
    def buckets(self) -> int:
        """N: the highest ordinal among the members + 1 (0 when no member has an ordinal)."""
        return self._n

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
            h = _hash_other(key)
        # jump_hash inlined: a call is ~10 % of the pick.
        k = h
        b = -1
        j = 0
        while j < n:
            b = j
            k = (k * 2862933555777941757 + 1) & MASK64
            j = ((b + 1) << 31) // ((k >> 33) + 1)
        state = self._owners[b]
        exclude = ctx.exclude
        if state is not None and (not exclude or state.key not in exclude):
            return state
        return self._fallover(h, b, exclude)

    def ordinal_of(self, key: str | bytes | int) -> int:
        """The ordinal that owns ``key`` (present or not); -1 when there are no ordinals."""
        return jump_hash(key_hash(key), self._n) if self._n else -1

    def _fallover(self, h: int, first: int, excluded: Set[tuple[str, int]]) -> EndpointState | None:
        owners = self._owners
        n = self._n
        for i in range(1, _REJUMPS + 1):
            state = owners[jump_hash(mix64(h + i), n)]
            if state is not None and state.key not in excluded:
                return state
        for step in range(1, n + 1):
            state = owners[(first + step) % n]
            if state is not None and state.key not in excluded:
                return state
        return None


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
    """

    def __init__(
        self,
        over: Literal["endpoint", "ordinal"] = "endpoint",
        *,
        table_size_factor: int = 100,
        table_size: int | None = None,
    ) -> None:
        if over not in ("endpoint", "ordinal"):
            raise ConfigurationError(f'over must be "endpoint" or "ordinal", not {over!r}')
        if table_size_factor < 1:
            raise ConfigurationError("table_size_factor must be >= 1")
        if table_size is not None and (table_size < 2 or next_prime(table_size) != table_size):
            raise ConfigurationError(f"table_size must be a prime, not {table_size}")
        self.name = "consistent_hash"
        self.over = over
        self.table_size_factor = table_size_factor
        self.table_size = table_size
        self._table: _Table | None = None
        self._lock = threading.Lock()

    def prepare(self, snapshot: Snapshot) -> None:
        """Build the Maglev table for ``snapshot``'s members unless it exists (slow; thread-safe).

        Meant for a worker thread after a membership change; a no-op for ``over="ordinal"``.
        """
        if self.over == "endpoint" and snapshot.members:
            self._ensure(snapshot.members)

    def build(self, snapshot: Snapshot) -> MaglevPicker | JumpPicker | _NoMembers:
        """A picker for ``snapshot``; builds a table inline only if none exists yet."""
        if self.over == "ordinal":
            return JumpPicker(snapshot)
        members = snapshot.members
        if not members:
            return _NoMembers()
        table = self._table
        if table is None:
            return MaglevPicker(self._ensure(members), snapshot)
        if table.members == members:
            return MaglevPicker(table, snapshot)
        picker = MaglevPicker(table, snapshot, pending=self)
        if not picker._ok:
            return MaglevPicker(self._ensure(members), snapshot)
        return picker

    def _ensure(self, members: tuple[EndpointState, ...]) -> _Table:
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
            maglev = MaglevTable(members, [identity(s) for s in members], size)
            table = _Table(members, maglev)
            self._table = table  # the one publishing assignment
            return table
