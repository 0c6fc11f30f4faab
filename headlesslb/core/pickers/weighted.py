"""Weighted round robin from the Pods' own load reports, after gRFC A58 (gRPC, Envoy).

Each Pod's weight comes from its latest ORCA report (:mod:`..orca`)::

    weight = qps / (utilization + eps / qps × error_utilization_penalty)

with ``qps`` its ``rps_fractional``, ``utilization`` its ``application_utilization`` (else
``cpu_utilization``) and ``eps`` its errors per second: a Pod that serves more for the same
utilization, and fails less, gets more. As in A58:

- a weight is used only once the Pod has reported for ``blackout_period`` seconds in a row
  (a Pod that just started, or came back, reports noisy figures at first); a Pod back from an
  ejection starts its blackout again;
- a report older than ``weight_expiration_period`` counts as none: the Pod stopped reporting;
- a Pod with no usable weight (none yet, blacked out, expired, or a report saying 0) gets the
  mean of the others'; with fewer than two usable weights every Pod weighs the same (round
  robin);
- weights are recomputed at most every ``weight_update_period`` seconds, at pick time.

The weights are clamped to [0.1, 10] × their median (gRPC's C++ and Java schedulers clamp to
the same ratios of the mean; the median is not moved by the one Pod being clamped), so one
Pod's report (say one claiming almost no utilization) can weigh at most ten times a typical
Pod, and a Pod reporting 0 utilization or 0 qps has no weight of its own: it gets the mean.

The schedule is grpc-go's "EDF" scheduler (a static stride over the scaled weights): the
turns come from one shared counter (``itertools.count``, atomic in CPython), so a pick takes no
lock and several threads may pick at once. Endpoints come from the snapshot's eligible set, so
ejection, hold-offs, panic and subsetting apply as for every picker; slow start weighs a
ramping endpoint's turn as round robin does.
"""

from __future__ import annotations

import itertools
import math
import random

from ..clock import Clock, monotonic
from ..snapshot import EndpointState, Snapshot
from ..validate import number
from .base import PickContext
from .slow_start import Ramp, SlowStart

__all__ = ["WeightedRoundRobin", "WeightedRoundRobinPicker", "report_weight", "stride_weights"]

_MAX = 0xFFFF
"""The largest scaled weight (grpc-go's ``maxWeight``)."""
_CLAMP = 10.0
"""Weights are kept within [mean / _CLAMP, mean × _CLAMP] (gRPC C++/Java: 0.1 and 10)."""


def report_weight(
    state: EndpointState,
    now: float,
    *,
    blackout: float,
    expiry: float,
    penalty: float,
) -> float:
    """``state``'s weight from its latest report at ``now``; 0 when it has none usable (none,
    expired, still in its blackout period, or one that gives no weight: 0 qps or 0
    utilization)."""
    report = state.load
    if report is None or now - report.received > expiry:
        return 0.0
    if now - max(report.since, state.since) < blackout:
        return 0.0
    qps = report.rps_fractional
    utilization = report.busy
    if qps > 0.0 and penalty > 0.0:
        utilization += report.eps / qps * penalty
    if qps <= 0.0 or utilization <= 0.0:
        return 0.0
    return qps / utilization


def stride_weights(weights: list[float]) -> tuple[int, ...] | None:
    """The scaled weights (1 … 0xFFFF) the stride schedule cycles through, or None when every
    endpoint is to weigh the same (fewer than two usable weights, or all equal): round robin.
    A weight of 0 (unusable) takes the mean of the others."""
    usable = [w for w in weights if w > 0.0]
    if len(usable) < 2:
        return None
    mean = sum(usable) / len(usable)
    usable.sort()
    mid = len(usable) // 2
    median = usable[mid] if len(usable) % 2 else (usable[mid - 1] + usable[mid]) / 2
    # Clamped around the median, not the mean: one Pod claiming a huge weight moves the mean
    # with it, but not the median.
    low, high = median / _CLAMP, median * _CLAMP
    clamped = [min(max(mean if w <= 0.0 else w, low), high) for w in weights]
    top = max(clamped)
    scaled = tuple(max(1, round(w / top * _MAX)) for w in clamped)
    if min(scaled) == max(scaled):
        return None
    return scaled


class WeightedRoundRobinPicker:
    """Weighted turns over one snapshot's eligible endpoints, the weights refreshed from their
    reports every ``update`` seconds."""

    __slots__ = (
        "_clock",
        "_counter",
        "_eligible",
        "_factory",
        "_n",
        "_next_update",
        "_schedule",
    )

    def __init__(
        self, eligible: tuple[EndpointState, ...], factory: WeightedRoundRobin, start: int
    ) -> None:
        self._eligible = eligible
        self._n = len(eligible)
        self._factory = factory
        self._clock = factory._clock
        self._counter = itertools.count(start)
        self._schedule: tuple[int, ...] | None = None
        self._next_update = -math.inf

    @property
    def weights(self) -> tuple[int, ...] | None:
        """The scaled weights in use, in the order of the snapshot's eligible endpoints (None:
        plain round robin)."""
        return self._schedule

    def _refresh(self, now: float) -> None:
        # Two threads may both get here; each computes the same schedule, the last one stays.
        factory = self._factory
        weights = [
            report_weight(
                s,
                now,
                blackout=factory.blackout_period,
                expiry=factory.weight_expiration_period,
                penalty=factory.error_utilization_penalty,
            )
            for s in self._eligible
        ]
        self._schedule = stride_weights(weights)
        self._next_update = now + factory.weight_update_period

    def _index(self) -> int:
        n = self._n
        now = self._clock()
        if now >= self._next_update:
            self._refresh(now)
        schedule = self._schedule
        counter = self._counter
        if schedule is None:
            return next(counter) % n
        # grpc-go's static stride: turn i goes to endpoint i mod n in generation i // n, which
        # takes it when its weight covers this generation's offset. The heaviest endpoint
        # (0xFFFF) takes every turn it gets, so this ends within n turns.
        half = _MAX // 2
        while True:
            turn = next(counter)
            index = turn % n
            weight = schedule[index]
            if (weight * (turn // n) + index * half) % _MAX >= _MAX - weight:
                return index

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The endpoint whose weighted turn it is, skipping ``ctx.exclude``."""
        n = self._n
        if not n:
            return None
        eligible = self._eligible
        exclude = ctx.exclude
        if not exclude:
            return eligible[self._index()]
        # A retry: a few weighted turns, then the first endpoint left in order.
        for _ in range(n):
            state = eligible[self._index()]
            if state.key not in exclude:
                return state
        for state in eligible:
            if state.key not in exclude:
                return state
        return None


class RampedWeightedRoundRobinPicker(WeightedRoundRobinPicker):
    """Weighted round robin while some endpoint ramps up (slow start): a ramping endpoint whose
    turn comes keeps it with its ramp weight, else a weighted random endpoint takes it."""

    __slots__ = ("_ramp",)

    def __init__(
        self,
        eligible: tuple[EndpointState, ...],
        factory: WeightedRoundRobin,
        start: int,
        ramp: Ramp,
    ) -> None:
        super().__init__(eligible, factory, start)
        self._ramp = ramp

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The endpoint whose weighted turn it is, weighted by the ramp, skipping
        ``ctx.exclude``."""
        return self._ramp.settle(super().pick(ctx), self._eligible, ctx.exclude)


class WeightedRoundRobin:
    """Factory: weighted round robin from the Pods' load reports (gRFC A58; ``picker=
    WeightedRoundRobin()`` or ``picker="weighted_round_robin"``).

    The Pods must send ORCA ``endpoint-load-metrics`` response headers with
    ``rps_fractional`` and ``application_utilization`` or ``cpu_utilization`` (each request
    asks for them in TEXT, as vLLM wants); until they do, and for a Pod that does not, it is
    round robin. Defaults are A58's.
    """

    name = "weighted_round_robin"

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        blackout_period: float = 10.0,
        weight_expiration_period: float = 180.0,
        weight_update_period: float = 1.0,
        error_utilization_penalty: float = 1.0,
        slow_start: SlowStart | None = None,
        clock: Clock = monotonic,
    ) -> None:
        name = "WeightedRoundRobin."
        number(name + "blackout_period", blackout_period, min=0)
        number(
            name + "weight_expiration_period", weight_expiration_period, min=0, exclusive_min=True
        )
        # A58 floors the update period at 100 ms: recomputing is O(N) per update.
        number(name + "weight_update_period", weight_update_period, min=0.1)
        number(name + "error_utilization_penalty", error_utilization_penalty, min=0)
        self.blackout_period = blackout_period
        """Seconds a Pod must have reported in a row before its weight is used."""
        self.weight_expiration_period = weight_expiration_period
        """Seconds after which a Pod's last report no longer counts."""
        self.weight_update_period = weight_update_period
        """Seconds between recomputations of the weights (at pick time)."""
        self.error_utilization_penalty = error_utilization_penalty
        """How much a Pod's error rate (eps / qps) adds to its utilization."""
        self.slow_start = slow_start
        self._rng = rng or random.Random()
        self._clock = clock
        self._last: WeightedRoundRobinPicker | None = None

    @property
    def report_max_age(self) -> float:
        """Seconds a report stays usable: ``weight_expiration_period``."""
        return self.weight_expiration_period

    def build(self, snapshot: Snapshot) -> WeightedRoundRobinPicker:
        """A picker over ``snapshot.eligible`` (the turn carries over from the last one)."""
        last = self._last
        start = self._rng.randrange(1 << 30) if last is None else next(last._counter)
        eligible = snapshot.eligible
        slow = self.slow_start
        ramp = None if slow is None else slow.ramp(eligible, self._clock, self._rng.random)
        self._last = (
            WeightedRoundRobinPicker(eligible, self, start)
            if ramp is None
            else RampedWeightedRoundRobinPicker(eligible, self, start, ramp)
        )
        return self._last
