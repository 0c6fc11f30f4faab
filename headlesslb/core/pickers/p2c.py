"""Load-aware balancing with the power of two choices.

Each pick samples two distinct eligible endpoints at random and takes the cheaper one (Mitzenmacher;
as in Envoy's LEAST_REQUEST and Finagle/Linkerd's P2C). Comparing two instead of all keeps a pick
O(1) and stops a fleet of clients from herding onto the single least-loaded Pod.

- :class:`LeastRequest` — cost is the endpoint's in-flight count.
- :class:`PeakEwma` — cost is a peak-sensitive latency average × (in-flight + 1), so a slow Pod is
  avoided before requests pile up on it. The average is the pool's: its estimator
  (:class:`~headlesslb.core.ewma.PeakEwmaEstimator`, ``snapshot.latency``) updates it after each
  response and decays it at pick time, with the one decay constant it owns.

The two samples form a uniformly random ordered pair, so keeping the first one on a tie is a fair
random tie-break; no third random draw is needed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Set

from ..clock import Clock, monotonic
from ..ewma import PeakEwmaEstimator
from ..snapshot import EndpointState, Snapshot
from ..validate import number
from .base import PickContext
from .slow_start import Ramp, SlowStart

__all__ = [
    "LeastRequest",
    "LeastRequestPicker",
    "PeakEwma",
    "PeakEwmaPicker",
    "RampedLeastRequestPicker",
    "RampedPeakEwmaPicker",
]


def _without(
    eligible: tuple[EndpointState, ...], exclude: Set[tuple[str, int]]
) -> tuple[EndpointState, ...]:
    return tuple(s for s in eligible if s.key not in exclude)


class LeastRequestPicker:
    """Power of two choices on ``in_flight`` over one snapshot's eligible endpoints."""

    __slots__ = ("_eligible", "_n", "_random")

    def __init__(self, eligible: tuple[EndpointState, ...], rand: Callable[[], float]) -> None:
        self._eligible = eligible
        self._n = len(eligible)
        self._random = rand

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The less loaded of two random eligible endpoints not in ``ctx.exclude``."""
        eligible = self._eligible
        n = self._n
        if ctx.exclude:
            # Retries only: filtering is O(N), but it keeps the sample uniform over candidates.
            eligible = _without(eligible, ctx.exclude)
            n = len(eligible)
        if n < 2:
            return eligible[0] if n else None
        rand = self._random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a = eligible[i]
        b = eligible[j]
        return b if b.in_flight < a.in_flight else a


class RampedLeastRequestPicker(LeastRequestPicker):
    """Least-request while some endpoint ramps up (slow start): both candidates are drawn
    weighted by the ramp."""

    __slots__ = ("_ramp",)

    def __init__(
        self, eligible: tuple[EndpointState, ...], rand: Callable[[], float], ramp: Ramp
    ) -> None:
        super().__init__(eligible, rand)
        self._ramp = ramp

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The less loaded of two weighted random eligible endpoints not in ``ctx.exclude``."""
        pair = self._ramp.pair(self._eligible, ctx.exclude)
        if not isinstance(pair, tuple):
            return pair
        a, b = pair
        return b if b.in_flight < a.in_flight else a


class LeastRequest:
    """Factory: least-request balancing, power of two choices on in-flight requests."""

    name = "least_request"

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        slow_start: SlowStart | None = None,
        clock: Clock = monotonic,
    ) -> None:
        self._rng = rng or random.Random()
        self.slow_start = slow_start
        self._clock = clock

    def build(self, snapshot: Snapshot) -> LeastRequestPicker:
        """A picker over ``snapshot.eligible``."""
        rand = self._rng.random
        slow = self.slow_start
        ramp = None if slow is None else slow.ramp(snapshot.eligible, self._clock, rand)
        if ramp is None:
            return LeastRequestPicker(snapshot.eligible, rand)
        return RampedLeastRequestPicker(snapshot.eligible, rand, ramp)


PENALTY = float(1 << 47)
"""Cost of an endpoint whose latency average is exactly 0 while requests are pending (Finagle's
``Long.MaxValue >> 16``): a zero average says nothing yet, and zero cost would flood it."""


_UNKNOWN_REFRESH = 1.0
"""Seconds between recomputations of the cost assumed for endpoints with no latency yet."""


class PeakEwmaPicker:
    """Power of two choices on peak-EWMA latency × (in-flight + 1)."""

    __slots__ = (
        "_clock",
        "_decayed",
        "_default_rtt",
        "_eligible",
        "_n",
        "_random",
        "_unknown",
        "_unknown_at",
    )

    def __init__(
        self,
        eligible: tuple[EndpointState, ...],
        rand: Callable[[], float],
        clock: Clock,
        latency: PeakEwmaEstimator,
        default_rtt: float,
    ) -> None:
        self._eligible = eligible
        self._n = len(eligible)
        self._random = rand
        self._clock = clock
        self._decayed = latency.decayed
        self._default_rtt = default_rtt
        self._unknown = default_rtt
        self._unknown_at = -math.inf

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The cheaper of two random eligible endpoints not in ``ctx.exclude``."""
        eligible = self._eligible
        n = self._n
        if ctx.exclude:
            eligible = _without(eligible, ctx.exclude)
            n = len(eligible)
        if n < 2:
            return eligible[0] if n else None
        rand = self._random
        i = int(rand() * n)
        j = int(rand() * (n - 1))
        if j >= i:
            j += 1
        a = eligible[i]
        b = eligible[j]
        now = self._clock()
        decayed = self._decayed
        la = decayed(a, now)
        lb = decayed(b, now)
        if la and lb:  # _cost inlined for the common case: both known, neither decayed to 0
            return b if lb * (b.in_flight + 1) < la * (a.in_flight + 1) else a
        return b if self._cost(b, lb, now) < self._cost(a, la, now) else a

    def cost(self, state: EndpointState, now: float) -> float:
        """``state``'s load at time ``now``: decayed peak-EWMA latency × (in-flight + 1)."""
        return self._cost(state, self._decayed(state, now), now)

    def _cost(self, state: EndpointState, latency: float | None, now: float) -> float:
        pending = state.in_flight
        if latency is None:
            if now - self._unknown_at >= _UNKNOWN_REFRESH:
                self._refresh_unknown(now)
            return self._unknown * (pending + 1)
        if latency == 0.0 and pending:
            return PENALTY + pending
        return latency * (pending + 1)

    def _refresh_unknown(self, now: float) -> None:
        # An endpoint with no latency yet (new, or never answered) is costed like the median known
        # one: at 0 every picker would flood it, at +inf it would never get the first request that
        # teaches us its latency. O(N log N), at most once per _UNKNOWN_REFRESH seconds.
        decayed = self._decayed
        known = sorted(
            latency for latency in (decayed(s, now) for s in self._eligible) if latency is not None
        )
        if known:
            mid = len(known) // 2
            median = known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2
            # A median decayed to ~0 would make newcomers free: keep a floor of the default.
            self._unknown = median if median > 0.0 else self._default_rtt
        else:
            self._unknown = self._default_rtt
        self._unknown_at = now


class RampedPeakEwmaPicker(PeakEwmaPicker):
    """Peak-EWMA while some endpoint ramps up (slow start): both candidates are drawn weighted
    by the ramp."""

    __slots__ = ("_ramp",)

    def __init__(
        self,
        eligible: tuple[EndpointState, ...],
        rand: Callable[[], float],
        clock: Clock,
        latency: PeakEwmaEstimator,
        default_rtt: float,
        ramp: Ramp,
    ) -> None:
        super().__init__(eligible, rand, clock, latency, default_rtt)
        self._ramp = ramp

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The cheaper of two weighted random eligible endpoints not in ``ctx.exclude``."""
        pair = self._ramp.pair(self._eligible, ctx.exclude)
        if not isinstance(pair, tuple):
            return pair
        a, b = pair
        now = self._clock()
        return b if self.cost(b, now) < self.cost(a, now) else a


class PeakEwma:
    """Factory: peak-EWMA balancing (Finagle/Linkerd), power of two choices.

    The latency averages and their decay are the pool's (``snapshot.latency``, made from
    ``OutlierPolicy.latency_decay``). ``clock`` must be the pool's clock (latency stamps come
    from it). ``default_rtt`` (seconds) is the cost of an endpoint with no latency yet while no
    endpoint has one.
    """

    name = "peak_ewma"

    def __init__(
        self,
        rng: random.Random | None = None,
        clock: Clock = monotonic,
        *,
        default_rtt: float = 0.03,
        slow_start: SlowStart | None = None,
    ) -> None:
        number("PeakEwma.default_rtt", default_rtt, min=0, exclusive_min=True)
        self._rng = rng or random.Random()
        self._clock = clock
        self.default_rtt = default_rtt
        self.slow_start = slow_start

    def build(self, snapshot: Snapshot) -> PeakEwmaPicker:
        """A picker over ``snapshot.eligible``, reading latencies through ``snapshot.latency``."""
        eligible, rand, clock = snapshot.eligible, self._rng.random, self._clock
        latency, rtt = snapshot.latency, self.default_rtt
        slow = self.slow_start
        ramp = None if slow is None else slow.ramp(eligible, clock, rand)
        if ramp is None:
            return PeakEwmaPicker(eligible, rand, clock, latency, rtt)
        return RampedPeakEwmaPicker(eligible, rand, clock, latency, rtt, ramp)
