"""The monotonic clock the pure core takes as a parameter.

The core never reads the time itself: it is handed a :data:`Clock` (a zero-argument callable
returning seconds), so tests drive it with :class:`ManualClock` and no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "monotonic"]

Clock = Callable[[], float]
"""A monotonic clock: returns seconds as a float, never goes backwards."""

monotonic: Clock = time.monotonic


class ManualClock:
    """A clock that moves only when told to: for deterministic tests of the core."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go backwards")
        self.now += seconds
