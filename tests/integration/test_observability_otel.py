"""OpenTelemetry over a LocalCluster, with the real SDK and its in-memory exporters.

Spans: one CLIENT span per attempt, children of the caller's span, the Service as server and the
Pod as peer, a retry as an errored attempt plus a resend; the Pod receives the attempt's own
``traceparent``. Metrics: ``http.client.request.duration`` with the semantic-convention buckets
and the balancer's own. The zero-code case (global providers, ``HTTPXClientInstrumentor``, no
headlesslb setting) runs in a child process, since global providers can be set once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from headlesslb.telemetry.otel import DURATION_BUCKETS, OpenTelemetryObserver
from headlesslb.testing import LocalCluster

from .helpers import make_client

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.observer = OpenTelemetryObserver(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def attempts(self) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans.get_finished_spans()
            if s.instrumentation_scope is not None and s.instrumentation_scope.name == "headlesslb"
        ]

    def metrics(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_a_retry_is_an_errored_attempt_plus_a_resend_and_pods_get_traceparent(
    cluster: LocalCluster, otel: Telemetry
) -> None:
    tracer = otel.tracer_provider.get_tracer("test")
    host = cluster.fqdn("web-hl").rstrip(".")
    dead = cluster.pod("web-0")
    cluster.kill("web-0")
    responses = []
    async with make_client(cluster, observers=[otel.observer]) as client:
        for _ in range(3):  # round-robin: one of three requests meets web-0 first
            with tracer.start_as_current_span("request"):
                responses.append(await client.get("/items/1"))
    retried = [r for r in responses if len(r.extensions["headlesslb"]["attempts"]) == 2]
    assert len(retried) == 1 and all(r.status_code == 200 for r in responses)
    parents = {s.name: s for s in otel.spans.get_finished_spans() if s.name == "request"}
    assert parents
    attempts = otel.attempts()
    assert len(attempts) == 4  # three requests, one of them sent twice
    for span in attempts:
        assert span.name == "GET" and span.kind is SpanKind.CLIENT
        assert span.attributes is not None and span.parent is not None
        assert span.attributes["server.address"] == host  # the Service, as the URL names it
        assert span.attributes["url.full"] == f"http://{host}/items/1"
        assert span.attributes["http.request.method"] == "GET"
    failed = [s for s in attempts if s.status.status_code is StatusCode.ERROR]
    (first,) = failed
    assert first.attributes is not None
    assert first.attributes["error.type"] == "ConnectError"
    assert first.attributes["network.peer.address"] == dead.ip
    assert first.attributes["network.peer.port"] == dead.port
    assert "http.request.resend_count" not in first.attributes
    (resend,) = [s for s in attempts if "http.request.resend_count" in (s.attributes or {})]
    assert resend.attributes is not None
    assert resend.attributes["http.request.resend_count"] == 1
    assert resend.attributes["http.response.status_code"] == 200
    assert resend.parent == first.parent  # siblings under the caller's span
    served = retried[0].json()
    assert resend.attributes["headlesslb.pod.hostname"] == served["pod"]
    assert resend.attributes["network.peer.address"] == cluster.pod(served["pod"]).ip
    # The Pod got this attempt's own trace context: its server span would be the resend's child.
    assert served["traceparent"] == traceparent(resend)
    for response in responses:
        assert response.json()["traceparent"] is not None

    metrics = otel.metrics()
    (duration,) = [
        p for p in metrics["http.client.request.duration"] if p.attributes.get("error.type")
    ]
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert duration.attributes["error.type"] == "ConnectError"
    ok = [p for p in metrics["http.client.request.duration"] if not p.attributes.get("error.type")]
    assert sum(p.count for p in ok) == 3
    assert ok[0].attributes["http.response.status_code"] == 200
    assert ok[0].attributes["server.address"] == host
    assert sum(p.value for p in metrics["headlesslb.ejections"]) == 1
    assert sum(p.value for p in metrics["headlesslb.retries"]) == 1
    states = {p.attributes["state"]: p.value for p in metrics["headlesslb.endpoints"]}
    assert states == {"healthy": 2, "ejected": 1, "unhealthy": 0}
    (rounds,) = metrics["headlesslb.dns.round.duration"]
    assert rounds.count >= 1 and rounds.attributes["outcome"] == "ok"


async def test_fallback_attempts_name_the_fallback_as_peer(
    cluster: LocalCluster, otel: Telemetry
) -> None:
    lb = cluster.service("web-lb")
    cluster.delete_service("web-hl")
    async with make_client(cluster, fallback="web-lb", observers=[otel.observer]) as client:
        response = await client.get("/")
    assert response.extensions["headlesslb"]["fallback"] is True
    (span,) = otel.attempts()
    assert span.attributes is not None
    assert span.attributes["headlesslb.fallback"] is True
    assert span.attributes["network.peer.port"] == lb.port
    assert response.json()["traceparent"] == traceparent(span)
    (requests,) = otel.metrics()["headlesslb.fallback.requests"]
    assert requests.value == 1


ZERO_CODE = textwrap.dedent(
    """
    import json, sys
    import httpx
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # What opentelemetry-instrument / the OTel Operator do before the application starts.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()

    import anyio
    import headlesslb.sync
    from headlesslb import HeadlessClient

    nameserver, namespace, plain_url = sys.argv[1:4]
    where = dict(port="http", nameservers=[nameserver], namespace=namespace)
    echoed = []

    async def main():
        async with HeadlessClient("web-hl", **where) as client:
            for _ in range(2):
                echoed.append((await client.get("/a")).json()["traceparent"])
        async with httpx.AsyncClient() as plain:  # not balanced: httpx's own span
            await plain.get(plain_url)

    anyio.run(main)
    with headlesslb.sync.HeadlessClient("web-hl", **where) as client:
        echoed.append(client.get("/b").json()["traceparent"])
    spans = [
        {
            "scope": s.instrumentation_scope.name,
            "name": s.name,
            "kind": s.kind.name,
            "peer": (s.attributes or {}).get("network.peer.address"),
            "traceparent": "00-%032x-%016x-%02x"
            % (s.context.trace_id, s.context.span_id, s.context.trace_flags),
        }
        for s in exporter.get_finished_spans()
    ]
    print(json.dumps({"spans": spans, "echoed": echoed}))
    """
)


def test_zero_code_instrumentation_gives_one_span_per_attempt_and_no_duplicates(
    cluster: LocalCluster,
) -> None:
    plain_url = cluster.url("web-2", "/plain")
    done = subprocess.run(
        [sys.executable, "-c", ZERO_CODE, cluster.nameserver, cluster.namespace, plain_url],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    spans = result["spans"]
    ours = [s for s in spans if s["scope"] == "headlesslb"]
    httpx_spans = [s for s in spans if s["scope"] != "headlesslb"]
    assert len(ours) == 3 and all(s["kind"] == "CLIENT" and s["peer"] for s in ours)
    # httpx's instrumentation saw only the unbalanced request: no second span per attempt.
    assert len(httpx_spans) == 1, spans
    assert sorted(result["echoed"]) == sorted(s["traceparent"] for s in ours)
