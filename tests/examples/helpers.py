"""Small helpers for the examples' tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def http() -> httpx.Client:
    """A plain client for the test's own requests (never a proxy: loopback only)."""
    return httpx.Client(trust_env=False, timeout=10.0)


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``predicate`` until it holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.05)
