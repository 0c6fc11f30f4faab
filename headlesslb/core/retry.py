"""What a response means, what is safe to retry, and how much retrying is allowed (pure: clock
and rng injected).

:meth:`RetryPolicy.judge` is the one place a response's status and headers get a meaning, a
:class:`Verdict`: how the attempt counts for balancing, what it means for a retry, and how long
its Pod is held off. The sender asks it once per response, at header time; the response body
reports the verdict's outcome to the pool and the call core decides on the same verdict.
:meth:`RetryPolicy.decide` is the one retry decision of the library: idempotency by method or
option, body replayability, the attempt cap, the statuses and the :class:`RetryBudget` (a
Finagle-style cap on retries as a share of requests, so a sick Service is not hit by a retry
storm). The call core (:mod:`headlesslb.core.call`) asks it after every failed attempt.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from .clock import Clock, monotonic
from .pool import Outcome
from .validate import count, http_methods, number, ordered, status_codes

__all__ = [
    "ANSWERED",
    "IDEMPOTENT_METHODS",
    "Failure",
    "RetryBudget",
    "RetryPolicy",
    "RetryVerdict",
    "Verdict",
    "retry_after_seconds",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""RFC 9110 §9.2.2: repeating these has the same effect as sending them once."""


class Failure(enum.Enum):
    """The phase a failed attempt failed in; decides whether any method may be retried."""

    NOT_SENT = "not_sent"
    """Connecting failed or timed out: the request provably never reached the server."""
    MAYBE_PROCESSED = "maybe_processed"
    """The request may have reached the server (read error, reset, timeout after sending)."""
    RETRYABLE_STATUS = "retryable_status"
    """The server answered with a status in :attr:`RetryPolicy.retry_statuses`."""
    REJECTED = "rejected"
    """The server turned the request away for load (429, or 503 with Retry-After): retried on
    another Pod under the same rules as a retryable status."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one attempt's end means, decided once: a response's by :meth:`RetryPolicy.judge`,
    a failed send's by :func:`headlesslb.io.outcomes.classify`."""

    outcome: Outcome
    """How the attempt counts for balancing: what its pool ``Attempt`` is told."""
    failure: Failure | None = None
    """What it means for a retry; None: nothing to retry (the answer stands)."""
    hold_off: float = 0.0
    """Seconds its Pod gets no new requests (a rejection's, bounded by
    :attr:`RetryPolicy.max_hold_off`); 0: none."""


ANSWERED = Verdict(Outcome.SUCCESS)
"""The verdict of most responses: an answer that stands and says the Pod is well."""

_GATEWAY_STATUSES = frozenset({502, 503, 504})
"""Statuses saying the Pod is unwell (a 503 with Retry-After is a rejection instead)."""


class RetryVerdict(enum.Enum):
    """What :meth:`RetryPolicy.decide` says about a failed attempt."""

    RETRY = "retry"
    """Try again (on another Pod, or the same pinned one); a retry was taken from the budget."""
    STOP = "stop"
    """Not retryable: the failure, the method, the body or the attempt count forbid it."""
    OUT_OF_BUDGET = "out_of_budget"
    """Retryable, but the retry budget is empty: the last error or response comes back now."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries on another Pod: how many, how fast, and for which failures."""

    max_attempts: int = 3
    """Attempts in all, the first included (1 disables retries)."""
    per_try_timeout: float | None = None
    """Seconds one attempt may take until response headers; ``None``: only httpx's timeouts."""
    deadline: float | None = None
    """Seconds the whole request may take across attempts; ``None``: no overall cap."""
    retry_statuses: frozenset[int] = frozenset({502, 503, 504})
    backoff_base: float = 0.02
    """Backoff before retry n (1, 2, …) is uniform in [0, min(backoff_max, base × 2^(n−1))]
    (full jitter)."""
    backoff_max: float = 0.25
    budget_ratio: float = 0.2
    """Retries allowed as a share of requests (0.2: one retry per five requests)."""
    budget_min_per_second: float = 10.0
    """Retries always allowed per second, so a quiet client can still retry."""
    idempotent_methods: frozenset[str] = field(default=IDEMPOTENT_METHODS)
    hold_off: float = 1.0
    """Seconds a Pod that rejected (429, or 503 with Retry-After) gets no new requests when its
    Retry-After gives no usable delay (capped by :attr:`max_hold_off` too)."""
    max_hold_off: float = 10.0
    """Cap on a hold-off, seconds, whatever Retry-After asks (a Pod cannot take itself out for
    an hour by mistake); 0 turns hold-offs off."""
    _verdicts: Mapping[int, Verdict] = field(init=False, repr=False, compare=False)
    """The verdicts of the statuses that are not a plain answer, rejections aside: made once,
    so that judging a response costs a lookup."""

    def __post_init__(self) -> None:
        name = "RetryPolicy."
        count(name + "max_attempts", self.max_attempts, min=1)
        for field_name in ("per_try_timeout", "deadline"):
            number(
                name + field_name,
                getattr(self, field_name),
                min=0,
                exclusive_min=True,
                allow_none=True,
            )
        statuses = status_codes(name + "retry_statuses", self.retry_statuses)
        object.__setattr__(self, "retry_statuses", frozenset(statuses))
        base = number(name + "backoff_base", self.backoff_base, min=0)
        ceiling = number(name + "backoff_max", self.backoff_max, min=0)
        ordered(name + "backoff_base", base, name + "backoff_max", ceiling)
        number(name + "budget_ratio", self.budget_ratio, min=0)
        number(name + "budget_min_per_second", self.budget_min_per_second, min=0)
        methods = http_methods(name + "idempotent_methods", self.idempotent_methods)
        object.__setattr__(self, "idempotent_methods", methods)
        number(name + "hold_off", self.hold_off, min=0)
        number(name + "max_hold_off", self.max_hold_off, min=0)
        retried = self.retry_statuses
        verdicts = {
            status: Verdict(
                Outcome.GATEWAY_ERROR if status in _GATEWAY_STATUSES else Outcome.SUCCESS,
                Failure.RETRYABLE_STATUS if status in retried else None,
            )
            for status in _GATEWAY_STATUSES | retried
        }
        object.__setattr__(self, "_verdicts", verdicts)

    def judge(self, status: int, headers: Mapping[str, str]) -> Verdict:
        """What a response with this status and these headers (case-insensitive, as
        ``httpx.Headers``; read only for a 429 or 503) means: 429, and 503 with Retry-After,
        are rejections (``Outcome.REJECTED``, ``Failure.REJECTED``, held off for
        :meth:`hold_off_for`); 502/503/504 say the Pod is unwell; a status in
        :attr:`retry_statuses` is retried."""
        if status == 429 or (status == 503 and "retry-after" in headers):
            return Verdict(Outcome.REJECTED, Failure.REJECTED, self.hold_off_for(headers))
        return self._verdicts.get(status, ANSWERED)

    def decide(
        self,
        failure: Failure | None,
        *,
        method: str,
        idempotent: bool | None,
        replayable: bool,
        attempts: int,
        budget: RetryBudget,
    ) -> RetryVerdict:
        """Whether to retry after ``attempts`` attempts, the last of which failed so.

        ``failure`` is None for an error that says nothing retryable (a bug, a local protocol
        error); ``replayable`` tells whether the body can be sent again (a streamed body that
        was sent cannot; one that never left, a connect failure, can).
        """
        if failure is None or attempts >= self.max_attempts:
            return RetryVerdict.STOP
        if not self.may_retry(failure, method, idempotent):
            return RetryVerdict.STOP
        if failure is not Failure.NOT_SENT and not replayable:
            return RetryVerdict.STOP
        if not budget.try_withdraw():
            return RetryVerdict.OUT_OF_BUDGET
        return RetryVerdict.RETRY

    def hold_off_for(self, headers: Mapping[str, str]) -> float:
        """Seconds to hold a rejecting Pod off: its Retry-After (delay-seconds, or an HTTP-date
        measured against the response's own Date header, since the core reads no wall clock),
        else :attr:`hold_off`; never more than :attr:`max_hold_off`, 0 if hold-offs are off."""
        if not self.max_hold_off:
            return 0.0
        delay = retry_after_seconds(headers)
        return min(self.hold_off if delay is None else delay, self.max_hold_off)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first): full jitter."""
        return rng.uniform(0.0, min(self.backoff_max, self.backoff_base * 2.0 ** (retry - 1)))

    def may_retry(self, failure: Failure, method: str, idempotent: bool | None) -> bool:
        """Whether a failure of this kind may be retried for this request."""
        if failure is Failure.NOT_SENT:
            return True
        if idempotent is None:
            idempotent = method in self.idempotent_methods
        return idempotent

    def budget(self, clock: Clock = monotonic) -> RetryBudget:
        """A fresh budget with this policy's numbers."""
        return RetryBudget(self.budget_ratio, self.budget_min_per_second, clock=clock)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The delay a Retry-After header asks for (RFC 9110 §10.2.3), or None when it is absent or
    unusable. An HTTP-date counts from the response's Date header; without one it is unusable.
    The value comes from a Pod: anything malformed is ignored, never raised."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value)) if len(value) <= 9 else 1e9
    try:
        when = parsedate_to_datetime(value)
        date = headers.get("date")
        if date is None:
            return None
        now = parsedate_to_datetime(date)
        return max((when - now).total_seconds(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class RetryBudget:
    """Token bucket for retries: each request deposits ``ratio``; each retry withdraws one.

    A second bucket refills at ``min_per_second`` (capped at one second's worth), so retries never
    drop to zero for a low-traffic client. The request bucket is capped too, so a long healthy
    period cannot bank enough credit for a storm later.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        *,
        clock: Clock = monotonic,
        max_banked: float = 100.0,
    ) -> None:
        number("RetryBudget.ratio", ratio, min=0)
        number("RetryBudget.min_per_second", min_per_second, min=0)
        number("RetryBudget.max_banked", max_banked, min=0)
        self.ratio = ratio
        self.min_per_second = min_per_second
        self._clock = clock
        self._cap = max(max_banked * ratio, 1.0) if ratio else 0.0
        self._tokens = 0.0
        self._floor_tokens = min_per_second
        self._floor_stamp = clock()

    def deposit(self) -> None:
        """Record one request (not a retry)."""
        tokens = self._tokens + self.ratio
        self._tokens = tokens if tokens < self._cap else self._cap

    def try_withdraw(self) -> bool:
        """Take one retry from the budget; False when it is empty."""
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        now = self._clock()
        self._floor_tokens = min(
            self.min_per_second,
            self._floor_tokens + (now - self._floor_stamp) * self.min_per_second,
        )
        self._floor_stamp = now
        if self._floor_tokens >= 1.0:
            self._floor_tokens -= 1.0
            return True
        return False

    @property
    def balance(self) -> float:
        """Retries available right now from requests (the per-second floor not counted)."""
        return self._tokens
