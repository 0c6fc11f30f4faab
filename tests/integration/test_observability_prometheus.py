"""Prometheus metrics read through a real prometheus-client registry's text exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headlesslb.core.endpoint import Endpoint
from headlesslb.core.events import EndpointCounts, EndpointEjected
from headlesslb.errors import ConfigurationError
from headlesslb.telemetry.otel import DURATION_BUCKETS
from headlesslb.telemetry.prometheus import OTHER, PrometheusMetrics
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
