"""Slow start: a Pod that just joined, or just came back from an ejection, ramps up its share.

Envoy's formula: an endpoint ``t`` seconds into its window weighs
``max(min_weight, (t / window) ** (1 / aggression))`` of a full one. The balancing pickers
(round-robin, least-request, peak-EWMA) apply the weight as an acceptance probability when they
draw a candidate: a ramping endpoint drawn is kept with that probability, else another candidate
is drawn at random. Its share of picks is then close to proportional to its weight, and nothing
changes for the others.

As in Envoy, slow start does not apply while every eligible endpoint is ramping (a client that
just started, or a whole Deployment replaced at once): there is nobody to shift the load to.
Only pickers built while some endpoint ramps pay for it; the others are the plain ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Set
from dataclasses import dataclass

from ..clock import Clock
from ..snapshot import EndpointState
from ..validate import number

__all__ = ["Ramp", "SlowStart"]

_REDRAWS = 8
"""Draws before a picker takes what it has: the weight floor (10 %) makes that rare."""


@dataclass(frozen=True, slots=True)
class SlowStart:
    """Slow-start settings for the balancing picker (``slow_start=SlowStart(window=30)``)."""

    window: float = 30.0
    """Seconds a new (or returning) endpoint takes to reach its full share."""
    aggression: float = 1.0
    """1 ramps linearly; higher ramps faster at first, lower keeps the share small for longer."""
    min_weight: float = 0.1
    """The smallest share of a full weight an endpoint starts with (at least 10 %)."""

    def __post_init__(self) -> None:
        name = "SlowStart."
        number(name + "window", self.window, min=0, exclusive_min=True)
        number(name + "aggression", self.aggression, min=0, exclusive_min=True)
        number(name + "min_weight", self.min_weight, min=0.1, max=1)

    def weight(self, elapsed: float) -> float:
        """The weight of an endpoint ``elapsed`` seconds into its window (1 past it)."""
        if elapsed >= self.window:
            return 1.0
        fraction = max(elapsed, 0.0) / self.window
        return max(self.min_weight, math.pow(fraction, 1.0 / self.aggression))

    def ramp(
        self, eligible: tuple[EndpointState, ...], clock: Clock, rand: Callable[[], float]
    ) -> Ramp | None:
        """The ramp for a picker over ``eligible``, or None when nobody ramps (or everybody
        does: then nobody is slowed)."""
        now = clock()
        since = {s.key: s.since for s in eligible if now - s.since < self.window}
        if not since or len(since) == len(eligible):
            return None
        return Ramp(self, since, clock, rand)


class Ramp:
    """The endpoints of one snapshot still ramping up, and the draws that honour their weight."""

    __slots__ = ("_clock", "_random", "_since", "policy")

    def __init__(
        self,
        policy: SlowStart,
        since: dict[tuple[str, int], float],
        clock: Clock,
        rand: Callable[[], float],
    ) -> None:
        self.policy = policy
        self._since = since
        self._clock = clock
        self._random = rand

    def accepts(self, state: EndpointState) -> bool:
        """Keep this candidate? Always for a full-weight one; with its weight while ramping."""
        since = self._since.get(state.key)
        if since is None:
            return True
        weight = self.policy.weight(self._clock() - since)
        return weight >= 1.0 or self._random() < weight

    def draw(
        self,
        eligible: tuple[EndpointState, ...],
        exclude: Set[tuple[str, int]] = frozenset(),
    ) -> EndpointState | None:
        """A random candidate not in ``exclude`` (none left: None), weighted by the ramp."""
        candidates = [s for s in eligible if s.key not in exclude] if exclude else eligible
        n = len(candidates)
        if not n:
            return None
        rand = self._random
        state = candidates[int(rand() * n)]
        for _ in range(_REDRAWS):
            if self.accepts(state):
                break
            state = candidates[int(rand() * n)]
        return state

    def settle(
        self,
        first: EndpointState | None,
        eligible: tuple[EndpointState, ...],
        exclude: Set[tuple[str, int]],
    ) -> EndpointState | None:
        """``first`` (a picker's own choice) if the ramp keeps it, else a weighted redraw."""
        if first is None or self.accepts(first):
            return first
        return self.draw(eligible, exclude)

    def pair(
        self, eligible: tuple[EndpointState, ...], exclude: Set[tuple[str, int]]
    ) -> tuple[EndpointState, EndpointState] | EndpointState | None:
        """Two distinct weighted candidates for the power of two choices (one if only one is
        left, None if none)."""
        a = self.draw(eligible, exclude)
        if a is None:
            return None
        b = self.draw(eligible, {*exclude, a.key})
        return a if b is None else (a, b)
