"""Whether, when and where to hedge a request (pure: clock injected, no I/O).

A hedge is a second attempt of the same request, sent to a *different* Pod when the first has
not answered after a delay; the first answer wins and the other attempt is cancelled. The delay
is fixed (:attr:`HedgePolicy.delay`) or a learned quantile of recent latencies
(:attr:`HedgePolicy.quantile`, only once :attr:`HedgePolicy.min_samples` are known), as in
tower's ``Hedge`` middleware and gRPC's hedging policy.

Only requests the retry policy calls idempotent are hedged (:meth:`RetryPolicy.may_retry` with
:attr:`Failure.MAYBE_PROCESSED` is the one idempotency decision; it is not made again here), and
every hedge is charged to the :class:`RetryBudget`: a hedge the budget refuses is not sent, so
hedging can never add more load than retries may.

This module only decides. Waiting for the first of two attempts and cancelling the loser is the
shells' work; that wiring is not in this release (see ``docs/overload.md``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from ..errors import ConfigurationError
from .balancer import Balancer
from .clock import Clock, monotonic
from .pickers.base import PickContext
from .retry import Failure, RetryBudget, RetryPolicy
from .snapshot import EndpointState
from .validate import count, number

__all__ = ["HedgePlan", "HedgePolicy", "Hedger", "LatencyEstimator"]


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """Opt-in hedging of idempotent requests: a second attempt to another Pod after a delay.

    Give exactly one of :attr:`delay` (fixed seconds) and :attr:`quantile` (learned delay).
    """

    delay: float | None = None
    """Fixed seconds to wait for the first attempt before hedging."""
    quantile: float | None = None
    """Hedge after this quantile of recent latencies (0.95: the slowest 5 % get a hedge)."""
    min_samples: int = 20
    """Latencies needed before a learned delay is trusted; below it, no hedge is sent."""
    window: int = 1000
    """Recent latencies kept for the quantile (older ones fall out first)."""
    max_age: float = 30.0
    """Seconds a latency sample stays in the window, so the delay follows a change of load."""
    max_hedges: int = 1
    """Hedges per request on top of the first attempt."""

    def __post_init__(self) -> None:
        name = "HedgePolicy."
        if (self.delay is None) == (self.quantile is None):
            raise ConfigurationError(
                f"{name}delay or {name}quantile must be given (exactly one), "
                f"not delay={self.delay!r} and quantile={self.quantile!r}"
            )
        number(name + "delay", self.delay, min=0, allow_none=True)
        number(
            name + "quantile",
            self.quantile,
            min=0,
            max=1,
            exclusive_min=True,
            exclusive_max=True,
            allow_none=True,
        )
        count(name + "min_samples", self.min_samples, min=1)
        count(name + "window", self.window, min=1)
        if self.min_samples > self.window:
            raise ConfigurationError(
                f"{name}min_samples must be <= {name}window, not {self.min_samples} > {self.window}"
            )
        number(name + "max_age", self.max_age, min=0, exclusive_min=True)
        count(name + "max_hedges", self.max_hedges, min=1)


class LatencyEstimator:
    """Recent latencies (a bounded, aging window) and their quantiles; clock injected."""

    def __init__(self, window: int = 1000, max_age: float = 30.0, *, clock: Clock = monotonic):
        count("LatencyEstimator.window", window, min=1)
        number("LatencyEstimator.max_age", max_age, min=0, exclusive_min=True)
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)
        self._max_age = max_age
        self._clock = clock
        self._sorted: list[float] | None = None

    def record(self, seconds: float) -> None:
        """One attempt's latency (to response headers); negative or non-finite ones are dropped,
        since they come from a clock mistake rather than a Pod."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        self._samples.append((self._clock(), seconds))
        self._sorted = None

    def __len__(self) -> int:
        self._expire()
        return len(self._samples)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (nearest rank) of the samples in the window; None when empty."""
        self._expire()
        if not self._samples:
            return None
        if self._sorted is None:
            self._sorted = sorted(seconds for _, seconds in self._samples)
        ranked = self._sorted
        index = min(len(ranked) - 1, max(0, math.ceil(q * len(ranked)) - 1))
        return ranked[index]

    def _expire(self) -> None:
        horizon = self._clock() - self._max_age
        samples = self._samples
        while samples and samples[0][0] < horizon:
            samples.popleft()
            self._sorted = None


@dataclass(frozen=True, slots=True)
class HedgePlan:
    """How a request may be hedged: the delay, and how many hedges at most."""

    delay: float
    max_hedges: int


class Hedger:
    """A client's hedging decisions: the policy, its latency estimator and the retry budget."""

    def __init__(
        self,
        policy: HedgePolicy,
        retry: RetryPolicy,
        budget: RetryBudget,
        *,
        clock: Clock = monotonic,
    ) -> None:
        self.policy = policy
        self._retry = retry
        self._budget = budget
        self.latencies = LatencyEstimator(policy.window, policy.max_age, clock=clock)

    def plan(self, method: str, idempotent: bool | None, *, replayable: bool) -> HedgePlan | None:
        """Whether this request is hedged at all, and after how long; None: not hedged.

        Not for a request that is not idempotent (the retry policy's decision) or whose body
        cannot be sent twice, nor, with a learned delay, before ``min_samples`` latencies.
        """
        if not replayable:
            return None
        if not self._retry.may_retry(Failure.MAYBE_PROCESSED, method.upper(), idempotent):
            return None
        policy = self.policy
        if policy.delay is not None:
            return HedgePlan(policy.delay, policy.max_hedges)
        assert policy.quantile is not None  # the policy holds exactly one of the two
        if len(self.latencies) < policy.min_samples:
            return None
        delay = self.latencies.quantile(policy.quantile)
        return None if delay is None else HedgePlan(delay, policy.max_hedges)

    def observe(self, seconds: float) -> None:
        """A finished attempt's latency to response headers, for the learned delay."""
        self.latencies.record(seconds)

    def target(
        self, balancer: Balancer, tried: set[tuple[str, int]], hedges_sent: int, plan: HedgePlan
    ) -> EndpointState | None:
        """The Pod a hedge goes to now, or None: not sent (cap reached, no other Pod, or the
        retry budget refuses it). A hedge is taken from the budget only when a Pod exists."""
        if hedges_sent >= plan.max_hedges:
            return None
        state = balancer.pick(PickContext(exclude=frozenset(tried)))
        if state is None or state.key in tried:
            return None
        if not self._budget.try_withdraw():
            return None
        return state
