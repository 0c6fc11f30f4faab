"""The pool, shared by request threads and the discovery thread: every change under one lock.

The pure :class:`~headlesslb.core.pool.Pool` assumes one thread, as an event loop gives it. In
the sync client, request threads count attempts in and out while the discovery thread replaces
membership and the health checker flips verdicts; an unguarded ``in_flight += 1`` from two
threads can lose a count for good. Reads of the immutable snapshot need no lock.
"""

from __future__ import annotations

import threading
from typing import Any

from ..core.endpoint import Resolution
from ..core.pool import Attempt, Outcome, Pool
from ..core.snapshot import EndpointState, Snapshot

__all__ = ["LockedPool"]


class LockedPool(Pool):
    """A :class:`Pool` whose every change takes one lock (reentrant: changes nest)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.RLock()

    def update(self, resolution: Resolution) -> Snapshot:
        with self._lock:
            return super().update(resolution)

    # begin and _finish run for every request: Pool.x(self, ...) builds no super() object.
    def begin(self, state: EndpointState) -> Attempt:
        with self._lock:
            return Pool.begin(self, state)

    def _finish(self, attempt: Attempt, outcome: Outcome) -> None:
        with self._lock:
            Pool._finish(self, attempt, outcome)

    def eject(self, key: tuple[str, int]) -> bool:
        with self._lock:
            return super().eject(key)

    def end_ejection(self, key: tuple[str, int]) -> bool:
        with self._lock:
            return super().end_ejection(key)

    def set_health(self, key: tuple[str, int], ok: bool) -> None:
        with self._lock:
            super().set_health(key, ok)

    def tick(self) -> None:
        with self._lock:
            super().tick()

    def forked(self) -> None:
        """In a child after fork(): a fresh lock (another thread may have held the old one), and
        no attempts in flight (the parent's threads do not exist here)."""
        self._lock = threading.RLock()
        for state in self.snapshot.members:
            state.in_flight = 0
