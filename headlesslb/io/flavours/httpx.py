"""The httpx flavour: headlesslb's request-path errors derive from httpx's already
(:mod:`headlesslb.errors`), so they reach the caller as they are."""

from __future__ import annotations

from typing import TypeVar

import httpx

__all__ = ["FAILURES", "for_caller"]

E = TypeVar("E", bound=BaseException)

FAILURES: tuple[type[Exception], ...] = (httpx.TransportError,)
"""What a failed send raises: httpx's transport errors, headlesslb's own among them."""


def for_caller(error: E, request: object) -> E:
    """``error`` as the caller catches it: itself (it is an httpx error already, or none)."""
    return error
