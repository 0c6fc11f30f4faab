"""Routes each pick to the right picker and keeps pickers in step with the pool's snapshots.

Plain requests go to the balancing picker (round-robin, least-request, peak-EWMA, or the user's);
requests with a key go to the sharding picker; requests pinned to an ordinal go to the ordinal
picker. Pickers are rebuilt only when the snapshot changes, and :meth:`Balancer.prepare` lets the
I/O shell do that rebuild off the request path.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from ..errors import ConfigurationError
from .pickers.base import NO_CONTEXT, PickContext, Picker, PickerFactory
from .pool import Pool
from .snapshot import EndpointState, Snapshot

__all__ = ["Balancer"]


class Balancer:
    """One pool, one balancing policy, optional sharding and ordinal routing."""

    def __init__(
        self,
        pool: Pool,
        picker: PickerFactory,
        *,
        sharding: PickerFactory | None = None,
        ordinal: PickerFactory | None = None,
    ) -> None:
        self.pool = pool
        self._factories = (picker, sharding, ordinal)
        self._takes_pause = tuple(_takes_pause(f) for f in self._factories)
        # The snapshot and its pickers live in one attribute, replaced whole, so a reader never
        # sees pickers of one snapshot paired with another.
        self._installed: tuple[Snapshot | None, list[Picker | None]] = (None, [None, None, None])

    def prepare(self, snapshot: Snapshot, pause: Callable[[], None] | None = None) -> None:
        """Do the slow part of switching to ``snapshot`` now: build hash tables and the like.

        Runs every configured factory's optional ``prepare(snapshot)``, from the first
        membership on, so that not even the first keyed request builds a table on the request
        path (a Maglev table over 1,000 Pods is 40-120 ms of pure Python). Safe in a worker
        thread: it installs nothing, the next pick on the event loop does, with the cheap
        ``build``. ``pause`` is handed to the factories that take one (``ConsistentHash``):
        they offer it every fraction of a millisecond of work, and the I/O shell's pause lets
        the event loop and request threads run.
        """
        for factory, takes_pause in zip(self._factories, self._takes_pause, strict=True):
            warm = getattr(factory, "prepare", None)
            if not callable(warm):
                continue
            if takes_pause and pause is not None:
                warm(snapshot, pause=pause)
            else:
                warm(snapshot)

    def forked(self) -> None:
        """In a child after fork(): each factory's optional ``forked()`` renews what the
        parent's threads may have held (``ConsistentHash``: its lock, taken for a whole table
        build). Idempotent: a factory several clients share hears it once per client."""
        for factory in self._factories:
            renew = getattr(factory, "forked", None)
            if callable(renew):
                renew()

    def _install(self, snapshot: Snapshot) -> list[Picker | None]:
        in_use = self._installed[1]
        pickers: list[Picker | None] = [None, None, None]
        for i, factory in enumerate(self._factories):
            # Sharding and ordinal pickers are built lazily: most clients never use them.
            if factory is not None and (i == 0 or in_use[i] is not None):
                pickers[i] = factory.build(snapshot)
        self._installed = (snapshot, pickers)
        return pickers

    def pick(self, ctx: PickContext = NO_CONTEXT) -> EndpointState | None:
        """An endpoint for one attempt, or ``None`` if no eligible endpoint is left."""
        snapshot = self.pool.snapshot
        installed, pickers = self._installed
        if snapshot is not installed:
            pickers = self._install(snapshot)
        if ctx.ordinal is not None:
            return self._routed(pickers, 2, "ordinal", ctx, snapshot)
        if ctx.key is not None:
            return self._routed(pickers, 1, "sharding", ctx, snapshot)
        picker = pickers[0]
        assert picker is not None
        return picker.pick(ctx)

    def _routed(
        self,
        pickers: list[Picker | None],
        slot: int,
        what: str,
        ctx: PickContext,
        snapshot: Snapshot,
    ) -> EndpointState | None:
        picker = pickers[slot]
        if picker is None:
            factory = self._factories[slot]
            if factory is None:
                raise ConfigurationError(f"this client has no {what} picker configured")
            picker = pickers[slot] = factory.build(snapshot)
        return picker.pick(ctx)


def _takes_pause(factory: object) -> bool:
    """Whether the factory's ``prepare`` accepts ``pause=`` (a user's factory need not)."""
    warm = getattr(factory, "prepare", None)
    if not callable(warm):
        return False
    try:
        return "pause" in inspect.signature(warm).parameters
    except (TypeError, ValueError):
        return False
