"""When to refresh discovery: pure timing rules the refresher drives (no I/O, rng injected)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .validate import number, ordered

__all__ = ["RefreshPolicy"]


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """How often discovery runs and how it backs off.

    The next refresh is due ``clamp(ttl, min_interval, max_interval)`` seconds after the last one,
    shortened by up to ``jitter``: never later than the records expire, so Pods that come and go
    are seen within one TTL (CoreDNS serves TTL 5 by default), and a fleet of clients started
    together drifts apart instead of querying in lockstep.
    """

    min_interval: float = 1.0
    """Floor on the refresh period, whatever the TTL (TTL 0 would otherwise mean a busy loop)."""
    max_interval: float = 30.0
    """Ceiling on the refresh period, so a long TTL cannot hide a scale-down for long."""
    jitter: float = 0.1
    """Fraction by which a delay may be randomly shortened (error back-off: ± this fraction)."""
    error_backoff: float = 0.5
    """First retry delay after a failed round; doubles per failure up to ``max_error_backoff``."""
    max_error_backoff: float = 10.0
    early_min_interval: float = 1.0
    """Rate limit on early re-resolutions asked for by refused connections."""
    first_resolution_timeout: float = 5.0
    """How long a request waits for the very first discovery round before giving up on it."""

    def __post_init__(self) -> None:
        name = "RefreshPolicy."
        low = number(name + "min_interval", self.min_interval, min=0, exclusive_min=True)
        high = number(name + "max_interval", self.max_interval, min=0, exclusive_min=True)
        ordered(name + "min_interval", low, name + "max_interval", high)
        number(name + "jitter", self.jitter, min=0, max=1, exclusive_max=True)
        first = number(name + "error_backoff", self.error_backoff, min=0, exclusive_min=True)
        cap = number(name + "max_error_backoff", self.max_error_backoff, min=0, exclusive_min=True)
        ordered(name + "error_backoff", first, name + "max_error_backoff", cap)
        number(name + "early_min_interval", self.early_min_interval, min=0)
        number(
            name + "first_resolution_timeout",
            self.first_resolution_timeout,
            min=0,
            exclusive_min=True,
        )

    def next_delay(self, ttl: float, rng: random.Random) -> float:
        """Seconds until the next refresh after a successful round with this TTL."""
        base = min(max(ttl, self.min_interval), self.max_interval)
        return base * (1.0 - rng.uniform(0.0, self.jitter))

    def cache_ttl(self, ttl: float) -> float:
        """How long an answer with this TTL is trusted: the TTL within the refresh bounds.

        The lookups outside the refresh loop (a Pod by name, the fallback's address) keep their
        answers, found or not, exactly as long as discovery would, whatever TTL or SOA minimum
        the server sent.
        """
        return min(max(ttl, self.min_interval), self.max_interval)

    def error_delay(self, failures: int, rng: random.Random) -> float:
        """Seconds until the next try after ``failures`` failed rounds in a row (>= 1)."""
        base = min(self.error_backoff * 2.0 ** max(failures - 1, 0), self.max_error_backoff)
        return base * (1.0 + rng.uniform(-self.jitter, self.jitter))
