"""The picker protocol: how a balancing policy plugs in.

As in grpc-go's balancer/picker split, a :class:`PickerFactory` is asked for a new :class:`Picker`
each time the pool's snapshot changes; the picker it returns only reads that snapshot, so a pick is
cheap and never waits on a rebuild.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..snapshot import EndpointState, Snapshot

__all__ = ["NO_CONTEXT", "HashKey", "PickContext", "Picker", "PickerFactory"]

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


@runtime_checkable
class PickerFactory(Protocol):
    """Builds a picker per snapshot; may keep tables across snapshots of the same membership.

    A factory with slow work to do per membership (a hash table) may also have a
    ``prepare(snapshot) -> None`` method: ``Balancer.prepare`` runs it in a worker thread after
    membership changes, so that ``build`` stays cheap on the event loop. A lock it takes there
    comes from :mod:`headlesslb.core.forksafe`, so that a forked child gets a new one.
    """

    name: str

    def build(self, snapshot: Snapshot) -> Picker:
        """A picker that reads ``snapshot`` only."""
        ...
