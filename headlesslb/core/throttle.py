"""Client-side adaptive throttling (Google SRE book, "Handling Overload"; Finagle's
NackAdmissionFilter). Pure: the clock and the random source are injected.

Over a sliding window the throttle counts *requests* (attempts that got an answer from a Pod,
plus attempts it shed itself) and *accepts* (answers that were not a rejection for load: 429,
or 503 with Retry-After). Each new attempt is shed locally with probability::

    max(0, (requests − K × accepts) / (requests + 1))

so while Pods accept at least 1/K of what is sent nothing is shed, and when most of them reject,
the client sends about K × what they accept instead of amplifying the overload with retries.
Transport failures (refused, reset, timeouts) count as neither: they are not overload, and the
fallback Service must still get those requests.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .clock import Clock, monotonic
from .validate import count, number

__all__ = ["AdaptiveThrottle", "Throttle"]


@dataclass(frozen=True, slots=True)
class AdaptiveThrottle:
    """The throttle's settings (``throttle=AdaptiveThrottle()``); each client builds its own
    :class:`Throttle` from them."""

    k: float = 2.0
    """Requests allowed per accept before shedding starts (2: shed once Pods reject over half).
    Lower sheds sooner and harder; 1 keeps sending only what was accepted."""
    window: float = 10.0
    """Seconds of history the counts cover (sliding, in ``buckets`` steps)."""
    min_requests: int = 10
    """Never shed while the window holds fewer requests than this: one 429 to a quiet client
    would otherwise shed half of what it sends next."""
    buckets: int = 10

    def __post_init__(self) -> None:
        name = "AdaptiveThrottle."
        number(name + "k", self.k, min=1)
        number(name + "window", self.window, min=0, exclusive_min=True)
        count(name + "min_requests", self.min_requests, min=0)
        count(name + "buckets", self.buckets, min=1, max=1000)

    def build(self, clock: Clock = monotonic, rng: random.Random | None = None) -> Throttle:
        """A fresh throttle with these settings."""
        return Throttle(self, clock, rng or random.Random())


class Throttle:
    """The live counts of one client's :class:`AdaptiveThrottle`."""

    __slots__ = (
        "_accepts",
        "_bucket",
        "_clock",
        "_requests",
        "_rng",
        "_span",
        "_total_accepts",
        "_total_requests",
        "settings",
        "shed",
    )

    def __init__(self, settings: AdaptiveThrottle, clock: Clock, rng: random.Random) -> None:
        self.settings = settings
        self._clock = clock
        self._rng = rng
        self._span = settings.window / settings.buckets
        self._requests = [0] * settings.buckets
        self._accepts = [0] * settings.buckets
        self._total_requests = 0
        self._total_accepts = 0
        self._bucket = math.floor(clock() / self._span)
        self.shed = 0
        """Attempts shed so far (diagnostics)."""

    def _advance(self) -> int:
        """Drop the buckets that left the window; the index of the current one."""
        now = math.floor(self._clock() / self._span)
        n = self.settings.buckets
        stale = now - self._bucket
        if stale > 0:
            for step in range(1, min(stale, n) + 1):
                i = (self._bucket + step) % n
                self._total_requests -= self._requests[i]
                self._total_accepts -= self._accepts[i]
                self._requests[i] = self._accepts[i] = 0
            self._bucket = now
        return now % n

    @property
    def probability(self) -> float:
        """The chance the next attempt is shed."""
        self._advance()
        requests = self._total_requests
        if requests < self.settings.min_requests:
            return 0.0
        return max(0.0, (requests - self.settings.k * self._total_accepts) / (requests + 1))

    def admit(self) -> bool:
        """Whether to send the next attempt; a shed one counts as a request (as in the book)."""
        p = self.probability
        if p <= 0.0 or self._rng.random() >= p:
            return True
        i = self._advance()
        self._requests[i] += 1
        self._total_requests += 1
        self.shed += 1
        return False

    def answered(self, accepted: bool) -> None:
        """A Pod answered an attempt; ``accepted`` is False for a rejection for load."""
        i = self._advance()
        self._requests[i] += 1
        self._total_requests += 1
        if accepted:
            self._accepts[i] += 1
            self._total_accepts += 1
