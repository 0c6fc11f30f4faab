"""Rolling restart of a StatefulSet under steady load: failed requests, latency, time to traffic.

A LocalCluster (DNS TTL 5 s, the CoreDNS default) runs StatefulSet ``web`` with ``--pods`` Pods (5)
behind headless Service ``web-hl`` and ClusterIP/LB Service ``web-lb``. A ``HeadlessClient``
(default policies, ``fallback="web-lb"``) carries a fixed request rate (``--rate`` 200 req/s from
``--workers`` 10 workers, each pacing itself) while, after ``--warmup`` (1 s, not in the latency
figures) and ``--before`` seconds of steady load, each
Pod in turn is killed (listener closed, connections reset, DNS unchanged), left down ``--down``
seconds, restarted on the same ip:port, and watched until it serves traffic again (its
``requests_served`` counter moves); ``--after`` seconds of load end the run.

Scenarios (``--scenarios``, comma-separated):

- ``get``: GETs, round-robin, default OutlierPolicy (a refused connect ejects the Pod ~10 s);
- ``post``: the same with POSTs, which are not idempotent: retried only when the request provably
  never left (a refused connect), so a request in flight when its Pod dies fails;
- ``get_short_ejection``: GETs with ``OutlierPolicy(base_ejection=--short-ejection)``;
- ``get_peak_ewma``: GETs with ``picker="peak_ewma"`` (not in the default set).

Per scenario: requests, failed requests (target 0 for GETs) by error type, p50/p99 latency before
vs during the churn and the p99 ratio, requests that needed a retry, requests the fallback served,
and mean/max time from a Pod's restart until it got traffic again. Failed requests are listed
with their ``__notes__`` (every attempt) in the JSON.

    python benchmarks/failover.py [--rate 200] [--workers 10] [--pods 5] [--warmup 1] [--before 5]
        [--down 2] [--after 3] [--scenarios get,post,get_short_ejection] [--short-ejection 1]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx
from _common import print_table, write_results

from headlesslb import HeadlessClient, HealthCheck
from headlesslb.core.pool import OutlierPolicy
from headlesslb.testing import LocalCluster

SCENARIOS: dict[str, tuple[str, str, bool, bool]] = {
    # name: (method, picker, short ejection?, active health checks?)
    "get": ("GET", "round_robin", False, False),
    "post": ("POST", "round_robin", False, False),
    "get_short_ejection": ("GET", "round_robin", True, False),
    "get_health_check": ("GET", "round_robin", False, True),
    "get_peak_ewma": ("GET", "peak_ewma", False, False),
}
DEFAULT_SCENARIOS = "get,post,get_short_ejection,get_health_check"
HEALTH = HealthCheck(interval=0.5, timeout=0.5)
"""Probes for the get_health_check scenario: a passing probe ends an ejection early."""
POLL = 0.05
"""Seconds between ``requests_served`` polls while waiting for a restarted Pod's traffic."""
KEPT_FAILURES = 50
"""Failed requests kept in full (error, message, notes) for the JSON."""


@dataclass(slots=True)
class Record:
    """One request: when it started (s since the run began), how it went, where it went."""

    start: float
    latency: float
    error: str | None
    """None for a 2xx; else the exception type name or ``HTTP <status>``."""
    pod: str | None
    fallback: bool
    attempts: int


@dataclass
class PodEvent:
    """One Pod's turn in the rolling restart (times in s since the run began)."""

    pod: str
    killed_at: float
    restarted_at: float
    traffic_at: float | None = None
    """When the poll first saw ``requests_served`` move; None if the deadline passed first."""
    first_response_at: float | None = None
    """Start of the first request started after the restart that this Pod served (client view)."""

    @property
    def time_to_traffic(self) -> float | None:
        return None if self.traffic_at is None else self.traffic_at - self.restarted_at


@dataclass
class Run:
    """What one scenario measured."""

    records: list[Record] = field(default_factory=list)
    events: list[PodEvent] = field(default_factory=list)
    measure_from: float = 0.0
    """End of the warm-up: the "before" latencies start here."""
    churn_start: float = 0.0
    churn_end: float = 0.0
    end: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    retry_causes: Counter[str] = field(default_factory=Counter)
    """Failed attempts of requests that eventually succeeded, by error (outcome)."""
    client_cpu: float = 0.0
    late_sends: int = 0
    """Sends that started more than one interval after their slot (the worker fell behind)."""
    pool_at_end: list[dict[str, Any]] = field(default_factory=list)


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _exception_chain(exc: BaseException) -> list[str]:
    """Type names along ``__cause__``/``__context__`` (what the OS said, under httpx's error)."""
    chain: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:
        chain.append(f"{type(seen).__module__}.{type(seen).__qualname__}: {seen}"[:300])
        seen = seen.__cause__ or seen.__context__
    return chain


async def _scenario(
    cluster: LocalCluster,
    pods: list[str],
    method: str,
    picker: str,
    outlier: OutlierPolicy | None,
    health: HealthCheck | None,
    args: argparse.Namespace,
) -> Run:
    run = Run()
    interval = args.workers / args.rate
    stop_at = [math.inf]
    perf = time.perf_counter
    t0 = perf()

    async with HeadlessClient(
        "web-hl",
        port="http",
        fallback="web-lb",
        picker=picker,
        outlier=outlier,
        health=health,
        nameservers=[cluster.nameserver],
        namespace=cluster.namespace,
    ) as client:

        async def send(n: int) -> httpx.Response:
            if method == "GET":
                return await client.get("/failover")
            return await client.post("/failover", json={"n": n})

        async def worker(i: int) -> None:
            slot = t0 + i * interval / args.workers  # stagger the workers over one interval
            n = i
            while True:
                now = perf()
                if slot > now:
                    await anyio.sleep(slot - now)
                start = perf()
                if start >= stop_at[0]:
                    return
                if start - slot > interval:
                    run.late_sends += 1
                error: str | None = None
                pod: str | None = None
                fallback, attempts = False, 0
                try:
                    response = await send(n)
                except httpx.HTTPError as exc:
                    latency = perf() - start
                    error = type(exc).__name__
                    if len(run.failures) < KEPT_FAILURES:
                        run.failures.append(
                            {
                                "start_s": round(start - t0, 4),
                                "latency_ms": round(latency * 1e3, 2),
                                "error": error,
                                "message": str(exc),
                                "notes": list(getattr(exc, "__notes__", [])),
                                "chain": _exception_chain(exc),
                            }
                        )
                else:
                    latency = perf() - start
                    report = response.extensions.get("headlesslb", {})
                    fallback = bool(report.get("fallback"))
                    tries = report.get("attempts", [])
                    attempts = len(tries)
                    if response.is_success:
                        pod = response.json()["pod"]
                        for a in tries[:-1]:
                            run.retry_causes[
                                f"{a.get('error') or a.get('status')} ({a.get('outcome', '-')})"
                            ] += 1
                    else:
                        error = f"HTTP {response.status_code}"
                        if len(run.failures) < KEPT_FAILURES:
                            run.failures.append(
                                {"start_s": round(start - t0, 4), "error": error, "report": report}
                            )
                run.records.append(Record(start - t0, latency, error, pod, fallback, attempts))
                n += args.workers
                slot = max(slot + interval, perf())

        async def controller() -> None:
            call = anyio.to_thread.run_sync
            await anyio.sleep(args.warmup)
            run.measure_from = perf() - t0
            await anyio.sleep(args.before)
            run.churn_start = perf() - t0
            for pod in pods:
                await call(cluster.kill, pod)
                killed = perf() - t0
                await anyio.sleep(args.down)
                served = await call(cluster.requests_served, pod)  # dead: cannot move now
                await call(cluster.restart, pod)
                event = PodEvent(pod, killed, perf() - t0)
                run.events.append(event)
                deadline = perf() + args.traffic_deadline
                while perf() < deadline:
                    if await call(cluster.requests_served, pod) > served:
                        event.traffic_at = perf() - t0
                        break
                    await anyio.sleep(POLL)
            run.churn_end = perf() - t0
            await anyio.sleep(args.after)
            stop_at[0] = perf()

        cpu0 = time.process_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(controller)
            for i in range(args.workers):
                tg.start_soon(worker, i)
        run.end = perf() - t0
        run.client_cpu = (time.process_time() - cpu0) / run.end
        run.pool_at_end = [
            {
                "hostname": e.hostname,
                "requests": e.requests,
                "failures": e.failures,
                "healthy": e.healthy,
            }
            for e in sorted(client.endpoints(), key=lambda e: e.ordinal or 0)
        ]

    for event in run.events:
        event.first_response_at = min(
            (r.start for r in run.records if r.pod == event.pod and r.start > event.restarted_at),
            default=None,
        )
    return run


def _expected_ttt(policy: OutlierPolicy, down: float) -> float:
    """Restart → traffic if only the ejection back-off kept the Pod out (jitter ignored).

    The first refused connect ejects the Pod for ``base_ejection``; an ejection that ends while
    the Pod is still down lets one request in, which is refused, and the n-th ejection in a row
    lasts ``n × base_ejection``. The Pod gets traffic when the first ejection ending after the
    restart does.
    """
    ends, n = 0.0, 0
    while ends < down:
        n += 1
        ends += min(policy.base_ejection * n, policy.max_ejection)
    return ends - down


def _row(
    name: str, method: str, picker: str, policy: OutlierPolicy, down: float, run: Run
) -> dict[str, Any]:
    records = run.records
    failed = [r for r in records if r.error is not None]
    ok = [r for r in records if r.error is None]
    before = sorted(r.latency for r in ok if run.measure_from <= r.start < run.churn_start)
    during = sorted(r.latency for r in ok if run.churn_start <= r.start < run.churn_end)
    ttt = [e.time_to_traffic for e in run.events if e.time_to_traffic is not None]
    p99_before = _percentile(before, 99)
    p99_during = _percentile(during, 99)
    errors = Counter(r.error for r in failed)
    return {
        "scenario": name,
        "method": method,
        "picker": picker,
        "ejection_s": policy.base_ejection,
        "requests": len(records),
        "req_per_s": round(len(records) / run.end, 1) if run.end else 0.0,
        "failed": len(failed),
        "p50_before_ms": round(_percentile(before, 50) * 1e3, 2),
        "p99_before_ms": round(p99_before * 1e3, 2),
        "p50_during_ms": round(_percentile(during, 50) * 1e3, 2),
        "p99_during_ms": round(p99_during * 1e3, 2),
        "p99_ratio": round(p99_during / p99_before, 2) if before and during else None,
        "retried": sum(1 for r in records if r.attempts > 1),
        "fallback": sum(1 for r in records if r.fallback),
        "ttt_mean_s": round(sum(ttt) / len(ttt), 2) if ttt else None,
        "ttt_max_s": round(max(ttt), 2) if ttt else None,
        "ttt_expected_s": round(_expected_ttt(policy, down), 2),
        "ttt_timeouts": len(run.events) - len(ttt),
        "client_cpu_pct": round(100 * run.client_cpu),
        "errors": ", ".join(f"{e}×{n}" for e, n in errors.most_common()) or "-",
    }


def _details(run: Run) -> dict[str, Any]:
    """Everything behind a row, for the JSON."""
    return {
        "churn_start_s": round(run.churn_start, 3),
        "churn_end_s": round(run.churn_end, 3),
        "end_s": round(run.end, 3),
        "late_sends": run.late_sends,
        "pods_served": dict(Counter(r.pod for r in run.records if r.pod)),
        "retry_causes": dict(run.retry_causes),
        "events": [
            {
                "pod": e.pod,
                "killed_at_s": round(e.killed_at, 3),
                "restarted_at_s": round(e.restarted_at, 3),
                "traffic_at_s": None if e.traffic_at is None else round(e.traffic_at, 3),
                "time_to_traffic_s": None
                if e.time_to_traffic is None
                else round(e.time_to_traffic, 3),
                "first_response_after_restart_s": None
                if e.first_response_at is None
                else round(e.first_response_at - e.restarted_at, 3),
            }
            for e in run.events
        ],
        "failures": run.failures,
        "pool_at_end": run.pool_at_end,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s, all workers")
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--pods", type=int, default=5)
    parser.add_argument(
        "--pod-latency",
        type=float,
        default=0.02,
        help="s each Pod takes per request, so some are in flight whenever a Pod is killed",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured s at the start")
    parser.add_argument("--before", type=float, default=5.0, help="steady s before the churn")
    parser.add_argument("--down", type=float, default=2.0, help="s each Pod stays down")
    parser.add_argument("--after", type=float, default=3.0, help="steady s after the churn")
    parser.add_argument(
        "--traffic-deadline", type=float, default=30.0, help="max s to wait for a Pod's traffic"
    )
    parser.add_argument(
        "--short-ejection",
        type=float,
        default=1.0,
        help="base_ejection (s) of the get_short_ejection scenario",
    )
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help=f"comma-separated, of {', '.join(SCENARIOS)} (default {DEFAULT_SCENARIOS})",
    )
    args = parser.parse_args()
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {list(SCENARIOS)}")

    default_ejection = OutlierPolicy().base_ejection
    rows: list[dict[str, Any]] = []
    details: dict[str, dict[str, Any]] = {}
    with LocalCluster(ttl=5) as cluster:
        cluster.add_statefulset("web", replicas=args.pods, headless="web-hl", lb="web-lb")
        pods = [p.name for p in cluster.pods("web")]
        for pod in pods:
            cluster.slow(pod, args.pod_latency)
        for name in names:
            method, picker, short, checked = SCENARIOS[name]
            outlier = OutlierPolicy(base_ejection=args.short_ejection) if short else None
            health = HEALTH if checked else None
            try:
                run = anyio.run(_scenario, cluster, pods, method, picker, outlier, health, args)
            finally:
                for info in cluster.pods("web"):  # leave every Pod up for the next scenario
                    if not info.alive:
                        cluster.restart(info.name)
            policy = outlier or OutlierPolicy()
            row = _row(name, method, picker, policy, args.down, run)
            if health is not None:
                row["ttt_expected_s"] = health.interval  # at most one probe interval
            rows.append(row)
            details[name] = _details(run)

    print_table(
        rows,
        title=(
            f"Rolling restart of {args.pods} Pods under {args.rate:g} req/s"
            f" ({args.workers} workers): each Pod down {args.down:g} s;"
            " latency in ms, time to traffic (ttt) in s"
        ),
    )
    print(
        "\nttt = from a Pod's restart until it served a request again (polling its counter"
        f" every {POLL:g} s). The first refused connect ejects the Pod (eject_on_refused) for"
        " base_ejection (±10 % jitter); DNS never drops it (a kill keeps its records), so without"
        " health checks it gets traffic only when the ejection runs out:"
        f" ttt ≈ base_ejection − down = {default_ejection:g} − {args.down:g} s by default. An"
        " ejection that ends while the Pod is still down lets one request in, which is refused"
        " (and retried elsewhere) and ejects it again for n × base_ejection (the n-th in a row):"
        " ttt_expected adds these up. With health checks (get_health_check, probes every"
        f" {HEALTH.interval:g} s) the first passing probe after the restart ends the ejection."
    )
    print(
        "POSTs are retried only when the request provably never left (connect refused): one in"
        " flight on a Pod when it is killed, or sent on a pooled connection the kill has reset,"
        " may have been processed, so it fails rather than risk a duplicate."
    )
    for name, detail in details.items():
        if detail["failures"]:
            print(f"\n{name}: first failed requests (all in the JSON):")
            for failure in detail["failures"][:5]:
                notes = "; ".join(failure.get("notes", [])) or failure.get("report", "")
                print(f"  t={failure['start_s']:.3f} s {failure['error']}: {notes}")
    write_results(
        "failover",
        rows,
        target={"failed_get_requests": 0},
        params={**vars(args), "ttl": 5, "default_base_ejection": default_ejection},
        failed_get_requests=sum(r["failed"] for r in rows if r["method"] == "GET"),
        details=details,
    )


if __name__ == "__main__":
    main()
