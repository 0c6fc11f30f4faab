"""Refresh timing, retry rules and the retry budget (pure, injected clock)."""

from __future__ import annotations

import random

import pytest

from headlesslb.core.clock import ManualClock
from headlesslb.core.retry import Failure, RetryBudget, RetryPolicy
from headlesslb.core.schedule import RefreshPolicy
from headlesslb.errors import ConfigurationError


def test_next_delay_clamps_ttl_with_jitter() -> None:
    policy = RefreshPolicy(min_interval=1, max_interval=30, jitter=0.1)
    rng = random.Random(7)
    delays = [policy.next_delay(5, rng) for _ in range(1000)]
    assert min(delays) >= 4.5 and max(delays) <= 5.0  # never later than the records expire
    assert max(delays) - min(delays) > 0.4  # jitter really spreads
    assert 0.9 <= policy.next_delay(0, rng) <= 1.0
    assert 27 <= policy.next_delay(3600, rng) <= 30


def test_error_backoff_doubles_to_cap() -> None:
    policy = RefreshPolicy(error_backoff=0.5, max_error_backoff=4, jitter=0)
    rng = random.Random(1)
    assert [policy.error_delay(n, rng) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_interval": 0},
        {"min_interval": 5, "max_interval": 1},
        {"jitter": 1},
        {"error_backoff": 0},
        {"first_resolution_timeout": 0},
    ],
)
def test_refresh_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RefreshPolicy(**kwargs)  # type: ignore[arg-type]


def test_what_may_be_retried() -> None:
    policy = RetryPolicy()
    assert policy.may_retry(Failure.NOT_SENT, "POST", None)
    assert not policy.may_retry(Failure.MAYBE_PROCESSED, "POST", None)
    assert not policy.may_retry(Failure.RETRYABLE_STATUS, "PATCH", None)
    assert policy.may_retry(Failure.RETRYABLE_STATUS, "GET", None)
    assert policy.may_retry(Failure.MAYBE_PROCESSED, "POST", True)
    assert not policy.may_retry(Failure.MAYBE_PROCESSED, "GET", False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"per_try_timeout": 0},
        {"deadline": -1},
        {"backoff_base": 1, "backoff_max": 0.5},
        {"budget_ratio": -0.1},
    ],
)
def test_retry_policy_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_budget_allows_ratio_of_requests_plus_floor() -> None:
    clock = ManualClock()
    budget = RetryBudget(ratio=0.2, min_per_second=5, clock=clock)
    granted = 0
    for _ in range(1000):
        budget.deposit()
        granted += budget.try_withdraw()
    # Within one instant: 20 % of 1,000 requests plus one second's floor.
    assert granted <= 1000 * 0.2 + 5
    assert granted >= 190


def test_budget_floor_refills_with_time_and_is_capped() -> None:
    clock = ManualClock()
    budget = RetryBudget(ratio=0.0, min_per_second=2, clock=clock)
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
    clock.advance(100)  # a long quiet spell banks only one second's worth
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
    clock.advance(0.5)
    assert budget.try_withdraw()
    assert not budget.try_withdraw()


def test_budget_request_credit_is_capped() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0, clock=ManualClock(), max_banked=10)
    for _ in range(10_000):
        budget.deposit()
    assert budget.balance == 5.0
