"""The picker protocol: how a balancing policy plugs in.

As in grpc-go's balancer/picker split, a :class:`PickerFactory` is asked for a new :class:`Picker`
each time the pool's snapshot changes; the picker it returns only reads that snapshot, so a pick is
cheap and never waits on a rebuild. A :class:`TablePickerFactory` has slow work to do per
membership (a hash table): the balancer has it done off the request path and keeps the table.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from ..snapshot import EndpointState, Snapshot

__all__ = [
    "NO_CONTEXT",
    "HashKey",
    "Pause",
    "PickContext",
    "Picker",
    "PickerFactory",
    "ReadsLoad",
    "TablePickerFactory",
    "no_pause",
]

Table = TypeVar("Table")

HashKey = str | bytes | int
"""What a request can be sharded by."""


@dataclass(frozen=True, slots=True)
class PickContext:
    """What one pick may depend on besides the snapshot."""

    key: HashKey | None = None
    """Sharding key (``client.get(url, key=...)``); ``None`` for plain balancing."""
    ordinal: int | None = None
    """StatefulSet ordinal the request is pinned to."""
    exclude: Set[tuple[str, int]] = frozenset()
    """Endpoints (ip, port) already tried by this request: pick another while one exists."""


NO_CONTEXT = PickContext()


@runtime_checkable
class Picker(Protocol):
    """Chooses an endpoint from one snapshot. Must be cheap: it runs on every request."""

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """An eligible endpoint not in ``ctx.exclude``, or ``None`` if there is none."""
        ...


Pause = Callable[[], None]
"""Called by a long build every fraction of a millisecond of work: the caller's chance to let
others run (the I/O shells hand the GIL to the event loop and request threads there)."""


def no_pause() -> None:
    """The pause of a build nobody waits on: carry on."""


@runtime_checkable
class PickerFactory(Protocol):
    """Builds a picker per snapshot. Required: ``name`` and ``build(snapshot)``.

    Optional: a factory with slow work to do per membership (a hash table) also has the two
    methods of :class:`TablePickerFactory`, ``prepare(snapshot, current, pause)`` and
    ``build_from(snapshot, table)``; the balancer then builds each table off the request path
    and never calls ``build``. A factory without them is built on the request path alone.
    """

    name: str

    def build(self, snapshot: Snapshot) -> Picker:
        """A picker that reads ``snapshot`` only."""
        ...


@runtime_checkable
class TablePickerFactory(PickerFactory, Protocol[Table]):
    """A :class:`PickerFactory` whose pickers read a table built per membership (Maglev).

    Both methods are pure: the table is the caller's to keep, not the factory's. The
    :class:`~headlesslb.core.balancer.Balancer` runs ``prepare`` in a worker thread after every
    membership change (from the first on, even an empty one), publishes what it returns, and
    builds pickers with ``build_from`` and the table it published last: while a new table is
    being built that is a previous membership's, or None before the first.
    """

    def prepare(self, snapshot: Snapshot, current: Table | None, pause: Pause) -> Table | None:
        """The table for ``snapshot``: ``current`` if it serves that membership already (or
        there is nothing to build), else a new one, calling ``pause()`` every fraction of a
        millisecond of the work (slow)."""
        ...

    def build_from(self, snapshot: Snapshot, table: Table | None) -> Picker:
        """A picker for ``snapshot`` that reads ``table``, whatever membership it was built for,
        and builds none (cheap: it runs on the request path)."""
        ...


@runtime_checkable
class ReadsLoad(Protocol):
    """A picker factory that reads the Pods' load reports (ORCA ``endpoint-load-metrics``).

    The pool keeps reports only while its balancing or sharding factory is one of these: a
    client whose pickers do not read them neither asks for nor parses them.
    """

    @property
    def report_max_age(self) -> float:
        """Seconds a report stays usable: older ones count as none (the Pod stopped
        reporting)."""
        ...
