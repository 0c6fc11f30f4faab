"""Telemetry overhead: the same client with OpenTelemetry off, installed without an SDK, and
with an SDK exporting to a no-op exporter, side by side against the same LocalCluster.

- ``off``: ``opentelemetry=False`` (logging observer only, attempt events never built);
- ``api, no SDK``: the default with ``opentelemetry-api`` installed and no SDK configured (what
  every user who has the API but no SDK gets): targets ≥ 0.99× ``off``;
- ``SDK, no-op exporter``: a real SDK TracerProvider (BatchSpanProcessor) and MeterProvider
  (a periodic reader) whose exporters drop everything: every attempt makes a span, injects a
  traceparent and records metrics: targets ≥ 0.90× ``off``.

Rounds alternate the three clients so machine noise hits all equally; the figure is the median
of per-round ratios. Async (asyncio, 1 and 16 concurrent) and sync (1 thread).

    python benchmarks/telemetry_overhead.py [--rounds 9] [--requests 1500]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import httpx
from _common import print_table, write_results
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import headlesslb.sync
from headlesslb import HeadlessClient
from headlesslb.telemetry.otel import OpenTelemetryObserver
from headlesslb.testing import LocalCluster

CONFIGS = ("off", "api, no SDK", "SDK, no-op exporter")
PLAIN = "plain httpx"
PLAIN_OTEL = "plain httpx + OTel httpx instrumentation"


class _DropSpans(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _DropMetrics(MetricExporter):
    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


observer_providers: list[Any] = []
"""The SDK providers of the latest no-op-exporter observer (the httpx reference uses them)."""


def _sdk_observer() -> tuple[OpenTelemetryObserver, Callable[[], None]]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
    reader = PeriodicExportingMetricReader(_DropMetrics(), export_interval_millis=1000)
    meter_provider = MeterProvider(metric_readers=[reader])
    observer_providers[:] = [tracer_provider, meter_provider]

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    observer = OpenTelemetryObserver(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return observer, shutdown


def _options(config: str, cluster: LocalCluster, observer: Any) -> dict[str, Any]:
    where: dict[str, Any] = {
        "port": "http",
        "nameservers": [cluster.nameserver],
        "namespace": cluster.namespace,
    }
    if config == "off":
        where["opentelemetry"] = False
    elif config == "SDK, no-op exporter":
        where["observers"] = [observer]
    return where


async def _rate(client: Any, requests: int, concurrency: int) -> float:
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            response = await client.get("/bench")
            assert response.status_code == 200

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return per_worker * concurrency / (time.perf_counter() - start)


async def _compare_async(
    cluster: LocalCluster, rounds: int, requests: int, concurrency: int
) -> dict[str, list[float]]:
    observer, shutdown = _sdk_observer()
    clients: dict[str, Any] = {
        c: HeadlessClient("web-hl", **_options(c, cluster, observer)) for c in CONFIGS
    }
    # For scale: what OpenTelemetry's own httpx instrumentation costs a plain client to one Pod
    # with the same SDK (a span and a histogram point per request, as here per attempt).
    one_pod = cluster.url(cluster.pods("web")[0].name)
    clients[PLAIN] = httpx.AsyncClient(base_url=one_pod)
    clients[PLAIN_OTEL] = httpx.AsyncClient(base_url=one_pod)
    HTTPXClientInstrumentor.instrument_client(
        clients[PLAIN_OTEL],
        tracer_provider=observer_providers[0],
        meter_provider=observer_providers[1],
    )
    rates: dict[str, list[float]] = {c: [] for c in clients}
    try:
        for client in clients.values():
            await client.__aenter__()
            await _rate(client, 200, concurrency)  # warm up connections
        for _ in range(rounds):
            for config, client in clients.items():
                rates[config].append(await _rate(client, requests, concurrency))
    finally:
        for client in clients.values():
            await client.aclose()
        shutdown()
    return rates


def _compare_sync(cluster: LocalCluster, rounds: int, requests: int) -> dict[str, list[float]]:
    observer, shutdown = _sdk_observer()
    clients = [
        headlesslb.sync.HeadlessClient("web-hl", **_options(c, cluster, observer))
        for c in CONFIGS
    ]

    def rate(client: headlesslb.sync.HeadlessClient, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            assert client.get("/bench").status_code == 200
        return n / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {c: [] for c in CONFIGS}
    try:
        for client in clients:
            rate(client, 200)
        for _ in range(rounds):
            for config, client in zip(CONFIGS, clients, strict=True):
                rates[config].append(rate(client, requests))
    finally:
        for client in clients:
            client.close()
        shutdown()
    return rates


def _row(backend: str, concurrency: int, rates: dict[str, list[float]]) -> dict[str, object]:
    off = rates["off"]
    row: dict[str, object] = {
        "backend": backend,
        "concurrency": concurrency,
        "off_rps": round(statistics.median(off), 1),
    }
    for config, key in (("api, no SDK", "api_no_sdk"), ("SDK, no-op exporter", "sdk_noop")):
        ratios = [r / o for r, o in zip(rates[config], off, strict=True)]
        row[f"{key}_rps"] = round(statistics.median(rates[config]), 1)
        row[f"{key}_ratio"] = round(statistics.median(ratios), 3)
    if PLAIN in rates:
        ratios = [r / o for r, o in zip(rates[PLAIN_OTEL], rates[PLAIN], strict=True)]
        row["httpx_otel_ratio"] = round(statistics.median(ratios), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    rows = []
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        for concurrency in (1, 16):
            rates = anyio.run(_compare_async, cluster, args.rounds, args.requests, concurrency)
            rows.append(_row("asyncio", concurrency, rates))
        rows.append(_row("sync", 1, _compare_sync(cluster, args.rounds, args.requests)))
    print_table(
        rows, title="telemetry overhead (3 Pods, req/s medians, ratio = median per-round ratio)"
    )
    write_results(
        "telemetry_overhead",
        rows,
        target={"api_no_sdk_ratio": ">= 0.99", "sdk_noop_ratio": ">= 0.90"},
        params=vars(args),
    )


if __name__ == "__main__":
    main()
