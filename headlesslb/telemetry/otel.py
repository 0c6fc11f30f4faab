"""OpenTelemetry spans and metrics from the event stream (extra ``headlesslb[opentelemetry]``).

Depends on ``opentelemetry-api`` only. Every client subscribes an :class:`OpenTelemetryObserver`
on the global providers when the API is installed, so zero-code instrumentation
(``opentelemetry-instrument``, the OTel Operator) needs no headlesslb setting; until an SDK is
configured it asks for no attempt events and costs nothing per attempt.

**Spans** follow the HTTP client semantic conventions, one ``CLIENT`` span per attempt, a child of
the span current when the request was made: ``server.address``/``server.port`` name the Service
as the URL did, ``network.peer.address``/``network.peer.port`` the Pod (or the fallback's
address), resends carry ``http.request.resend_count``, a failed attempt has ``error.type`` and an
error status. Each attempt's request carries that span's ``traceparent`` (the global
propagator's headers, replacing any the request had), so the Pod's server span is its child.
httpx's own instrumentation (``HTTPXClientInstrumentor``) wraps ``httpx.HTTPTransport`` and
``httpx.AsyncHTTPTransport``, which balanced requests never go through: no duplicate spans.

**Metrics**: ``http.client.request.duration`` (s, the semantic-convention buckets) per attempt,
and ``headlesslb.endpoints`` (by state), ``headlesslb.ejections``, ``headlesslb.retries``,
``headlesslb.retry_budget.exhausted``, ``headlesslb.fallback.requests``,
``headlesslb.dns.round.duration`` and ``headlesslb.dns.errors``, each with a ``service`` attribute.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ..core.events import (
    AttemptFinished,
    AttemptStarted,
    DiscoveryRound,
    EndpointCounts,
    EndpointEjected,
    EndpointReadmitted,
    EndpointsChanged,
    Event,
    HealthChanged,
    RetryBudgetExhausted,
    RetryScheduled,
)

try:
    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError:  # the extra is not installed: api_available() says so
    _API = False
else:
    _API = True

__all__ = [
    "DURATION_BUCKETS",
    "METER_NAME",
    "RECHECK",
    "OpenTelemetryObserver",
    "api_available",
]

METER_NAME = "headlesslb"
"""The instrumentation scope of every span and metric."""

DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""``http.client.request.duration`` bucket boundaries, seconds (the semantic conventions')."""

RECHECK = 1.0
"""Seconds between looks for an SDK while none is configured."""

_SCHEMA = "https://opentelemetry.io/schemas/1.26.0"
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_STATES = ("healthy", "ejected", "unhealthy")


def api_available() -> bool:
    """Whether ``opentelemetry-api`` can be imported."""
    return _API


def _configured(provider: object, proxies: tuple[type, ...]) -> bool:
    # The API's own providers (its proxy and no-op ones) live in the API's modules: anything
    # else is an SDK or a vendor's provider, i.e. telemetry someone will export.
    return not isinstance(provider, proxies) and not type(provider).__module__.startswith(
        "opentelemetry.metrics"
    )


class OpenTelemetryObserver:
    """Spans and metrics for the events of the clients it observes.

    With no argument it uses the global providers (what zero-code instrumentation sets), and
    every client gets one automatically. Pass ``tracer_provider`` / ``meter_provider`` and give it
    to a client as ``observers=[OpenTelemetryObserver(...)]`` to use others (the automatic one is
    then left out). One observer may serve several clients.
    """

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        if not _API:
            from ..errors import ConfigurationError

            raise ConfigurationError(
                "OpenTelemetryObserver needs the OpenTelemetry API:"
                " pip install 'headlesslb[opentelemetry]'"
            )
        from .. import __version__

        self._tracing_on = tracer_provider is not None
        self._metrics_on = meter_provider is not None
        self._next_look = 0.0
        self._look()
        # Proxies until an SDK is set: they start delegating to it by themselves.
        self._tracer = trace.get_tracer(
            METER_NAME, __version__, tracer_provider=tracer_provider, schema_url=_SCHEMA
        )
        meter = metrics.get_meter(
            METER_NAME, __version__, meter_provider=meter_provider, schema_url=_SCHEMA
        )
        self._spans: dict[AttemptStarted, Any] = {}
        self._servers: dict[str, tuple[str, int | None, str]] = {}
        self._counts: dict[str, EndpointCounts] = {}
        self._lock = threading.Lock()
        self._duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests (one per attempt).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._ejections = meter.create_counter(
            "headlesslb.ejections", unit="{ejection}", description="Pods ejected."
        )
        self._retries = meter.create_counter(
            "headlesslb.retries", unit="{retry}", description="Attempts retried."
        )
        self._exhausted = meter.create_counter(
            "headlesslb.retry_budget.exhausted",
            unit="{request}",
            description="Retryable failures not retried: the retry budget was empty.",
        )
        self._fallback = meter.create_counter(
            "headlesslb.fallback.requests",
            unit="{request}",
            description="Attempts sent to the fallback Service.",
        )
        self._dns_duration = meter.create_histogram(
            "headlesslb.dns.round.duration",
            unit="s",
            description="Duration of DNS discovery rounds.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._dns_errors = meter.create_counter(
            "headlesslb.dns.errors", unit="{round}", description="DNS rounds that failed."
        )
        meter.create_observable_gauge(
            "headlesslb.endpoints",
            callbacks=[self._observe_endpoints],
            unit="{endpoint}",
            description="Pods in DNS, by state.",
        )

    # -- is anyone listening ---------------------------------------------------------------------
    def wants_attempts(self) -> bool:
        """Attempt events only while an SDK (or an explicit provider) records them."""
        return self._tracing() or self._metering()

    def _tracing(self) -> bool:
        if not self._tracing_on and self._due():
            self._look()
        return self._tracing_on

    def _metering(self) -> bool:
        if not self._metrics_on and self._due():
            self._look()
        return self._metrics_on

    def _due(self) -> bool:
        # Asking the API for its providers reads os.environ (about 1 µs a request): with no SDK,
        # look again at most every RECHECK seconds, so one configured later is seen that soon.
        now = time.monotonic()
        if now < self._next_look:
            return False
        self._next_look = now + RECHECK
        return True

    def _look(self) -> None:
        """Whether an SDK is configured now; once it is, it stays (the API sets it once)."""
        proxies = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._tracing_on = self._tracing_on or _configured(trace.get_tracer_provider(), proxies)
        metered = _configured(metrics.get_meter_provider(), (metrics.NoOpMeterProvider,))
        self._metrics_on = self._metrics_on or metered

    # -- events ----------------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Record ``event`` as span, measurement or both."""
        kind = type(event)
        if kind is AttemptStarted:
            assert isinstance(event, AttemptStarted)
            if self._tracing():
                self._start_span(event)
        elif kind is AttemptFinished:
            assert isinstance(event, AttemptFinished)
            self._finish(event)
        elif kind is RetryScheduled:
            self._retries.add(1, {"service": event.service})
        elif kind is RetryBudgetExhausted:
            self._exhausted.add(1, {"service": event.service})
        elif kind is DiscoveryRound:
            assert isinstance(event, DiscoveryRound)
            outcome = "ok" if event.ok else "error"
            self._dns_duration.record(
                event.duration, {"service": event.service, "outcome": outcome}
            )
            if not event.ok:
                self._dns_errors.add(1, {"service": event.service})
        elif kind is EndpointEjected:
            assert isinstance(event, EndpointEjected)
            self._ejections.add(1, {"service": event.service})
            self._counts[event.service] = event.counts
        elif kind in (EndpointsChanged, EndpointReadmitted, HealthChanged):
            assert isinstance(event, EndpointsChanged | EndpointReadmitted | HealthChanged)
            self._counts[event.service] = event.counts

    def _server(self, url: str) -> tuple[str, int | None, str]:
        """``server.address``, ``server.port`` and ``url.full`` (credentials redacted)."""
        server = self._servers.get(url)
        if server is None:
            parts = urlsplit(url)
            default = 443 if parts.scheme == "https" else 80
            full = url
            if "@" in parts.netloc:
                host = parts.netloc.rpartition("@")[2]
                full = parts._replace(netloc=f"REDACTED:REDACTED@{host}").geturl()
            server = (parts.hostname or "", parts.port or default, full)
            with self._lock:
                if len(self._servers) > 256:  # URLs are per request: keep the cache small
                    self._servers.clear()
                self._servers[url] = server
        return server

    def _start_span(self, event: AttemptStarted) -> None:
        method = event.method if event.method in _METHODS else "_OTHER"
        host, port, full = self._server(event.url)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": host,
            "url.full": full,
        }
        if port is not None:
            attributes["server.port"] = port
        if method == "_OTHER":
            attributes["http.request.method_original"] = event.method
        if event.resend_count:
            attributes["http.request.resend_count"] = event.resend_count
        endpoint = event.endpoint
        if endpoint is not None:
            attributes["network.peer.address"] = endpoint.ip
            attributes["network.peer.port"] = endpoint.port
            if endpoint.hostname is not None:  # its ordinal, if any, is in its name
                attributes["headlesslb.pod.hostname"] = endpoint.hostname
        else:
            attributes["headlesslb.fallback"] = True
        span = self._tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        propagate.inject(event.headers, context=trace.set_span_in_context(span))
        self._spans[event] = span

    def _finish(self, event: AttemptFinished) -> None:
        start = event.start
        span = self._spans.pop(start, None)
        status, error = event.status, event.error
        error_type = error
        if error_type is None and status is not None and status >= 400:
            error_type = str(status)
        if span is not None:
            if start.endpoint is None and event.address is not None:
                ip, _, peer_port = event.address.rpartition(":")
                span.set_attribute("network.peer.address", ip.strip("[]"))
                span.set_attribute("network.peer.port", int(peer_port))
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(StatusCode.ERROR, error if error is not None else None)
            span.end()
        if self._metering():
            host, port, _ = self._server(start.url)
            method = start.method if start.method in _METHODS else "_OTHER"
            attributes: dict[str, Any] = {"http.request.method": method, "server.address": host}
            if port is not None:
                attributes["server.port"] = port
            if status is not None:
                attributes["http.response.status_code"] = status
            if error_type is not None:
                attributes["error.type"] = error_type
            self._duration.record(event.duration, attributes)
            if start.fallback:
                self._fallback.add(1, {"service": event.service})

    def _observe_endpoints(self, options: Any) -> Iterable[Any]:
        for service, counts in list(self._counts.items()):
            values = (counts.healthy, counts.ejected, counts.unhealthy)
            for state, value in zip(_STATES, values, strict=True):
                yield metrics.Observation(value, {"service": service, "state": state})
