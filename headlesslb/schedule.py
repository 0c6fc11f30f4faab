"""When to refresh discovery: pure timing rules the refresher drives (no I/O, rng injected)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ConfigurationError

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
        if not 0 < self.min_interval <= self.max_interval:
            raise ConfigurationError("need 0 < min_interval <= max_interval")
        if not 0 <= self.jitter < 1:
            raise ConfigurationError("need 0 <= jitter < 1")
        if not 0 < self.error_backoff <= self.max_error_backoff:
            raise ConfigurationError("need 0 < error_backoff <= max_error_backoff")
        if self.early_min_interval < 0 or self.first_resolution_timeout <= 0:
            raise ConfigurationError("need early_min_interval >= 0, first_resolution_timeout > 0")

    def next_delay(self, ttl: float, rng: random.Random) -> float:
        """Seconds until the next refresh after a successful round with this TTL."""
        base = min(max(ttl, self.min_interval), self.max_interval)
        return base * (1.0 - rng.uniform(0.0, self.jitter))

    def error_delay(self, failures: int, rng: random.Random) -> float:
        """Seconds until the next try after ``failures`` failed rounds in a row (>= 1)."""
        base = min(self.error_backoff * 2.0 ** max(failures - 1, 0), self.max_error_backoff)
        return base * (1.0 + rng.uniform(-self.jitter, self.jitter))
