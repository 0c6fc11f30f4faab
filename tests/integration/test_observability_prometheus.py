"""Prometheus metrics read through a real prometheus-client registry's text exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headlesslb.core.endpoint import Endpoint
from headlesslb.core.events import (
    EndpointCounts,
    EndpointEjected,
    EndpointsChanged,
    LoadReported,
    LoadReportRejected,
)
from headlesslb.core.orca import parse_load_report
from headlesslb.errors import ConfigurationError
from headlesslb.telemetry.otel import DURATION_BUCKETS
from headlesslb.telemetry.prometheus import MAX_LOAD_METRICS, OTHER, PrometheusMetrics
from headlesslb.testing import LocalCluster

from .helpers import make_client, served_by

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]


def samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the text exposition, by sample name."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matching = [v for s, v in found.get(name, []) if all(s.get(k) == w for k, w in labels.items())]
    assert matching, (name, labels, found.get(name))
    return sum(matching)


async def test_a_pod_kill_counts_one_ejection_and_one_retry(cluster: LocalCluster) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    service = cluster.fqdn("web-hl").rstrip(".")
    async with make_client(cluster, observers=[metrics]) as client:
        await served_by(client, 6)
        before = samples(registry)
        assert "headlesslb_ejections_total" not in before
        cluster.kill("web-1")
        await served_by(client, 30)
    after = samples(registry)
    assert value(after, "headlesslb_ejections_total", service=service, endpoint="web-1") == 1
    assert value(after, "headlesslb_retries_total", service=service) == 1
    assert value(after, "headlesslb_endpoints", service=service, state="ejected") == 1
    assert value(after, "headlesslb_endpoints", service=service, state="healthy") == 2
    refused = value(after, "headlesslb_endpoint_attempts_total", endpoint="web-1", result="refused")
    assert refused == 1
    assert value(after, "headlesslb_endpoint_changes_total", change="joined") == 3
    # One observation per attempt: 36 requests, one of them sent twice.
    attempts = "headlesslb_http_client_request_duration_seconds_count"
    assert value(after, attempts, service=service) == 37
    ok = value(after, attempts, status_code="200")
    assert ok == 36
    bounds = sorted(
        float(labels["le"])
        for labels, _ in after["headlesslb_http_client_request_duration_seconds_bucket"]
        if labels["status_code"] == "200"
    )
    assert tuple(bounds[:-1]) == DURATION_BUCKETS and bounds[-1] == float("inf")
    assert value(after, "headlesslb_dns_round_duration_seconds_count", service=service) >= 1


def test_per_endpoint_series_are_capped() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry, max_endpoints=10)
    counts = EndpointCounts(healthy=99, ejected=1, unhealthy=0, panic=False)
    for i in range(100):  # a Deployment's Pods: no hostnames, coming and going
        pod = Endpoint(f"10.1.{i // 250}.{i % 250 + 1}", 8080)
        metrics(EndpointEjected("app-hl.default.svc.cluster.local", pod, "refused", 10, 1, counts))
    found = samples(registry)
    endpoints = {labels["endpoint"] for labels, _ in found["headlesslb_ejections_total"]}
    assert len(endpoints) == 11 and OTHER in endpoints and "10.1.0.1:8080" in endpoints
    assert value(found, "headlesslb_ejections_total", endpoint=OTHER) == 90
    assert value(found, "headlesslb_ejections_total") == 100


def test_rejected_load_reports_are_counted_per_pod() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    service = "llm-hl.default.svc.cluster.local"
    for _ in range(2):
        metrics(LoadReportRejected(service, Endpoint("10.0.0.1", 80, "llm-0", 0), "NaN"))
    metrics(LoadReportRejected(service, Endpoint("10.0.0.2", 80, "llm-1", 1), "too long"))
    found = samples(registry)
    assert value(found, "headlesslb_load_reports_rejected_total", endpoint="llm-0") == 2
    assert value(found, "headlesslb_load_reports_rejected_total") == 3


def test_each_pods_latest_load_report_is_a_gauge_until_it_leaves() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    service = "llm-hl.default.svc.cluster.local"
    llm0, llm1 = Endpoint("10.0.0.1", 80, "llm-0", 0), Endpoint("10.0.0.2", 80, "llm-1", 1)
    vllm = "TEXT application_utilization=0.4, rps_fractional=12, named_metrics.{}={}"
    metrics(LoadReported(service, llm0, parse_load_report(vllm.format("waiting", 3), 0, 0)))
    metrics(LoadReported(service, llm0, parse_load_report(vllm.format("waiting", 5), 1, 0)))
    metrics(LoadReported(service, llm1, parse_load_report("TEXT cpu_utilization=0.9", 1, 1)))
    found = samples(registry)
    assert value(found, "headlesslb_endpoint_load_utilization", endpoint="llm-0") == 0.4
    assert value(found, "headlesslb_endpoint_load_utilization", endpoint="llm-1") == 0.9
    assert value(found, "headlesslb_endpoint_load_qps", endpoint="llm-0") == 12
    # The latest report, not a sum of them.
    assert value(found, "headlesslb_endpoint_load_metric", endpoint="llm-0", metric="waiting") == 5
    counts = EndpointCounts(1, 0, 0, False)
    metrics(EndpointsChanged(service, (), (llm0,), counts))
    found = samples(registry)
    assert [s["endpoint"] for s, _ in found["headlesslb_endpoint_load_utilization"]] == ["llm-1"]
    assert "headlesslb_endpoint_load_metric" not in found


def test_named_load_metrics_are_capped_per_service() -> None:
    # Pods name their metrics: one inventing a name per report cannot grow the series.
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    service = "llm-hl.default.svc.cluster.local"
    pod = Endpoint("10.0.0.1", 80, "llm-0", 0)
    for n in range(MAX_LOAD_METRICS + 5):
        metrics(LoadReported(service, pod, parse_load_report(f"TEXT named_metrics.m{n}=1", n, 0)))
        samples(registry)  # each scrape sees that report's name
    names = {s["metric"] for s, _ in samples(registry).get("headlesslb_endpoint_load_metric", [])}
    assert names == set()  # the last report's name came after the cap
    metrics(LoadReported(service, pod, parse_load_report("TEXT named_metrics.m0=2", 99, 0)))
    found = samples(registry)
    assert value(found, "headlesslb_endpoint_load_metric", metric="m0") == 2


def test_every_name_is_prefixed() -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    names = [family.name for family in registry.collect()]
    assert "headlesslb_http_client_request_duration_seconds" in names
    assert [n for n in names if not n.startswith("headlesslb_")] == []


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ConfigurationError, match="max_endpoints"):
        PrometheusMetrics(CollectorRegistry(), max_endpoints=0)
    with pytest.raises(ConfigurationError, match="registry"):
        PrometheusMetrics("not a registry")
