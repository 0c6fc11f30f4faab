"""Prometheus metrics from the event stream (``pip install 'headlesslb[prometheus]'``).

:class:`PrometheusMetrics` is a ``prometheus-client`` collector registered on the registry you
pass, and an observer you give to one or more clients::

    metrics = PrometheusMetrics(registry)          # prometheus_client.REGISTRY, or your own
    client = HeadlessClient("web-hl", observers=[metrics])

It exposes the OpenTelemetry metrics under Prometheus' conventional names (``_seconds``,
``_total``), each prefixed ``headlesslb_`` so that none can clash with an application's own
(an app's HTTP server or another client library may well export
``http_client_request_duration_seconds``), each with a ``service`` label:

- ``headlesslb_http_client_request_duration_seconds`` (histogram, the semantic-convention
  buckets; labels ``method``, ``status_code``, ``error_type``), one observation per attempt;
- ``headlesslb_endpoints`` (gauge, label ``state``: healthy, ejected, unhealthy);
- ``headlesslb_endpoint_attempts_total`` (labels ``endpoint``, ``result``) and
  ``headlesslb_ejections_total`` (label ``endpoint``);
- ``headlesslb_zone_attempts_total`` (label ``zone``): attempts to the Pods of each zone, when
  discovery knows zones (EndpointSlices): each zone's share is its rate over their sum;
- ``headlesslb_retries_total``, ``headlesslb_retry_budget_exhausted_total``,
  ``headlesslb_fallback_requests_total``, ``headlesslb_endpoint_changes_total`` (label
  ``change``: joined, left), ``headlesslb_dns_round_duration_seconds`` (histogram),
  ``headlesslb_dns_errors_total``;
- ``headlesslb_load_reports_rejected_total`` (label ``endpoint``): a Pod's ORCA load report was
  dropped as unusable, counted once per run of bad reports (:class:`LoadReportRejected`);
- with a picker that reads load reports (``WeightedRoundRobin``, ``LeastLoaded``), each Pod's
  latest report (:class:`LoadReported`, at most once a second per Pod), label ``endpoint``:
  ``headlesslb_endpoint_load_utilization`` (what weighted round robin divides by:
  ``application_utilization``, else ``cpu_utilization``), ``headlesslb_endpoint_load_qps``
  (``rps_fractional``) and ``headlesslb_endpoint_load_metric`` (label ``metric``: its
  ``named_metrics``, such as vLLM's ``num_requests_waiting``; at most ``MAX_LOAD_METRICS``
  names per Service, since Pods name them). A Pod's gauges go when it leaves DNS.

Per-endpoint series have bounded cardinality: ``endpoint`` is the Pod's hostname (``web-3``: a
StatefulSet's names are stable) or, without one, its ``ip:port``; after ``max_endpoints``
distinct values per Service (a Deployment whose Pods come and go), further Pods share the value
``"other"``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any

from ..core import forksafe
from ..core.endpoint import Endpoint
from ..core.events import (
    AttemptFinished,
    DiscoveryRound,
    EndpointCounts,
    EndpointEjected,
    EndpointReadmitted,
    EndpointsChanged,
    Event,
    HealthChanged,
    LoadReported,
    LoadReportRejected,
    RetryBudgetExhausted,
    RetryScheduled,
)
from ..core.orca import LoadReport
from ..errors import ConfigurationError
from .otel import DURATION_BUCKETS

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError:  # the extra is not installed: PrometheusMetrics says so
    _CLIENT = False
    Collector = object  # type: ignore[misc,assignment]
else:
    _CLIENT = True

__all__ = ["OTHER", "PrometheusMetrics"]

OTHER = "other"
"""The ``endpoint`` label of Pods beyond ``max_endpoints`` (and the ``zone`` label of zones
beyond :data:`MAX_ZONES`)."""
MAX_ZONES = 16
"""Distinct ``zone`` labels per Service: a region has a handful of zones."""

MAX_LOAD_METRICS = 16
"""Distinct ``metric`` label values per Service: named metrics come from the Pods, untrusted,
so a Pod inventing a name per report cannot grow the series without bound (past it, new names
are not exported)."""

Labels = tuple[str, ...]


class _Histogram:
    """Cumulative-on-read bucket counts for one label set."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.count += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        running = 0
        result: list[tuple[str, float]] = []
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            result.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return result


class PrometheusMetrics(Collector):
    """A collector on ``registry`` and an observer of the clients given it in ``observers=``."""

    def __init__(self, registry: Any, *, max_endpoints: int = 50) -> None:
        if not _CLIENT:
            raise ConfigurationError(
                "PrometheusMetrics needs prometheus-client: pip install 'headlesslb[prometheus]'"
            )
        if isinstance(max_endpoints, bool) or not isinstance(max_endpoints, int):
            raise ConfigurationError(f"max_endpoints must be an int, not {max_endpoints!r}")
        if max_endpoints < 1:
            raise ConfigurationError(f"max_endpoints must be at least 1, not {max_endpoints}")
        if not callable(getattr(registry, "register", None)):
            raise ConfigurationError(
                f"registry must be a prometheus_client CollectorRegistry, not {registry!r}"
            )
        self.max_endpoints = max_endpoints
        self._lock = forksafe.lock(self)
        self._durations: dict[Labels, _Histogram] = {}
        self._dns: dict[Labels, _Histogram] = {}
        self._counters: dict[str, dict[Labels, float]] = {name: {} for name in _COUNTERS}
        self._endpoints: dict[str, EndpointCounts] = {}
        self._labels: dict[str, dict[tuple[str, int], str]] = {}
        """Per Service, the ``endpoint`` label each Pod got (bounded by ``max_endpoints``)."""
        self._zones: dict[str, set[str]] = {}
        """Per Service, the ``zone`` labels given so far (bounded by :data:`MAX_ZONES`)."""
        self._loads: dict[str, dict[str, LoadReport]] = {}
        """Per Service, each Pod's latest load report, by its ``endpoint`` label."""
        self._load_metrics: dict[str, set[str]] = {}
        """Per Service, the named metrics exported (bounded by :data:`MAX_LOAD_METRICS`)."""
        registry.register(self)

    # -- the observer ----------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        """Count ``event``."""
        kind = type(event)
        service = event.service
        with self._lock:
            if kind is AttemptFinished:
                assert isinstance(event, AttemptFinished)
                self._attempt(event)
            elif kind is EndpointEjected:
                assert isinstance(event, EndpointEjected)
                self._add("ejections", (service, self._endpoint(service, event.endpoint)))
                self._endpoints[service] = event.counts
            elif kind is EndpointsChanged:
                assert isinstance(event, EndpointsChanged)
                self._add("endpoint_changes", (service, "joined"), len(event.added))
                self._add("endpoint_changes", (service, "left"), len(event.removed))
                self._endpoints[service] = event.counts
                loads = self._loads.get(service)
                if loads:
                    labels = self._labels.get(service, {})
                    for gone in event.removed:
                        loads.pop(labels.get(gone.key, OTHER), None)
            elif kind is EndpointReadmitted or kind is HealthChanged:
                assert isinstance(event, EndpointReadmitted | HealthChanged)
                self._endpoints[service] = event.counts
            elif kind is RetryScheduled:
                self._add("retries", (service,))
            elif kind is RetryBudgetExhausted:
                self._add("retry_budget_exhausted", (service,))
            elif kind is DiscoveryRound:
                assert isinstance(event, DiscoveryRound)
                self._dns.setdefault((service,), _Histogram()).observe(event.duration)
                if not event.ok:
                    self._add("dns_errors", (service,))
            elif kind is LoadReportRejected:
                assert isinstance(event, LoadReportRejected)
                pod = self._endpoint(service, event.endpoint)
                self._add("load_reports_rejected", (service, pod))
            elif kind is LoadReported:
                assert isinstance(event, LoadReported)
                pod = self._endpoint(service, event.endpoint)
                if pod != OTHER:  # a gauge of Pods lumped together would mean nothing
                    self._loads.setdefault(service, {})[pod] = event.report

    def _attempt(self, event: AttemptFinished) -> None:
        service = event.service
        start = event.start
        status = "" if event.status is None else str(event.status)
        error_type = event.error or ("" if event.status is None or event.status < 400 else status)
        key = (service, start.method, status, error_type)
        self._durations.setdefault(key, _Histogram()).observe(event.duration)
        if start.endpoint is None:
            self._add("fallback_requests", (service,))
        else:
            result = event.outcome or ("success" if event.error is None else event.error)
            pod = self._endpoint(service, start.endpoint)
            self._add("endpoint_attempts", (service, pod, result))
            zone = start.endpoint.zone
            if zone is not None:
                self._add("zone_attempts", (service, self._zone(service, zone)))

    def _add(self, counter: str, labels: Labels, amount: float = 1) -> None:
        values = self._counters[counter]
        values[labels] = values.get(labels, 0) + amount

    def _endpoint(self, service: str, endpoint: Endpoint) -> str:
        labels = self._labels.setdefault(service, {})
        label = labels.get(endpoint.key)
        if label is None:
            if len(labels) >= self.max_endpoints:
                return OTHER
            label = labels[endpoint.key] = endpoint.hostname or endpoint.authority
        return label

    def _zone(self, service: str, zone: str) -> str:
        """The zone's label: zones come from the API, untrusted, so their number is capped."""
        zones = self._zones.setdefault(service, set())
        if zone not in zones:
            if len(zones) >= MAX_ZONES:
                return OTHER
            zones.add(zone)
        return zone

    # -- the collector ---------------------------------------------------------------------------
    def describe(self) -> Iterable[Any]:
        """The metric families, without samples (the registry checks names with this)."""
        return list(self._families(empty=True))

    def collect(self) -> Iterable[Any]:
        """Every metric, now."""
        with self._lock:
            return list(self._families(empty=False))

    def _families(self, *, empty: bool) -> Iterator[Any]:
        duration = HistogramMetricFamily(
            "headlesslb_http_client_request_duration_seconds",
            "Duration of HTTP client requests, one per attempt.",
            labels=("service", "method", "status_code", "error_type"),
        )
        dns = HistogramMetricFamily(
            "headlesslb_dns_round_duration_seconds",
            "Duration of DNS discovery rounds.",
            labels=("service",),
        )
        endpoints = GaugeMetricFamily(
            "headlesslb_endpoints", "Pods in DNS, by state.", labels=("service", "state")
        )
        utilization = GaugeMetricFamily(
            "headlesslb_endpoint_load_utilization",
            "Each Pod's reported utilization (application, else CPU), from its latest report.",
            labels=("service", "endpoint"),
        )
        qps = GaugeMetricFamily(
            "headlesslb_endpoint_load_qps",
            "Each Pod's reported queries per second, from every client.",
            labels=("service", "endpoint"),
        )
        named = GaugeMetricFamily(
            "headlesslb_endpoint_load_metric",
            "Each Pod's reported named metrics.",
            labels=("service", "endpoint", "metric"),
        )
        counters = {
            name: CounterMetricFamily(f"headlesslb_{name}", doc, labels=labels)
            for name, (doc, labels) in _COUNTERS.items()
        }
        if not empty:
            for key, histogram in self._durations.items():
                duration.add_metric(key, histogram.buckets(), histogram.total)
            for key, histogram in self._dns.items():
                dns.add_metric(key, histogram.buckets(), histogram.total)
            for service, counts in self._endpoints.items():
                endpoints.add_metric((service, "healthy"), counts.healthy)
                endpoints.add_metric((service, "ejected"), counts.ejected)
                endpoints.add_metric((service, "unhealthy"), counts.unhealthy)
            for name, values in self._counters.items():
                for key, value in values.items():
                    counters[name].add_metric(key, value)
            for service, loads in self._loads.items():
                exported = self._load_metrics.setdefault(service, set())
                for pod, report in loads.items():
                    utilization.add_metric((service, pod), report.busy)
                    qps.add_metric((service, pod), report.rps_fractional)
                    for metric, value in report.named_metrics.items():
                        if metric not in exported:
                            if len(exported) >= MAX_LOAD_METRICS:
                                continue
                            exported.add(metric)
                        named.add_metric((service, pod, metric), value)
        yield duration
        yield dns
        yield endpoints
        yield utilization
        yield qps
        yield named
        yield from counters.values()


_COUNTERS: dict[str, tuple[str, Labels]] = {
    "endpoint_attempts": (
        "Attempts sent to each Pod, by result.",
        ("service", "endpoint", "result"),
    ),
    "ejections": ("Pods ejected by outlier detection.", ("service", "endpoint")),
    "retries": ("Attempts retried.", ("service",)),
    "retry_budget_exhausted": (
        "Retryable failures not retried: the retry budget was empty.",
        ("service",),
    ),
    "fallback_requests": ("Attempts sent to the fallback Service.", ("service",)),
    "endpoint_changes": ("Pods joining or leaving DNS.", ("service", "change")),
    "zone_attempts": (
        "Attempts sent to the Pods of each zone (EndpointSlice discovery).",
        ("service", "zone"),
    ),
    "dns_errors": ("DNS rounds that failed.", ("service",)),
    "load_reports_rejected": (
        "Pods' load reports dropped as unusable, once per run of bad reports.",
        ("service", "endpoint"),
    ),
}
