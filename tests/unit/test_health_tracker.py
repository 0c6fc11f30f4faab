"""Health-check verdicts from probe results (pure thresholds)."""

from __future__ import annotations

import pytest

from headlesslb.core.health import HealthCheck, HealthTracker
from headlesslb.errors import ConfigurationError

KEY = ("10.0.0.1", 80)


def test_unhealthy_after_threshold_failures_and_back_after_passes() -> None:
    tracker = HealthTracker(HealthCheck(unhealthy_threshold=3, healthy_threshold=2))
    assert [tracker.observe(KEY, False) for _ in range(3)] == [None, None, False]
    assert tracker.observe(KEY, True) is None
    assert tracker.observe(KEY, False) is None  # a failure breaks the recovery streak
    assert [tracker.observe(KEY, True) for _ in range(2)] == [None, True]


def test_a_pass_resets_the_failure_streak() -> None:
    tracker = HealthTracker(HealthCheck(unhealthy_threshold=2))
    assert tracker.observe(KEY, False) is None
    assert tracker.observe(KEY, True) is None
    assert tracker.observe(KEY, False) is None
    assert tracker.observe(KEY, False) is False


def test_start_unhealthy_lets_a_new_pod_in_on_its_first_pass() -> None:
    tracker = HealthTracker(HealthCheck(start_unhealthy=True, healthy_threshold=3))
    assert tracker.initial() is False
    assert tracker.observe(KEY, True) is True
    other = ("10.0.0.2", 80)
    assert tracker.observe(other, False) is None  # stays unhealthy: no flip to report
    assert tracker.observe(other, True) is True


def test_forget_drops_departed_endpoints() -> None:
    tracker = HealthTracker(HealthCheck(unhealthy_threshold=1))
    assert tracker.observe(KEY, False) is False
    tracker.forget_except(set())
    assert tracker.observe(KEY, True) is None  # starts over as healthy: nothing flips


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": "healthz"},
        {"interval": 0},
        {"timeout": -1},
        {"healthy_threshold": 0},
        {"concurrency": 0},
    ],
)
def test_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        HealthCheck(**kwargs)  # type: ignore[arg-type]
