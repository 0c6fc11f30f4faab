"""The OpenTelemetry observer fed synthetic attempt events: no sockets, the real SDK in memory.

It caches one attribute set per URL, method and Pod (the SDK copies what it is given): these
pin that a cached set never carries one attempt's parts (resend count, status, error) into
another's, and that with no SDK it asks the API for providers at most once per RECHECK.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from headlesslb.core.endpoint import Endpoint
from headlesslb.core.events import (
    AttemptFinished,
    AttemptStarted,
    LoadReportRejected,
    RetryScheduled,
)
from headlesslb.telemetry import otel
from headlesslb.telemetry.otel import OpenTelemetryObserver

SERVICE = "web-hl.default.svc.cluster.local"
URL = f"http://{SERVICE}/items/1"
WEB_0 = Endpoint("10.0.0.1", 8080, hostname="web-0", ordinal=0)
WEB_1 = Endpoint("10.0.0.2", 8080)


class Sdk:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.observer = OpenTelemetryObserver(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def attempt(
        self,
        endpoint: Endpoint | None,
        *,
        url: str = URL,
        method: str = "GET",
        resend: int = 0,
        status: int | None = 200,
        error: str | None = None,
        address: str | None = None,
    ) -> dict[str, str]:
        """One attempt through the observer; the headers it asked to send."""
        start = AttemptStarted(SERVICE, method, url, endpoint, resend, 1.0)
        self.observer(start)
        if address is None and endpoint is not None:
            address = endpoint.authority
        self.observer(AttemptFinished(SERVICE, start, address, 0.002, status, error))
        return start.headers

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    made = Sdk()
    yield made
    made.tracer_provider.shutdown()
    made.meter_provider.shutdown()


def test_cached_attributes_never_carry_one_attempts_parts_into_another(sdk: Sdk) -> None:
    assert sdk.observer.wants_attempts()
    sdk.attempt(WEB_0, status=None, error="ConnectError")
    sdk.attempt(WEB_0, resend=1, status=503)
    headers = sdk.attempt(WEB_0)
    sdk.attempt(WEB_1)
    failed, resent, ok, other = sdk.finished()
    for span in (failed, resent, ok, other):
        assert span.name == "GET" and span.attributes is not None
        assert span.attributes["url.full"] == URL
        assert span.attributes["server.address"] == SERVICE
        assert span.attributes["server.port"] == 80
    assert failed.attributes is not None and ok.attributes is not None
    assert failed.attributes["error.type"] == "ConnectError"
    assert failed.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in failed.attributes
    assert resent.attributes is not None
    assert resent.attributes["http.request.resend_count"] == 1
    assert resent.attributes["error.type"] == "503"
    # The same URL, method and Pod again: nothing of the two attempts before it.
    assert dict(ok.attributes) == {
        "http.request.method": "GET",
        "server.address": SERVICE,
        "server.port": 80,
        "url.full": URL,
        "network.peer.address": "10.0.0.1",
        "network.peer.port": 8080,
        "headlesslb.pod.hostname": "web-0",
        "http.response.status_code": 200,
    }
    assert ok.status.status_code is StatusCode.UNSET
    context = ok.get_span_context()
    assert context is not None
    ids = f"{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert headers["traceparent"] == f"00-{ids}"
    assert other.attributes is not None
    assert other.attributes["network.peer.address"] == "10.0.0.2"
    assert "headlesslb.pod.hostname" not in other.attributes

    points = {
        (p.attributes.get("http.response.status_code"), p.attributes.get("error.type")): p
        for p in sdk.points("http.client.request.duration")
    }
    assert {k: p.count for k, p in points.items()} == {
        (None, "ConnectError"): 1,
        (503, "503"): 1,
        (200, None): 2,
    }
    for point in points.values():
        assert point.attributes["server.address"] == SERVICE
        assert point.attributes["http.request.method"] == "GET"


def test_fallback_other_methods_and_credentials(sdk: Sdk) -> None:
    secret = f"https://user:pw@{SERVICE}/x"
    sdk.attempt(None, url=secret, method="PURGE", address="[fd00::1]:8443")
    sdk.attempt(None, url=secret, method="PURGE", address="10.9.9.9:8443")
    first, second = sdk.finished()
    for span in (first, second):
        assert span.name == "_OTHER" and span.attributes is not None
        assert span.attributes["http.request.method_original"] == "PURGE"
        assert span.attributes["url.full"] == f"https://REDACTED:REDACTED@{SERVICE}/x"
        assert span.attributes["server.port"] == 443
        assert span.attributes["headlesslb.fallback"] is True
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["network.peer.address"] == "fd00::1"
    assert second.attributes["network.peer.address"] == "10.9.9.9"
    (requests,) = sdk.points("headlesslb.fallback.requests")
    assert requests.value == 2 and requests.attributes == {"service": SERVICE}
    sdk.observer(RetryScheduled(SERVICE, "GET", 1, "10.0.0.1:8080", "503", 0.0))
    (retries,) = sdk.points("headlesslb.retries")
    assert retries.value == 1 and retries.attributes == {"service": SERVICE}


@pytest.fixture
def no_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's own providers, as in a process no SDK was configured in, whatever this one has
    (run under ``opentelemetry-instrument``, it has one)."""
    tracer_provider = trace.ProxyTracerProvider()
    meter_provider = metrics.NoOpMeterProvider()
    monkeypatch.setattr(otel.trace, "get_tracer_provider", lambda: tracer_provider)
    monkeypatch.setattr(otel.metrics, "get_meter_provider", lambda: meter_provider)


@pytest.mark.usefixtures("no_sdk")
def test_without_an_sdk_it_wants_no_attempts_and_asks_the_api_once_per_recheck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    observer = OpenTelemetryObserver()
    asked = 0
    real = trace.get_tracer_provider

    def counting() -> Any:
        nonlocal asked
        asked += 1
        return real()

    monkeypatch.setattr(otel.trace, "get_tracer_provider", counting)
    now = [1000.0]
    monkeypatch.setattr(otel.time, "monotonic", lambda: now[0])
    observer._next_look = 0.0  # due at once
    assert not any(observer.wants_attempts() for _ in range(1000))
    assert asked == 1
    now[0] += otel.RECHECK
    assert not observer.wants_attempts()
    assert asked == 2


@pytest.mark.usefixtures("no_sdk")
def test_a_global_sdk_configured_later_is_seen_at_the_next_look_and_traces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    observer = OpenTelemetryObserver()
    now = [1000.0]
    monkeypatch.setattr(otel.time, "monotonic", lambda: now[0])
    observer._next_look = 0.0
    assert not observer.wants_attempts()
    # What opentelemetry-instrument does, without touching this process's real global provider.
    sdk = Sdk()
    monkeypatch.setattr(otel.trace, "get_tracer_provider", lambda: sdk.tracer_provider)
    assert not observer.wants_attempts()  # not looked again yet
    now[0] += otel.RECHECK
    assert observer.wants_attempts()
    start = AttemptStarted(SERVICE, "GET", URL, WEB_0, 0, 1.0)
    observer(start)
    observer(AttemptFinished(SERVICE, start, WEB_0.authority, 0.002, 200))
    (span,) = sdk.finished()
    assert span.name == "GET" and "traceparent" in start.headers
    sdk.tracer_provider.shutdown()
    sdk.meter_provider.shutdown()


def test_rejected_load_reports_are_counted(sdk: Sdk) -> None:
    sdk.observer(LoadReportRejected(SERVICE, WEB_0, "not a finite number"))
    sdk.observer(LoadReportRejected(SERVICE, WEB_1, "too long"))
    (point,) = sdk.points("headlesslb.load_reports.rejected")
    assert point.value == 2 and dict(point.attributes) == {"service": SERVICE}
