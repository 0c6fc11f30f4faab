"""The picker protocol: how a balancing policy plugs in.

As in grpc-go's balancer/picker split, a :class:`PickerFactory` is asked for a new :class:`Picker`
each time the pool's snapshot changes; the picker it returns only reads that snapshot, so a pick is
cheap and never waits on a rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..snapshot import EndpointState, Snapshot

__all__ = [
    "NO_CONTEXT",
    "HashKey",
    "Pause",
    "PickContext",
    "Picker",
    "PickerFactory",
    "TablePickerFactory",
    "no_pause",
]

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

    Optional: a factory with slow work to do per membership (a hash table) also has the method
    of :class:`TablePickerFactory`, ``prepare(snapshot, pause)``; the balancer runs it in a
    worker thread after membership changes, so that ``build`` stays cheap on the request path.
    A factory without it is built on the request path alone, as it always was.
    """

    name: str

    def build(self, snapshot: Snapshot) -> Picker:
        """A picker that reads ``snapshot`` only."""
        ...


@runtime_checkable
class TablePickerFactory(PickerFactory, Protocol):
    """A :class:`PickerFactory` with slow work to do per membership, done off the request path.

    A lock it takes there comes from :mod:`headlesslb.core.forksafe`, so that a forked child
    gets a new one.
    """

    def prepare(self, snapshot: Snapshot, pause: Pause) -> None:
        """Do the slow work for ``snapshot`` now (a worker thread), calling ``pause()`` every
        fraction of a millisecond of it; from the first membership on, even an empty one."""
        ...
