"""The pool, shared by request threads and the discovery thread: every change under one lock.

The pure :class:`~headlesslb.core.pool.Pool` assumes one thread, as an event loop gives it. In
the sync client, request threads count attempts in and out and hold off Pods that reject for
load, while the discovery thread replaces membership and the health checker flips verdicts; an
unguarded ``in_flight += 1`` from two threads can lose a count for good, and two snapshot
rebuilds racing can publish the older membership last. So every method that changes the pool
takes the lock, and only the reads in :data:`LOCK_FREE_READS` do not
(``tests/unit/test_locked_pool.py`` checks that each of the pool's entry points is one or the
other).
"""

from __future__ import annotations

from typing import Any

from ..core import forksafe
from ..core.endpoint import Resolution
from ..core.pool import Attempt, Outcome, Pool
from ..core.snapshot import EndpointState, Snapshot

__all__ = ["LOCK_FREE_READS", "LockedPool"]

LOCK_FREE_READS = frozenset({"snapshot", "next_deadline", "member", "statuses", "counts"})
"""The pool's entry points that take no lock. Each reads attributes that changes replace whole
(the snapshot, the next deadline, the members dict) and changes nothing itself: ``snapshot``
leaves the one change it may set off, ejections and hold-offs running out, to the locked
:meth:`LockedPool.tick`."""


class LockedPool(Pool):
    """A :class:`Pool` whose every change takes one lock (reentrant: changes nest)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = forksafe.rlock(self)
        forksafe.forget(self, LockedPool._forget)

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

    def hold_off(self, state: EndpointState, seconds: float) -> None:
        with self._lock:
            super().hold_off(state, seconds)

    def set_health(self, key: tuple[str, int], ok: bool) -> None:
        with self._lock:
            super().set_health(key, ok)

    def tick(self) -> None:
        with self._lock:
            super().tick()

    def _forget(self) -> None:
        """In a forked child: no attempts in flight (the parent's threads do not exist here)."""
        for state in self.snapshot.members:
            state.in_flight = 0
