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
``headlesslb.dns.round.duration``, ``headlesslb.dns.errors`` and
``headlesslb.load_reports.rejected`` (a Pod's unusable ORCA load reports, once per run of them),
each with a ``service`` attribute.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..core import forksafe
from ..core.endpoint import Endpoint
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
    LoadReportRejected,
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
    "default_observer",
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
_MAX_TARGETS = 1024
"""Cached attribute sets kept (URLs are per request: a cache past this size starts over)."""


def api_available() -> bool:
    """Whether ``opentelemetry-api`` can be imported."""
    return _API


_default: OpenTelemetryObserver | None = None
_default_lock = forksafe.lock(sys.modules[__name__], "_default_lock")


def default_observer() -> OpenTelemetryObserver:
    """The process's one observer on the global providers, which every client without an
    observer of its own subscribes (zero-code instrumentation).

    One, not one per client: clients sharing a runtime hand each shared event (an ejection, a
    membership change) to each distinct observer once, so K clients of one Service count one
    ejection once, and the endpoints-by-state gauge has one callback per process, not K
    callbacks reporting the same series."""
    global _default
    with _default_lock:
        if _default is None:
            _default = OpenTelemetryObserver()
        return _default


def _configured(provider: object, proxies: tuple[type, ...]) -> bool:
    # The API's own providers (its proxy and no-op ones) live in the API's modules: anything
    # else is an SDK or a vendor's provider, i.e. telemetry someone will export.
    return not isinstance(provider, proxies) and not type(provider).__module__.startswith(
        "opentelemetry.metrics"
    )


@dataclass(frozen=True, slots=True)
class _Target:
    """An attempt's span name and attributes, and its duration's attributes, for one URL,
    method and Pod (the parts known when it starts)."""

    name: str
    span_attributes: dict[str, Any]
    metric_key: tuple[str, str, int]
    """``(method, server.address, server.port)``: with status and error, an attribute set."""
    metric_attributes: dict[str, Any]

    @classmethod
    def of(cls, url: str, method: str, endpoint: Endpoint | None) -> _Target:
        """Parse ``url`` (credentials redacted from ``url.full``) and name ``endpoint``."""
        parts = urlsplit(url)
        full = url
        if "@" in parts.netloc:
            host = parts.netloc.rpartition("@")[2]
            full = parts._replace(netloc=f"REDACTED:REDACTED@{host}").geturl()
        address = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        name = method if method in _METHODS else "_OTHER"
        server: dict[str, Any] = {
            "http.request.method": name,
            "server.address": address,
            "server.port": port,
        }
        span = {**server, "url.full": full}
        if name == "_OTHER":
            span["http.request.method_original"] = method
        if endpoint is not None:
            span["network.peer.address"] = endpoint.ip
            span["network.peer.port"] = endpoint.port
            if endpoint.hostname is not None:  # its ordinal, if any, is in its name
                span["headlesslb.pod.hostname"] = endpoint.hostname
        else:
            span["headlesslb.fallback"] = True
        return cls(name, span, (name, address, port), server)


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
        # Proxies until an SDK is set: they start delegating to it by themselves.
        self._tracer = trace.get_tracer(
            METER_NAME, __version__, tracer_provider=tracer_provider, schema_url=_SCHEMA
        )
        self._next_look = time.monotonic() + RECHECK
        self._look()
        meter = metrics.get_meter(
            METER_NAME, __version__, meter_provider=meter_provider, schema_url=_SCHEMA
        )
        self._spans: dict[AttemptStarted, tuple[Any, _Target]] = {}
        self._targets: dict[tuple[Any, ...], _Target] = {}
        self._durations: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._services: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, EndpointCounts] = {}
        self._lock = forksafe.lock(self)
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
        self._rejected_reports = meter.create_counter(
            "headlesslb.load_reports.rejected",
            unit="{report}",
            description="Pods' load reports dropped as unusable, once per run of bad reports.",
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
        if self._tracing_on and self._metrics_on:
            return True
        # Asking the API for its providers reads os.environ (about 1 µs a request): while either
        # SDK is missing, look again at most every RECHECK seconds, so one configured later is
        # seen that soon. Asked once per request: events use the flags as they are.
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + RECHECK
            self._look()
        return self._tracing_on or self._metrics_on

    def _look(self) -> None:
        """Whether an SDK is configured now; once it is, it stays (the API sets it once)."""
        proxies = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        if not self._tracing_on and _configured(trace.get_tracer_provider(), proxies):
            self._tracing_on = True
            # The global SDK's own tracer: the proxy would cost two calls more per span.
            from .. import __version__

            self._tracer = trace.get_tracer(METER_NAME, __version__, schema_url=_SCHEMA)
        metered = _configured(metrics.get_meter_provider(), (metrics.NoOpMeterProvider,))
        self._metrics_on = self._metrics_on or metered

    # -- events ----------------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Record ``event`` as span, measurement or both."""
        kind = type(event)
        if kind is AttemptStarted:
            assert isinstance(event, AttemptStarted)
            self._start(event)
        elif kind is AttemptFinished:
            assert isinstance(event, AttemptFinished)
            self._finish(event)
        elif kind is RetryScheduled:
            self._retries.add(1, self._by_service(event.service))
        elif kind is RetryBudgetExhausted:
            self._exhausted.add(1, self._by_service(event.service))
        elif kind is DiscoveryRound:
            assert isinstance(event, DiscoveryRound)
            outcome = "ok" if event.ok else "error"
            self._dns_duration.record(
                event.duration, {"service": event.service, "outcome": outcome}
            )
            if not event.ok:
                self._dns_errors.add(1, self._by_service(event.service))
        elif kind is EndpointEjected:
            assert isinstance(event, EndpointEjected)
            self._ejections.add(1, self._by_service(event.service))
            self._counts[event.service] = event.counts
        elif kind is LoadReportRejected:
            self._rejected_reports.add(1, self._by_service(event.service))
        elif kind in (EndpointsChanged, EndpointReadmitted, HealthChanged):
            assert isinstance(event, EndpointsChanged | EndpointReadmitted | HealthChanged)
            self._counts[event.service] = event.counts

    def _by_service(self, service: str) -> dict[str, Any]:
        attributes = self._services.get(service)
        if attributes is None:
            attributes = self._services[service] = {"service": service}
        return attributes

    def _target(self, event: AttemptStarted) -> _Target:
        """What an attempt's span and measurement say of its request and Pod, built once per
        URL, method and Pod: the SDK copies attribute dicts, so the same one serves each time."""
        endpoint = event.endpoint
        if endpoint is None:
            key: tuple[Any, ...] = (event.url, event.method, None, None, None)
        else:
            key = (event.url, event.method, endpoint.ip, endpoint.port, endpoint.hostname)
        target = self._targets.get(key)
        if target is None:
            target = _Target.of(event.url, event.method, endpoint)
            with self._lock:
                if len(self._targets) >= _MAX_TARGETS:  # URLs are per request: keep it small
                    self._targets.clear()
                self._targets[key] = target
        return target

    def _start(self, event: AttemptStarted) -> None:
        if not self._tracing_on:
            return
        target = self._target(event)
        attributes = target.span_attributes
        if event.resend_count:
            attributes = {**attributes, "http.request.resend_count": event.resend_count}
        span = self._tracer.start_span(target.name, kind=SpanKind.CLIENT, attributes=attributes)
        propagate.inject(event.headers, context=trace.set_span_in_context(span))
        self._spans[event] = (span, target)

    def _finish(self, event: AttemptFinished) -> None:
        start = event.start
        started = self._spans.pop(start, None)
        status, error = event.status, event.error
        error_type = error
        if error_type is None and status is not None and status >= 400:
            error_type = str(status)
        if started is None:
            if not self._metrics_on:
                return
            target = self._target(start)
        else:
            span, target = started
            if start.endpoint is None and event.address is not None:
                ip, _, peer_port = event.address.rpartition(":")
                span.set_attribute("network.peer.address", ip.strip("[]"))
                span.set_attribute("network.peer.port", int(peer_port))
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error_type is not None:
                span.set_attribute("error.type", error_type)
                span.set_status(StatusCode.ERROR, error)
            span.end()
            if not self._metrics_on:
                return
        outcome = (target.metric_key, status, error_type)
        attributes = self._durations.get(outcome)
        if attributes is None:
            attributes = dict(target.metric_attributes)
            if status is not None:
                attributes["http.response.status_code"] = status
            if error_type is not None:
                attributes["error.type"] = error_type
            with self._lock:
                if len(self._durations) >= _MAX_TARGETS:  # error types may be many: bounded
                    self._durations.clear()
                self._durations[outcome] = attributes
        self._duration.record(event.duration, attributes)
        if start.endpoint is None:
            self._fallback.add(1, self._by_service(event.service))

    def _observe_endpoints(self, options: Any) -> Iterable[Any]:
        for service, counts in list(self._counts.items()):
            values = (counts.healthy, counts.ejected, counts.unhealthy)
            for state, value in zip(_STATES, values, strict=True):
                yield metrics.Observation(value, {"service": service, "state": state})
