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


DEFAULT_LIMITS = ConnectionLimits(None, None, 4.0)
"""A sender's limits when the client sets none: unlimited, idle connections kept 4 s."""
