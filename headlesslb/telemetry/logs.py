"""Logging fed by the event stream: one line per state change, DEBUG for each attempt.

Every client subscribes a :class:`LogObserver` for its own requests' events, and every runtime
has its own for the Service's (membership, ejection, health, DNS): logged once however many
clients share the runtime. Loggers (all under ``headlesslb``, which has a ``NullHandler``:
nothing is printed unless the application configures logging):

- ``headlesslb.pool``: Pods joining or leaving DNS, ejected, readmitted, health up or down (INFO);
- ``headlesslb.fallback``: the fallback engaged (WARNING) or left (INFO);
- ``headlesslb.retry``: the retry budget exhausted (WARNING, once until a retry is allowed
  again), each retry (DEBUG);
- ``headlesslb.refresher``: DNS failing (WARNING, each failed round, as rounds back off) and
  recovered (INFO); NXDOMAIN for the Service (WARNING, once, and again only after it resolved
  meanwhile);
- ``headlesslb.attempts``: each attempt (DEBUG; attempt events are built only while this logger
  is enabled for DEBUG, or another observer wants them);
- ``headlesslb.streams``: a streamed response garbage-collected without being closed (WARNING,
  the first of each client; DEBUG after that).

Records carry structured fields in ``extra``: ``service``, and where they apply ``endpoint``
(``ip:port``), ``hostname``, ``ordinal``, ``reason``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..core.endpoint import NXDOMAIN_WORDS, Endpoint
from ..core.events import (
    AttemptFinished,
    AttemptStarted,
    DiscoveryRound,
    EndpointEjected,
    EndpointReadmitted,
    EndpointsChanged,
    Event,
    FallbackEngaged,
    FallbackLeft,
    HealthChanged,
    LoadReportRejected,
    RetryBudgetExhausted,
    RetryScheduled,
    StreamAbandoned,
)

__all__ = ["MAX_ENDPOINT_LINES", "LogObserver"]

MAX_ENDPOINT_LINES = 10
"""Pods named one line each per DNS round; more are summed up in one line (a 1,000-Pod Service's
first answer is 11 lines, not 1,000)."""

pool_log = logging.getLogger("headlesslb.pool")
fallback_log = logging.getLogger("headlesslb.fallback")
retry_log = logging.getLogger("headlesslb.retry")
discovery_log = logging.getLogger("headlesslb.refresher")
attempt_log = logging.getLogger("headlesslb.attempts")
stream_log = logging.getLogger("headlesslb.streams")


def _fields(service: str, pod: Endpoint | None, **more: Any) -> Mapping[str, Any]:
    fields: dict[str, Any] = {"service": service}
    if pod is not None:
        fields["endpoint"] = pod.authority
        fields["hostname"] = pod.hostname
        fields["ordinal"] = pod.ordinal
    fields.update(more)
    return fields


class LogObserver:
    """Turns events into log records (see the module docstring for loggers and levels)."""

    def __init__(self) -> None:
        self._nxdomain = False
        """Whether NXDOMAIN was logged, and the Service has not resolved since."""
        self.wants_attempts: Callable[[], bool] = functools.partial(
            attempt_log.isEnabledFor, logging.DEBUG
        )
        """Attempt events only while ``headlesslb.attempts`` logs DEBUG (asked once per
        request: the logger's own method, with no frame of ours around it)."""

    def __call__(self, event: Event) -> None:
        """Log ``event`` if it is one a log line is kept for."""
        kind = type(event)
        if kind is AttemptStarted:
            return  # the line is written when the attempt ends
        if kind is AttemptFinished:
            assert isinstance(event, AttemptFinished)
            if attempt_log.isEnabledFor(logging.DEBUG):
                self._attempt(event)
        elif kind is EndpointsChanged:
            assert isinstance(event, EndpointsChanged)
            self._membership(event)
        elif kind is EndpointEjected:
            assert isinstance(event, EndpointEjected)
            pool_log.info(
                "%s: %s ejected for %.1f s: %s",
                event.service,
                event.endpoint,
                event.duration,
                event.reason,
                extra=_fields(
                    event.service, event.endpoint, reason=event.reason, duration=event.duration
                ),
            )
        elif kind is EndpointReadmitted:
            assert isinstance(event, EndpointReadmitted)
            reason = event.reason.value
            pool_log.info(
                "%s: %s readmitted: %s",
                event.service,
                event.endpoint,
                reason,
                extra=_fields(event.service, event.endpoint, reason=reason),
            )
        elif kind is HealthChanged:
            assert isinstance(event, HealthChanged)
            state = "healthy" if event.healthy else "unhealthy"
            pool_log.info(
                "%s: %s is now %s",
                event.service,
                event.endpoint,
                state,
                extra=_fields(event.service, event.endpoint, reason=f"health check: {state}"),
            )
        elif kind is FallbackEngaged:
            assert isinstance(event, FallbackEngaged)
            fallback_log.warning(
                "%s: sending requests to the fallback %s: %s",
                event.service,
                event.fallback,
                event.reason,
                extra=_fields(event.service, None, reason=event.reason, fallback=event.fallback),
            )
        elif kind is FallbackLeft:
            assert isinstance(event, FallbackLeft)
            fallback_log.info(
                "%s: Pods answer again; the fallback %s is no longer used",
                event.service,
                event.fallback,
                extra=_fields(
                    event.service, None, reason="a Pod answered", fallback=event.fallback
                ),
            )
        elif kind is RetryScheduled:
            assert isinstance(event, RetryScheduled)
            if retry_log.isEnabledFor(logging.DEBUG):
                retry_log.debug(
                    "%s: retry %d of %s after %s from %s (backoff %.0f ms)",
                    event.service,
                    event.retry,
                    event.method,
                    event.failure,
                    event.endpoint,
                    event.backoff * 1000,
                    extra=_fields(event.service, None, endpoint=event.endpoint),
                )
        elif kind is RetryBudgetExhausted:
            assert isinstance(event, RetryBudgetExhausted)
            if event.first:
                retry_log.warning(
                    "%s: retry budget exhausted: failed requests are no longer retried until"
                    " it refills",
                    event.service,
                    extra=_fields(
                        event.service, None, endpoint=event.endpoint, reason="retry budget"
                    ),
                )
        elif kind is DiscoveryRound:
            assert isinstance(event, DiscoveryRound)
            self._discovery(event)
        elif kind is LoadReportRejected:
            assert isinstance(event, LoadReportRejected)
            pool_log.warning(
                "%s: %s sent a load report that cannot be used (%s); its reports are ignored"
                " until a good one comes",
                event.service,
                event.endpoint,
                event.reason,
                extra=_fields(event.service, event.endpoint, reason=event.reason),
            )
        elif kind is StreamAbandoned:
            assert isinstance(event, StreamAbandoned)
            level = logging.WARNING if event.first else logging.DEBUG
            if stream_log.isEnabledFor(level):
                stream_log.log(
                    level,
                    "%s %s (from %s): a streamed response was garbage-collected without being"
                    " closed; close it (async with client.stream(...), or with in sync code) so"
                    " its connection is reused",
                    event.method,
                    event.url,
                    event.address,
                    extra=_fields(
                        event.service, event.endpoint, reason="stream not closed", url=event.url
                    ),
                )

    def _membership(self, event: EndpointsChanged) -> None:
        changes = [("joined", e) for e in event.added] + [("left", e) for e in event.removed]
        for what, endpoint in changes[:MAX_ENDPOINT_LINES]:
            pool_log.info(
                "%s: %s %s DNS (%d in DNS now)",
                event.service,
                endpoint,
                what,
                event.counts.total,
                extra=_fields(event.service, endpoint, reason=f"{what} DNS"),
            )
        if len(changes) > MAX_ENDPOINT_LINES:
            pool_log.info(
                "%s: and %d more changes (%d joined, %d left in all; %d in DNS now)",
                event.service,
                len(changes) - MAX_ENDPOINT_LINES,
                len(event.added),
                len(event.removed),
                event.counts.total,
                extra=_fields(event.service, None, reason="membership"),
            )

    def _discovery(self, event: DiscoveryRound) -> None:
        if event.nxdomain:
            if not self._nxdomain:
                self._nxdomain = True
                discovery_log.warning(
                    "%s: %s; check the name and namespace, and that its Pods are ready",
                    event.service,
                    NXDOMAIN_WORDS,
                    extra=_fields(event.service, None, reason="NXDOMAIN"),
                )
        elif event.ok:
            self._nxdomain = False  # it resolved: a later NXDOMAIN is news again
        if not event.ok:
            discovery_log.warning(
                "discovery failed (%s); keeping %d known endpoints",
                event.error,
                event.known,
                extra=_fields(event.service, None, reason=event.error),
            )
        elif event.failures_before:
            discovery_log.info(
                "%s: discovery recovered after %d failed round(s): %d endpoints",
                event.service,
                event.failures_before,
                event.endpoints,
                extra=_fields(event.service, None, reason="recovered"),
            )

    def _attempt(self, event: AttemptFinished) -> None:
        start = event.start
        result = event.status if event.status is not None else f"{event.error} ({event.outcome})"
        target = "fallback " if start.fallback else ""
        attempt_log.debug(
            "%s %s → %s%s: %s in %.1f ms (resend %d)",
            start.method,
            start.url,
            target,
            start.endpoint or event.address,
            result,
            event.duration * 1000,
            start.resend_count,
            extra=_fields(
                event.service,
                start.endpoint,
                status=event.status,
                error=event.error,
                resend_count=start.resend_count,
                fallback=start.fallback,
            ),
        )
