"""Routes each pick to the right picker and keeps pickers in step with the pool's snapshots.

Plain requests go to the balancing picker (round-robin, least-request, peak-EWMA, or the user's);
requests with a key go to the sharding picker; requests pinned to an ordinal go to the ordinal
picker. Pickers are rebuilt only when the snapshot changes, and :meth:`Balancer.prepare` lets the
I/O shell do that rebuild off the request path.
"""

from __future__ import annotations

from .errors import ConfigurationError
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
        self._snapshot: Snapshot | None = None
        self._pickers: list[Picker | None] = [None, None, None]

    def prepare(self, snapshot: Snapshot | None = None) -> None:
        """Build the pickers for ``snapshot`` (default: the pool's current one) now.

        Also runs the factories' optional ``prepare(snapshot)`` — slow work such as a Maglev
        table — for the factories in use, so call this from a worker thread after a membership
        change. The request path only ever runs the cheap ``build``.
        """
        snapshot = snapshot or self.pool.snapshot
        for i, factory in enumerate(self._factories):
            warm = getattr(factory, "prepare", None)
            # Lazy slots stay lazy: no table for a client that never sent a keyed request.
            if callable(warm) and (i == 0 or self._pickers[i] is not None):
                warm(snapshot)
        self._install(snapshot)

    def _install(self, snapshot: Snapshot) -> None:
        if snapshot is self._snapshot:
            return
        pickers: list[Picker | None] = [None, None, None]
        for i, factory in enumerate(self._factories):
            # Sharding and ordinal tables are built lazily: most clients never use them.
            if factory is not None and (i == 0 or self._pickers[i] is not None):
                pickers[i] = factory.build(snapshot)
        self._pickers = pickers
        self._snapshot = snapshot

    def pick(self, ctx: PickContext = NO_CONTEXT) -> EndpointState | None:
        """An endpoint for one attempt, or ``None`` if no eligible endpoint is left."""
        snapshot = self.pool.snapshot
        if snapshot is not self._snapshot:
            self._install(snapshot)
        if ctx.ordinal is not None:
            return self._routed(2, "ordinal", ctx, snapshot)
        if ctx.key is not None:
            return self._routed(1, "sharding", ctx, snapshot)
        picker = self._pickers[0]
        assert picker is not None
        return picker.pick(ctx)

    def _routed(
        self, slot: int, what: str, ctx: PickContext, snapshot: Snapshot
    ) -> EndpointState | None:
        picker = self._pickers[slot]
        if picker is None:
            factory = self._factories[slot]
            if factory is None:
                raise ConfigurationError(f"this client has no {what} picker configured")
            picker = self._pickers[slot] = factory.build(snapshot)
        return picker.pick(ctx)
