"""Optional active health checks: probe every Pod and feed the verdicts to the pool.

A headless Service publishes a Pod until its endpoints are updated, and with
``publishNotReadyAddresses: true`` it publishes Pods that are not ready at all; passive outlier
detection only notices once real requests fail. Probes notice first. The threshold logic
(:class:`HealthTracker`) is pure; :class:`HealthChecker` is the thin loop that sends the probes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.abc

from .endpoint import Endpoint
from .errors import ConfigurationError
from .pool import Pool

__all__ = ["HealthCheck", "HealthChecker", "HealthTracker"]

log = logging.getLogger("headlesslb.health")

Probe = Callable[[Endpoint], Awaitable[bool]]
"""Sends one probe to an endpoint; True when it answered healthy in time."""


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
    healthy_statuses: range = range(200, 400)
    uneject_on_pass: bool = True
    """A passing probe ends an outlier ejection early, as Envoy does by default: a Pod that was
    refusing connections while it restarted gets traffic again within one interval."""
    concurrency: int = 32
    """Probes in flight at once: a 1,000-Pod Service is probed without 1,000 sockets at once."""

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ConfigurationError(f"health check path must start with '/', not {self.path!r}")
        if self.interval <= 0 or self.timeout <= 0:
            raise ConfigurationError("health check interval and timeout must be > 0")
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1 or self.concurrency < 1:
            raise ConfigurationError("health check thresholds and concurrency must be >= 1")


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


class HealthChecker:
    """Probes every pool member each interval, or at once when the membership changes."""

    def __init__(self, check: HealthCheck, pool: Pool, probe: Probe) -> None:
        self.check = check
        self.pool = pool
        self.tracker = HealthTracker(check)
        self._probe = probe
        self._wake = anyio.Event()
        self._running = False
        self.rounds = 0

    def wake(self) -> None:
        """Probe now (new endpoints appeared); never blocks."""
        self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The loop; like the refresher it logs and carries on rather than die."""
        self._running = True
        task_status.started()
        limiter = anyio.CapacityLimiter(self.check.concurrency)
        try:
            while True:
                try:
                    await self._round(limiter)
                except Exception:
                    log.exception("health-check round failed; retrying next interval")
                self.rounds += 1
                with anyio.move_on_after(self.check.interval):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            self._running = False

    @property
    def running(self) -> bool:
        """Whether the probe loop is running."""
        return self._running

    async def _round(self, limiter: anyio.CapacityLimiter) -> None:
        members = self.pool.snapshot.members
        self.tracker.forget_except({m.key for m in members})

        async def probe(endpoint: Endpoint) -> None:
            async with limiter:
                try:
                    with anyio.fail_after(self.check.timeout):
                        passed = await self._probe(endpoint)
                except TimeoutError:
                    passed = False
            verdict = self.tracker.observe(endpoint.key, passed)
            if verdict is not None:
                log.info("%s is now %s", endpoint, "healthy" if verdict else "unhealthy")
                self.pool.set_health(endpoint.key, verdict)
            if passed and self.check.uneject_on_pass and self.pool.end_ejection(endpoint.key):
                log.info("%s passed a health check: ejection ended early", endpoint)

        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(probe, member.endpoint)
