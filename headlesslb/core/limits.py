"""Connection limits per Pod, as one record every flavour's sender takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError

__all__ = ["DEFAULT_LIMITS", "ConnectionLimits"]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Connection limits per Pod as a hashable value: what ``httpx.Limits`` (or httpx2's) says,
    which compares its numbers but cannot be hashed."""

    max_connections: int | None
    max_keepalive_connections: int | None
    keepalive_expiry: float | None

    @classmethod
    def of(cls, limits: Any) -> ConnectionLimits | None:
        """The numbers of ``limits``, an ``httpx.Limits`` or ``httpx2.Limits`` (None stays None:
        the sender's defaults); anything else is a :class:`ConfigurationError`."""
        if limits is None:
            return None
        try:
            return cls(
                limits.max_connections, limits.max_keepalive_connections, limits.keepalive_expiry
            )
        except AttributeError:
            raise ConfigurationError(
                f"limits must be an httpx.Limits (or httpx2.Limits), not {limits!r}"
            ) from None


DEFAULT_LIMITS = ConnectionLimits(
    max_connections=100, max_keepalive_connections=100, keepalive_expiry=4.0
)
"""The connection limits of each Pod when ``limits=`` is not given (``headlesslb.options``
re-exports it): at most 100 connections to one Pod, each kept alive for 4 s when idle.

Limits apply per Pod (each has a pool of its own), so a client holds at most 100 × the Pods it
sends to. 100 is httpx's own default for a whole client: a Pod gets no more connections from
headlesslb than from a plain ``httpx.AsyncClient`` pointed at it. The bound exists for a Pod that
stalls: without one, every request sent its way while it stalls opens one more connection (a
file descriptor here, a slot in its accept queue there) until the client runs out. At the bound,
a request waits for a connection up to the pool timeout (httpx's ``Timeout(pool=...)``, 5 s by
default); then it fails as not connected, which is never sent, so it is retried on another Pod
and counts against the stalled one in outlier detection. Raise it for many concurrent slow
requests to few Pods: ``limits=httpx.Limits(max_connections=500)``; ``max_connections=None``
removes the bound, as it was before this default.
"""
