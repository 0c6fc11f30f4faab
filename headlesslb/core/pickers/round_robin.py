"""Round-robin over eligible endpoints, starting at a random offset."""

from __future__ import annotations

import itertools
import random

from ..clock import Clock, monotonic
from ..snapshot import EndpointState, Snapshot
from .base import PickContext
from .slow_start import Ramp, SlowStart

__all__ = ["RampedRoundRobinPicker", "RoundRobin", "RoundRobinPicker"]


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


class RampedRoundRobinPicker(RoundRobinPicker):
    """Round-robin while some endpoint ramps up (slow start): a ramping endpoint whose turn
    comes keeps it with its weight, else a weighted random endpoint takes the request."""

    __slots__ = ("_ramp",)

    def __init__(self, eligible: tuple[EndpointState, ...], start: int, ramp: Ramp) -> None:
        super().__init__(eligible, start)
        self._ramp = ramp

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The next endpoint in turn, weighted by the ramp, skipping ``ctx.exclude``."""
        return self._ramp.settle(super().pick(ctx), self._eligible, ctx.exclude)


class RoundRobin:
    """Factory: one :class:`RoundRobinPicker` per snapshot.

    The start offset is random so a fleet of clients does not hit the first Pod in lockstep; the
    position carries over between snapshots so a refresh does not restart the cycle.
    """

    name = "round_robin"

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        slow_start: SlowStart | None = None,
        clock: Clock = monotonic,
    ) -> None:
        self._rng = rng or random.Random()
        self._last: RoundRobinPicker | None = None
        self.slow_start = slow_start
        self._clock = clock

    def build(self, snapshot: Snapshot) -> RoundRobinPicker:
        """A picker over ``snapshot.eligible``."""
        start = self._rng.randrange(1 << 30) if self._last is None else next(self._last._counter)
        eligible = snapshot.eligible
        slow = self.slow_start
        ramp = None if slow is None else slow.ramp(eligible, self._clock, self._rng.random)
        self._last = (
            RoundRobinPicker(eligible, start)
            if ramp is None
            else RampedRoundRobinPicker(eligible, start, ramp)
        )
        return self._last
