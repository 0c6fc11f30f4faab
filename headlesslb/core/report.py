"""The user-facing report of one request: ``response.extensions["headlesslb"]``, typed.

httpx types ``response.extensions`` as ``dict[str, Any]``; annotate what you read from it to get
the keys checked::

    from headlesslb import Report

    report: Report = response.extensions["headlesslb"]
    print(report["hostname"], len(report["attempts"]))
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = ["AttemptReport", "Report"]


class AttemptReport(TypedDict):
    """One attempt of a request, in the order they were made."""

    endpoint: str
    """``ip:port`` of the Pod (or of the fallback Service) the attempt went to."""
    hostname: NotRequired[str | None]
    """The Pod's hostname when SRV named it (absent for the fallback)."""
    fallback: NotRequired[bool]
    """Present (True) when the attempt went to the fallback Service."""
    status: NotRequired[int]
    """The HTTP status the attempt got, when it got one."""
    error: NotRequired[str]
    """The name of the exception the attempt failed with."""
    outcome: NotRequired[str]
    """How a failure counted for balancing (``"refused"``, ``"connect_failure"``, ...)."""


class Report(TypedDict):
    """Where a request went and how: what ``response.extensions["headlesslb"]`` holds."""

    endpoint: str | None
    """``ip:port`` of the Pod that answered, or the fallback's address."""
    hostname: str | None
    """The answering Pod's hostname (``web-2``) when SRV named it."""
    ordinal: int | None
    """The answering Pod's StatefulSet ordinal, when it has one."""
    attempts: list[AttemptReport]
    fallback: bool
    """True when the fallback Service answered."""
    retry_budget_exhausted: bool
    """True when a retry was wanted but the retry budget was empty."""
    throttled: NotRequired[bool]
    """Present (True) when the adaptive throttle kept a retry from being sent."""
    service: NotRequired[str | None]
    """The fallback Service's name (only when ``fallback`` is True)."""
    discovery_error: NotRequired[str | None]
    """Why discovery had nothing, if it failed (only when ``fallback`` is True)."""
