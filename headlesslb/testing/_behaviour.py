"""How a Pod behaves under load: rate limiting, cold start, a latency distribution.

Runs in the cluster process. Each Pod has one :class:`PodBehaviour`; the Pod's request handler
asks it, for every request but ``/healthz`` (a rate limiter in front of an app exempts probes),
whether to reject the request and how long to take over it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ._model import ClusterError

__all__ = ["PodBehaviour", "Verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the Pod does with one request."""

    delay: float
    """Seconds to take before answering."""
    reject: int | None = None
    """A status to reject with (429 or 503) instead of serving, with ``retry_after``."""
    retry_after: int = 0


_SERVE = Verdict(0.0)


@dataclass
class PodBehaviour:
    """The Pod's load controls; all off by default."""

    limit: float | None = None
    """Requests per second served; past it, requests are rejected (token bucket)."""
    burst: float = 1.0
    limit_status: int = 429
    retry_after: int = 1
    tokens: float = 0.0
    stamp: float | None = None
    cold_for: float = 0.0
    """Seconds of cold start, counted from the first request after it was set."""
    cold_latency: float = 0.0
    cold_since: float | None = None
    tail_fraction: float = 0.0
    """Share of responses that take ``tail_factor`` × the Pod's latency."""
    tail_factor: float = 1.0

    def set_rate_limit(
        self, per_second: float | None, burst: float | None, status: int, retry_after: int
    ) -> None:
        """Serve at most ``per_second`` requests a second (None: no limit)."""
        if per_second is not None and not per_second > 0:
            raise ClusterError(f"rate_limit per_second must be > 0 or None, not {per_second!r}")
        if status not in (429, 503):
            raise ClusterError(f"rate_limit status must be 429 or 503, not {status!r}")
        if not isinstance(retry_after, int) or retry_after < 0:
            raise ClusterError(f"rate_limit retry_after must be an int >= 0, not {retry_after!r}")
        if burst is not None and not burst >= 1:
            raise ClusterError(f"rate_limit burst must be >= 1, not {burst!r}")
        self.limit = per_second
        self.burst = burst if burst is not None else max(1.0, (per_second or 0) / 10)
        self.limit_status = status
        self.retry_after = retry_after
        self.tokens = self.burst
        self.stamp = None

    def set_cold_start(self, seconds: float, latency: float) -> None:
        """Take ``latency`` more seconds per response for ``seconds`` from the next request."""
        if not seconds >= 0 or not latency >= 0:
            raise ClusterError(
                f"cold_start seconds and latency must be >= 0, not {seconds!r}, {latency!r}"
            )
        self.cold_for = float(seconds)
        self.cold_latency = float(latency)
        self.cold_since = None

    def set_stragglers(self, fraction: float, factor: float) -> None:
        """Make ``fraction`` of responses ``factor`` × slower than the Pod's latency."""
        if not 0 <= fraction <= 1:
            raise ClusterError(f"stragglers fraction must be in [0, 1], not {fraction!r}")
        if not factor >= 1:
            raise ClusterError(f"stragglers factor must be >= 1, not {factor!r}")
        self.tail_fraction = float(fraction)
        self.tail_factor = float(factor)

    @property
    def active(self) -> bool:
        """Whether any control is on (the handler skips this object otherwise)."""
        return self.limit is not None or self.cold_for > 0 or self.tail_fraction > 0

    def decide(self, now: float, latency: float) -> Verdict:
        """The verdict for a request arriving at ``now`` on a Pod with this base ``latency``."""
        if self.limit is not None:
            if self.stamp is not None:
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.limit)
            self.stamp = now
            if self.tokens < 1.0:
                return Verdict(0.0, self.limit_status, self.retry_after)
            self.tokens -= 1.0
        delay = latency
        if self.tail_fraction and random.random() < self.tail_fraction:
            delay *= self.tail_factor
        if self.cold_for > 0:
            if self.cold_since is None:
                self.cold_since = now
            if now - self.cold_since < self.cold_for:
                delay += self.cold_latency
            else:
                self.cold_for = 0.0  # warm now: the handler skips this from here on
        return Verdict(delay) if delay else _SERVE
