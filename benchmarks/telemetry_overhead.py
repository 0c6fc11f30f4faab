"""Telemetry overhead: the same client with OpenTelemetry off, installed without an SDK, and
with an SDK exporting to a no-op exporter, side by side against the same LocalCluster.

- ``off``: ``opentelemetry=False`` (logging observer only, attempt events never built);
- ``api, no SDK``: the default with ``opentelemetry-api`` installed and no SDK configured (what
  every user who has the API but no SDK gets): targets ≥ 0.99× ``off``;
- ``SDK, no-op exporter``: a real SDK TracerProvider (BatchSpanProcessor) and MeterProvider
  (a periodic reader) whose exporters drop everything: every attempt makes a span, injects a
  traceparent and records its duration histogram point, as a user gets by default: targets
  ≥ 0.90× ``off``;
- for scale, plain httpx to one Pod, bare and with OpenTelemetry's own httpx instrumentation on
  the same SDK.

Three figures per client, because this 2-core machine is shared and wall-clock rates swing by
±5 % from one second to the next:

- **wall**: requests per second. Rounds alternate the clients, each round in a rotated order so
  no client always runs first or last; the figure is the median of per-round ratios to ``off``,
  with their spread (min–max);
- **CPU**: this process's CPU time per request (all threads: the SDK's export threads too; the
  Pods run in LocalCluster's own process), ratio ``off`` / client per round, median and spread.
  What the client costs; far less noisy than wall time;
- **calls**: Python function calls per request (``sys.setprofile``), measured in a separate pass:
  a count of the work done per request, the same from run to run for sequential requests
  (with 16 concurrent ones it depends on how the event loop batches wake-ups).
  ``calls_ratio`` (``vs`` calls over this client's) is what the ratio would be if every call
  cost the same.

A last table splits telemetry's own work, on one thread with warm caches (best of 7; on the
request path, with caches cold, each call costs about 2-3× more): per attempt with the SDK,
headlesslb's part (event records, both observers, the cached attribute sets, the header merge)
against the calls any instrumentation must make into the SDK (start a span with the
semantic-convention attributes, inject the propagator's headers, end it, record a histogram
point); per request without an SDK, the one check that finds none.

    python benchmarks/telemetry_overhead.py [--rounds 60] [--requests 160]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import anyio
import httpx
from _common import print_table, write_results
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

import headlesslb.sync
from headlesslb import HeadlessClient
from headlesslb.core.endpoint import Endpoint
from headlesslb.core.events import AttemptFinished, AttemptStarted, EventHub
from headlesslb.io.bodies import with_headers
from headlesslb.telemetry.logs import LogObserver
from headlesslb.telemetry.otel import DURATION_BUCKETS, OpenTelemetryObserver
from headlesslb.testing import LocalCluster

OFF, API, SDK = "off", "api, no SDK", "SDK, no-op exporter"
PLAIN = "plain httpx"
PLAIN_OTEL = "plain httpx + OTel httpx instrumentation"
CONFIGS = (OFF, API, SDK)
COUNTED = 320
"""Requests per client whose Python function calls are counted (a multiple of 16)."""


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


class _Sdk:
    """An SDK tracer and meter provider exporting to no-op exporters, and an observer on them."""

    def __init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
        reader = PeriodicExportingMetricReader(_DropMetrics(), export_interval_millis=1000)
        self.meter_provider = MeterProvider(metric_readers=[reader])
        self.observer = OpenTelemetryObserver(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _options(config: str, cluster: LocalCluster, sdk: _Sdk) -> dict[str, Any]:
    where: dict[str, Any] = {
        "port": "http",
        "nameservers": [cluster.nameserver],
        "namespace": cluster.namespace,
    }
    if config == OFF:
        where["opentelemetry"] = False
    elif config == SDK:
        where["observers"] = [sdk.observer]
    return where


class _Counter:
    """Python function calls on this thread while active (``sys.setprofile``)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            self.calls += 1

    def __enter__(self) -> _Counter:
        sys.setprofile(self)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)


class _Samples:
    """Per-round wall rates and CPU per request of each client, and its calls per request."""

    def __init__(self, names: Sequence[str]) -> None:
        self.rps: dict[str, list[float]] = {n: [] for n in names}
        self.cpu: dict[str, list[float]] = {n: [] for n in names}
        self.calls: dict[str, float] = {}

    def add(self, name: str, requests: int, wall: float, cpu: float) -> None:
        self.rps[name].append(requests / wall)
        self.cpu[name].append(cpu / requests)


def _rotated(names: Sequence[str], round_: int) -> list[str]:
    shift = round_ % len(names)
    return [*names[shift:], *names[:shift]]


async def _async_run(client: Any, requests: int, concurrency: int) -> tuple[float, float]:
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            response = await client.get("/bench")
            assert response.status_code == 200

    cpu, wall = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return time.perf_counter() - wall, time.process_time() - cpu


async def _compare_async(
    cluster: LocalCluster, rounds: int, requests: int, concurrency: int
) -> _Samples:
    sdk = _Sdk()
    # Plain clients to one Pod: the reference, and OpenTelemetry's own httpx instrumentation on
    # the same SDK (a span and a histogram point per request, as here per attempt).
    one_pod = cluster.url(cluster.pods("web")[0].name)
    plain_otel = httpx.AsyncClient(base_url=one_pod)
    HTTPXClientInstrumentor.instrument_client(
        plain_otel, tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider
    )
    clients: dict[str, Any] = {
        PLAIN: httpx.AsyncClient(base_url=one_pod),
        **{c: HeadlessClient("web-hl", **_options(c, cluster, sdk)) for c in CONFIGS},
        PLAIN_OTEL: plain_otel,
    }
    samples = _Samples(list(clients))
    n = requests // concurrency * concurrency
    try:
        for client in clients.values():
            await client.__aenter__()
            await _async_run(client, 200, concurrency)  # warm up connections
        for name, client in clients.items():
            with _Counter() as counter:
                await _async_run(client, COUNTED, concurrency)
            samples.calls[name] = counter.calls / COUNTED
        for round_ in range(rounds):
            for name in _rotated(list(clients), round_):
                gc.collect()
                samples.add(name, n, *await _async_run(clients[name], n, concurrency))
    finally:
        for client in clients.values():
            await client.aclose()
        sdk.shutdown()
    return samples


def _compare_sync(cluster: LocalCluster, rounds: int, requests: int) -> _Samples:
    sdk = _Sdk()
    one_pod = cluster.url(cluster.pods("web")[0].name)
    plain_otel = httpx.Client(base_url=one_pod)
    HTTPXClientInstrumentor.instrument_client(
        plain_otel, tracer_provider=sdk.tracer_provider, meter_provider=sdk.meter_provider
    )
    clients: dict[str, Any] = {
        PLAIN: httpx.Client(base_url=one_pod),
        **{
            c: headlesslb.sync.HeadlessClient("web-hl", **_options(c, cluster, sdk))
            for c in CONFIGS
        },
        PLAIN_OTEL: plain_otel,
    }

    def run(client: Any, n: int) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            assert client.get("/bench").status_code == 200
        return time.perf_counter() - wall, time.process_time() - cpu

    samples = _Samples(list(clients))
    try:
        for client in clients.values():
            run(client, 200)
        for name, client in clients.items():
            with _Counter() as counter:
                run(client, COUNTED)
            samples.calls[name] = counter.calls / COUNTED
        for round_ in range(rounds):
            for name in _rotated(list(clients), round_):
                gc.collect()
                samples.add(name, requests, *run(clients[name], requests))
    finally:
        for client in clients.values():
            client.close()
        sdk.shutdown()
    return samples


def _spread(values: list[float]) -> str:
    """The middle half of the per-round ratios (25th–75th percentile)."""
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{q1:.3f}–{q3:.3f}"


def _ratios(
    samples: dict[str, list[float]], name: str, base: str, *, inverse: bool = False
) -> list[float]:
    pairs = zip(samples[name], samples[base], strict=True)
    return [(b / x) if inverse else (x / b) for x, b in pairs]


def _rows(backend: str, concurrency: int, s: _Samples) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name in s.rps:
        # Headlesslb's configurations are compared with "off"; OTel's httpx instrumentation
        # with plain httpx, its own baseline.
        base = PLAIN if name == PLAIN_OTEL else OFF
        wall = _ratios(s.rps, name, base)
        cpu = _ratios(s.cpu, name, base, inverse=True)
        rows.append(
            {
                "backend": backend,
                "concurrency": concurrency,
                "client": name,
                "vs": base,
                "rps": round(statistics.median(s.rps[name]), 1),
                "wall_ratio": round(statistics.median(wall), 3),
                "wall_spread": _spread(wall),
                "cpu_us_per_req": round(statistics.median(s.cpu[name]) * 1e6, 1),
                "cpu_ratio": round(statistics.median(cpu), 3),
                "cpu_spread": _spread(cpu),
                "calls_per_req": round(s.calls[name], 1),
                "extra_calls": round(s.calls[name] - s.calls[base], 1),
                "calls_ratio": round(s.calls[base] / s.calls[name], 3),
            }
        )
    return rows


# -- per-attempt split: headlesslb's part vs the SDK's ------------------------------------------
_URL = "http://web-hl.default.svc.cluster.local/bench"
_HOST = "web-hl.default.svc.cluster.local"
_POD = Endpoint("10.0.0.1", 8080, hostname="web-1")
_HEADERS = [(b"host", _HOST.encode()), (b"accept", b"*/*"), (b"user-agent", b"python-httpx")]


def _ours_with_sdk(sdk: _Sdk) -> Callable[[int], None]:
    """What a Pod attempt does for telemetry: its two events through a client's hub (with the
    log observer every client has), and the observer's headers merged into the request's."""
    hub = EventHub(_HOST)
    hub.subscribe(LogObserver())
    hub.subscribe(sdk.observer)

    def attempts(n: int) -> None:
        for _ in range(n):
            hub.wants_attempts()
            start = AttemptStarted(hub.service, "GET", _URL, _POD, 0, 1.0)
            hub.emit(start)
            with_headers(_HEADERS, tuple(start.headers.items()))
            hub.emit(AttemptFinished(hub.service, start, "10.0.0.1:8080", 0.001, 200))

    return attempts


def _bare_sdk(sdk: _Sdk) -> Callable[[int], None]:
    """The SDK calls any instrumentation makes per request, with the same attributes."""
    tracer = sdk.tracer_provider.get_tracer("bare")
    histogram = sdk.meter_provider.get_meter("bare").create_histogram(
        "http.client.request.duration",
        unit="s",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )

    def attempts(n: int) -> None:
        for _ in range(n):
            span = tracer.start_span(
                "GET",
                kind=SpanKind.CLIENT,
                attributes={
                    "http.request.method": "GET",
                    "server.address": _HOST,
                    "url.full": _URL,
                    "server.port": 80,
                    "network.peer.address": "10.0.0.1",
                    "network.peer.port": 8080,
                    "headlesslb.pod.hostname": "web-1",
                },
            )
            propagate.inject({}, context=trace.set_span_in_context(span))
            span.set_attribute("http.response.status_code", 200)
            span.end()
            histogram.record(
                0.001,
                {
                    "http.request.method": "GET",
                    "server.address": _HOST,
                    "server.port": 80,
                    "http.response.status_code": 200,
                },
            )

    return attempts


def _thread_cpu_us(work: Callable[[int], None], n: int = 5000, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.thread_time()  # this thread: not the span processor's export thread
        work(n)
        best = min(best, (time.thread_time() - start) / n * 1e6)
    return best


def _calls(work: Callable[[int], None], n: int = 200) -> float:
    work(n)  # caches warm, as on the request path
    with _Counter() as counter:
        work(n)
    return counter.calls / n


def _gate(hub: EventHub) -> Callable[[int], None]:
    def requests(n: int) -> None:
        for _ in range(n):
            hub.wants_attempts()

    return requests


def _split() -> list[dict[str, object]]:
    """headlesslb's part and the SDK's, per attempt with the SDK; per request without one."""
    sdk = _Sdk()
    try:
        ours, bare = _ours_with_sdk(sdk), _bare_sdk(sdk)
        total_us, sdk_us = _thread_cpu_us(ours), _thread_cpu_us(bare)
        total_calls, sdk_calls = _calls(ours), _calls(bare)
    finally:
        sdk.shutdown()
    # Without an SDK the only per-request work is the observer's wants_attempts (the global
    # providers are the API's proxies: this script never sets them).
    plain, observed = EventHub(_HOST), EventHub(_HOST)
    plain.subscribe(LogObserver())
    observed.subscribe(LogObserver())
    observed.subscribe(OpenTelemetryObserver())
    gate_us = _thread_cpu_us(_gate(observed), 100_000) - _thread_cpu_us(_gate(plain), 100_000)
    gate_calls = _calls(_gate(observed)) - _calls(_gate(plain))
    return [
        {
            "config": SDK,
            "per": "attempt",
            "total_us": round(total_us, 2),
            "sdk_us": round(sdk_us, 2),
            "headlesslb_us": round(total_us - sdk_us, 2),
            "total_calls": round(total_calls, 1),
            "sdk_calls": round(sdk_calls, 1),
            "headlesslb_calls": round(total_calls - sdk_calls, 1),
        },
        {
            "config": API,
            "per": "request",
            "total_us": round(gate_us, 2),
            "sdk_us": 0.0,
            "headlesslb_us": round(gate_us, 2),
            "total_calls": round(gate_calls, 1),
            "sdk_calls": 0.0,
            "headlesslb_calls": round(gate_calls, 1),
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--requests", type=int, default=160, help="per client and round")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        for concurrency in (1, 16):
            samples = anyio.run(_compare_async, cluster, args.rounds, args.requests, concurrency)
            rows += _rows("asyncio", concurrency, samples)
        rows += _rows("sync", 1, _compare_sync(cluster, args.rounds, args.requests))
    split = _split()
    print_table(
        rows,
        title=(
            "telemetry overhead (3 Pods; rps = median; wall_ratio = median per-round rate ratio"
            " to `vs`; cpu_ratio = `vs` CPU/request over this client's, per round; spread ="
            " middle half of the per-round ratios; calls_ratio = `vs` calls/request over this"
            " client's)"
        ),
    )
    print_table(
        split,
        title=(
            "telemetry's own work, one thread, caches warm (best of 7): CPU µs and Python calls,"
            " headlesslb's part vs the OpenTelemetry SDK's"
        ),
    )
    write_results(
        "telemetry_overhead",
        rows,
        target={
            "api, no SDK: wall_ratio and cpu_ratio": ">= 0.99",
            "SDK, no-op exporter: wall_ratio and cpu_ratio": ">= 0.90",
        },
        params=vars(args),
        per_attempt_split=split,
    )


if __name__ == "__main__":
    main()
