"""Observability: the demo's Pod kill seen through logs, Prometheus and OpenTelemetry spans.

Run:  .venv/bin/python examples/observability.py   (after `make test` made .venv: it needs the
``prometheus``, ``opentelemetry`` and SDK packages the test extra installs)

The same local cluster and client settings as ``headlesslb demo`` (StatefulSet ``web`` ×3,
least-request, 3 s ejections); steady traffic, then web-1's server is killed. It prints the
headlesslb log lines, the Prometheus ejection counter before and after, and the spans of the
request that met the dead Pod. In a real cluster, drop the LocalCluster arguments, export spans
with an OTLP exporter and serve the registry with ``prometheus_client.start_http_server``.
"""

from __future__ import annotations

import logging

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from headlesslb import HeadlessClient, OutlierPolicy
from headlesslb.telemetry.otel import OpenTelemetryObserver
from headlesslb.telemetry.prometheus import PrometheusMetrics
from headlesslb.testing import LocalCluster


def ejections(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith("headlesslb_ejections_total")]


async def main() -> None:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("headlesslb").setLevel(logging.INFO)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    registry = CollectorRegistry()
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        async with HeadlessClient(
            "web-hl",
            port="http",
            fallback="web-lb",
            picker="least_request",
            outlier=OutlierPolicy(base_ejection=3.0),
            nameservers=[cluster.nameserver],
            namespace=cluster.namespace,
            observers=[
                PrometheusMetrics(registry),
                OpenTelemetryObserver(tracer_provider=tracer_provider),
            ],
        ) as client:
            for _ in range(30):
                await client.get("/demo")
            print("\n--- before the kill:", ejections(registry) or "no ejection yet")
            print("--- killing web-1")
            cluster.kill("web-1")
            retried = None
            tracer = tracer_provider.get_tracer("example")
            for _ in range(60):
                # The application's own span (a server span, usually): attempts are its children.
                with tracer.start_as_current_span("GET /demo"):
                    response = await client.get("/demo")
                if len(response.extensions["headlesslb"]["attempts"]) > 1:
                    retried = response
            print("--- after the kill:", ejections(registry))
    if retried is not None:
        print("--- the attempt spans of the request that met web-1:")
        traceparent = retried.json()["traceparent"]
        trace_id = int(traceparent.split("-")[1], 16)
        for span in spans.get_finished_spans():
            ours = span.instrumentation_scope and span.instrumentation_scope.name == "headlesslb"
            if ours and span.context is not None and span.context.trace_id == trace_id:
                attributes = dict(span.attributes or {})
                parent = f"{span.parent.span_id:016x}" if span.parent else None
                print(
                    f"  {span.name} status={span.status.status_code.name}"
                    f" span_id={span.context.span_id:016x} parent={parent} {attributes}"
                )
        print(f"--- the traceparent the serving Pod received: {traceparent}")
    tracer_provider.shutdown()


if __name__ == "__main__":
    anyio.run(main)
