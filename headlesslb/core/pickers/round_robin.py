"""Round-robin over eligible endpoints, starting at a random offset."""

from __future__ import annotations

import itertools
import random

from ..snapshot import EndpointState, Snapshot
from .base import PickContext

__all__ = ["RoundRobin", "RoundRobinPicker"]


class RoundRobinPicker:
    """Cycles through one snapshot's eligible endpoints."""

    __slots__ = ("_counter", "_eligible", "_n")

    def __init__(self, eligible: tuple[EndpointState, ...], start: int) -> None:
        self._eligible = eligible
        self._n = len(eligible)
        self._counter = itertools.count(start)

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The next endpoint in turn, skipping ``ctx.exclude``."""
        n = self._n
        if not n:
            return None
        i = next(self._counter)
        if not ctx.exclude:
            return self._eligible[i % n]
        for step in range(n):
            state = self._eligible[(i + step) % n]
            if state.key not in ctx.exclude:
                return state
        return None


class RoundRobin:
    """Factory: one :class:`RoundRobinPicker` per snapshot.

    The start offset is random so a fleet of clients does not hit the first Pod in lockstep; the
    position carries over between snapshots so a refresh does not restart the cycle.
    """

    name = "round_robin"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._last: RoundRobinPicker | None = None

    def build(self, snapshot: Snapshot) -> RoundRobinPicker:
        """A picker over ``snapshot.eligible``."""
        start = self._rng.randrange(1 << 30) if self._last is None else next(self._last._counter)
        self._last = RoundRobinPicker(snapshot.eligible, start)
        return self._last
