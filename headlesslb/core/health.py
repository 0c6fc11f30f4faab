"""Active health checking, the pure half: the policy and the verdicts.

:class:`HealthCheck` says what to probe and how verdicts flip; :class:`HealthTracker` turns probe
results into healthy/unhealthy verdicts with Envoy-style thresholds. The probing loop is
:class:`headlesslb.io.health.HealthChecker`.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import validate

__all__ = ["HealthCheck", "HealthTracker"]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """What to probe and how verdicts flip (Envoy-style thresholds)."""

    path: str = "/healthz"
    interval: float = 5.0
    """Seconds between probe rounds."""
    timeout: float = 1.0
    """Seconds a probe may take; slower counts as a failure."""
    healthy_threshold: int = 2
    """Consecutive passes that bring an unhealthy endpoint back."""
    unhealthy_threshold: int = 3
    """Consecutive failures that mark an endpoint unhealthy."""
    start_unhealthy: bool = False
    """New endpoints get no traffic until a first probe passes (for Services published with
    ``publishNotReadyAddresses``). Off by default: DNS-listed Pods are normally ready."""
    healthy_statuses: range | frozenset[int] = range(200, 400)
    """Statuses that pass: a range within 100-599, or a set of status codes."""
    uneject_on_pass: bool = True
    """A passing probe ends an outlier ejection early, as Envoy does by default: a Pod that was
    refusing connections while it restarted gets traffic again within one interval."""
    concurrency: int = 32
    """Probes in flight at once: a 1,000-Pod Service is probed without 1,000 sockets at once."""

    def __post_init__(self) -> None:
        name = "HealthCheck."
        validate.request_path(name + "path", self.path)
        validate.number(name + "interval", self.interval, min=0, exclusive_min=True)
        validate.number(name + "timeout", self.timeout, min=0, exclusive_min=True)
        validate.count(name + "healthy_threshold", self.healthy_threshold, min=1)
        validate.count(name + "unhealthy_threshold", self.unhealthy_threshold, min=1)
        validate.count(name + "concurrency", self.concurrency, min=1)
        validate.flag(name + "start_unhealthy", self.start_unhealthy)
        validate.flag(name + "uneject_on_pass", self.uneject_on_pass)
        statuses = validate.status_codes(
            name + "healthy_statuses", self.healthy_statuses, allow_empty=False
        )
        object.__setattr__(self, "healthy_statuses", statuses)  # a set becomes a frozenset


class HealthTracker:
    """Turns a stream of probe results into healthy/unhealthy verdicts (pure)."""

    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self._healthy: dict[tuple[str, int], bool] = {}
        self._streak: dict[tuple[str, int], int] = {}
        self._admitted: set[tuple[str, int]] = set()

    def initial(self) -> bool:
        """The verdict a never-probed endpoint starts with."""
        return not self.check.start_unhealthy

    def observe(self, key: tuple[str, int], passed: bool) -> bool | None:
        """Record one probe; returns the new verdict when it flips, else None."""
        healthy = self._healthy.get(key, self.initial())
        streak = self._streak.get(key, 0)
        # A streak counts results that disagree with the current verdict.
        streak = streak + 1 if passed != healthy else 0
        threshold = self.check.healthy_threshold if not healthy else self.check.unhealthy_threshold
        if passed and key not in self._admitted and self.check.start_unhealthy:
            threshold = 1  # a new Pod's first passing probe is enough to let traffic in
        if streak >= threshold:
            self._healthy[key] = passed
            self._streak[key] = 0
            if passed:
                self._admitted.add(key)
            return passed
        self._healthy.setdefault(key, healthy)
        self._streak[key] = streak
        return None

    def forget_except(self, keys: set[tuple[str, int]]) -> None:
        """Drop state of endpoints no longer in DNS."""
        for key in list(self._healthy):
            if key not in keys:
                del self._healthy[key]
                self._streak.pop(key, None)
                self._admitted.discard(key)
