"""Whether, when and where to hedge a request (pure: clock injected, no I/O).

A hedge is a second attempt of the same request, sent to a *different* Pod (for a keyed request,
the key's next owner, as for a retry) when the first has not answered after a delay, and never
once the request's deadline has passed; the first attempt to finish wins and the other is
cancelled. The delay
is fixed (:attr:`HedgePolicy.delay`) or a learned quantile of recent latencies
(:attr:`HedgePolicy.quantile`, only once :attr:`HedgePolicy.min_samples` are known), as in
tower's ``Hedge`` middleware and gRPC's hedging policy.

Only requests the retry policy calls idempotent are hedged (:meth:`RetryPolicy.may_retry` with
:attr:`Failure.MAYBE_PROCESSED` is the one idempotency decision; it is not made again here), and
every hedge is charged to the :class:`RetryBudget`: a hedge the budget refuses is not sent, so
hedging can never add more load than retries may.

This module only decides. The call core holds the two attempts and records the loser
(fed ``HedgeDue`` and ``Settled``, :mod:`headlesslb.core.call`); waiting for the first to
finish and cancelling the other is the shells' work: an anyio task group in
:mod:`headlesslb.aio.transport`, a client-owned thread pool in :mod:`headlesslb.sync.hedging`
(see ``docs/overload.md``).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass

from ..errors import ConfigurationError
from . import forksafe
from .balancer import Balancer
from .clock import Clock, monotonic
from .pickers.base import HashKey, PickContext
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
    """Recent latencies (a bounded, aging window) and their quantiles; clock injected.

    Safe to share between threads (the sync client's request threads record and read it at
    once): one lock guards the window and its sorted copy, which every change keeps in step
    (a bisection and a short move), so a quantile is a lookup and never a sort.
    """

    def __init__(self, window: int = 1000, max_age: float = 30.0, *, clock: Clock = monotonic):
        count("LatencyEstimator.window", window, min=1)
        number("LatencyEstimator.max_age", max_age, min=0, exclusive_min=True)
        self._samples: deque[tuple[float, float]] = deque()
        """(when, seconds), oldest first."""
        self._sorted: list[float] = []
        """The same seconds, ascending."""
        self._window = window
        self._max_age = max_age
        self._clock = clock
        self._lock = forksafe.lock(self)  # request threads of the sync client share it

    def record(self, seconds: float) -> None:
        """One attempt's latency (to response headers); negative or non-finite ones are dropped,
        since they come from a clock mistake rather than a Pod."""
        if not math.isfinite(seconds) or seconds < 0:
            return
        with self._lock:
            now = self._clock()  # read under the lock: stamps stay in order in the deque
            samples, ranked = self._samples, self._sorted
            if len(samples) >= self._window:
                del ranked[bisect_left(ranked, samples.popleft()[1])]
            samples.append((now, seconds))
            insort(ranked, seconds)
            self._expire(now)

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._samples)

    def quantile(self, q: float, *, min_samples: int = 1) -> float | None:
        """The ``q`` quantile (nearest rank) of the samples in the window; None when it holds
        fewer than ``min_samples`` (judged with the quantile, under one lock)."""
        with self._lock:
            self._expire(self._clock())
            ranked = self._sorted
            if not ranked or len(ranked) < min_samples:
                return None
            return ranked[min(len(ranked) - 1, max(0, math.ceil(q * len(ranked)) - 1))]

    def _expire(self, now: float) -> None:
        horizon = now - self._max_age
        samples, ranked = self._samples, self._sorted
        while samples and samples[0][0] < horizon:
            del ranked[bisect_left(ranked, samples.popleft()[1])]


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
        delay = self.latencies.quantile(policy.quantile, min_samples=policy.min_samples)
        return None if delay is None else HedgePlan(delay, policy.max_hedges)

    def observe(self, seconds: float) -> None:
        """A finished attempt's latency to response headers, for the learned delay."""
        self.latencies.record(seconds)

    def target(
        self,
        balancer: Balancer,
        tried: set[tuple[str, int]],
        hedges_sent: int,
        plan: HedgePlan,
        *,
        key: HashKey | None,
    ) -> EndpointState | None:
        """The Pod a hedge goes to now, or None: not sent (cap reached, no other Pod, or the
        retry budget refuses it). A hedge is taken from the budget only when a Pod exists.

        A keyed request's hedge goes where its retry would: the key's next owner (the sharding
        picker's fall-over past the Pods tried), so the affinity the key is for holds.
        """
        if hedges_sent >= plan.max_hedges:
            return None
        state = balancer.pick(PickContext(key, None, frozenset(tried)))
        if state is None or state.key in tried:
            return None
        if not self._budget.try_withdraw():
            return None
        return state
