"""ORCA load reports (pure): the TEXT and JSON formats as vLLM and Envoy write them, the bounds
on untrusted input, the per-Pod sink and its one warning, and the sender's hook at header
time (only while a picker reads reports)."""

from __future__ import annotations

import json
import random

import pytest

from headlesslb.core.balancer import Balancer
from headlesslb.core.call import Router
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.names import expand_service_name
from headlesslb.core.options import PLAIN
from headlesslb.core.orca import (
    FORMAT_HEADER,
    HEADER,
    MAX_ENTRIES,
    MAX_REPORT_CHARS,
    LoadReportError,
    LoadReports,
    parse_load_report,
)
from headlesslb.core.pickers import make_picker
from headlesslb.core.pool import Outcome, Pool
from headlesslb.core.retry import RetryPolicy
from headlesslb.core.steps import Send
from headlesslb.io.bodies import answered


# -- the formats -----------------------------------------------------------------------------------
def test_text_as_vllm_writes_it() -> None:
    # vllm/entrypoints/openai/orca_metrics.py: ", ".join(f"named_metrics.{name}={value}")
    value = "TEXT named_metrics.kv_cache_usage_perc=0.4, named_metrics.num_requests_waiting=3.0"
    report = parse_load_report(value, received=7.0)
    assert report.named_metrics == {"kv_cache_usage_perc": 0.4, "num_requests_waiting": 3.0}
    assert report.received == report.since == 7.0
    assert report.metric("num_requests_waiting") == 3.0
    assert report.metric("named_metrics.kv_cache_usage_perc") == 0.4
    assert report.metric("cpu_utilization") == 0.0  # absent fields are 0, as in the protocol
    assert report.metric("missing") is None


def test_text_every_field() -> None:
    report = parse_load_report(
        "TEXT cpu_utilization=0.5,mem_utilization=0.25, application_utilization=0.75,"
        " rps_fractional=120.5, eps=2, utilization.gpu=0.9, request_cost.tokens=400",
        received=0.0,
    )
    assert (report.cpu_utilization, report.mem_utilization) == (0.5, 0.25)
    assert report.busy == 0.75  # application_utilization wins over cpu when set
    assert (report.rps_fractional, report.eps) == (120.5, 2.0)
    assert report.metric("utilization.gpu") == 0.9
    assert report.metric("request_cost.tokens") == 400.0


def test_json_as_vllm_writes_it_and_proto_json_names() -> None:
    vllm = "JSON " + json.dumps({"named_metrics": {"kv_cache_usage_perc": 0.25}})
    assert parse_load_report(vllm, 0.0).named_metrics == {"kv_cache_usage_perc": 0.25}
    camel = 'JSON {"cpuUtilization": 0.5, "rpsFractional": "10", "namedMetrics": {"q": 1}}'
    report = parse_load_report(camel, 0.0)
    assert (report.cpu_utilization, report.rps_fractional) == (0.5, 10.0)
    assert report.busy == 0.5  # no application_utilization: cpu
    assert parse_load_report('JSON {"rps": 7}', 0.0).rps_fractional == 7.0  # deprecated field


# -- untrusted input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("TEXT cpu_utilization=" + "9" * MAX_REPORT_CHARS, "longer than"),
        ("TEXT " + ",".join(f"named_metrics.m{i}=1" for i in range(MAX_ENTRIES + 1)), "entries"),
        ("TEXT cpu_utilization=-0.5", ">= 0"),
        ("TEXT cpu_utilization=nan", "finite"),
        ("TEXT cpu_utilization=inf", "finite"),
        ("TEXT cpu_utilization=1e999", "finite"),
        ('JSON {"cpu_utilization": NaN}', "finite"),
        ('JSON {"cpu_utilization": -Infinity}', "finite"),
        ('JSON {"eps": 1e400}', "finite"),
        ('JSON {"eps": true}', "not a number"),
        ('JSON {"named_metrics": {"q": [1]}}', "not a number"),
        ('JSON {"named_metrics": [1]}', "not an object"),
        ("JSON [1, 2]", "not an object"),
        ("JSON {", "malformed"),
        ("JSON " + "[" * 3000, "malformed"),
        ("TEXT cpu_utilization", "name=value"),
        ("TEXT cpu_utilization=abc", "not a number"),
        ("TEXT cpu_utilization=0.1, cpu_utilization=0.9", "twice"),
        ("TEXT bogus=1", "unknown field"),
        ("TEXT named_metrics.b\u00e9=1", "plain name"),  # non-UTF-8 bytes, read as latin-1
        ("TEXT named_metrics.=1", "plain name"),
        ("TEXT named_metrics." + "x" * 129 + "=1", "plain name"),
        ("BIN CgQIARAB", "BIN"),
        ("XML <cpu/>", "unknown format"),
        ("", "unknown format"),
    ],
)
def test_bad_reports_are_refused_with_a_reason(value: str, reason: str) -> None:
    with pytest.raises(LoadReportError, match=reason):
        parse_load_report(value, 0.0)


def test_a_huge_but_finite_value_is_a_report() -> None:
    # Claiming an absurd load is the Pod's business: the pickers clamp what it can do.
    assert parse_load_report("TEXT cpu_utilization=1e300", 0.0).cpu_utilization == 1e300


# -- the sink --------------------------------------------------------------------------------------
def _pool(clock: ManualClock, n: int = 2) -> Pool:
    pool = Pool(clock=clock, rng=random.Random(0))
    pool.update(Resolution(tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(1, n + 1)), 5))
    return pool


def test_reports_are_kept_per_pod_and_runs_restart_after_a_gap() -> None:
    clock = ManualClock()
    pool = _pool(clock)
    sink = LoadReports(clock, max_age=5.0)
    state = pool.snapshot.members[0]
    sink.offer(state, {})  # no header: nothing
    assert state.load is None
    sink.offer(state, {HEADER: "TEXT cpu_utilization=0.5"})
    first = state.load
    assert first is not None and first.since == clock()
    clock.advance(4.0)
    sink.offer(state, {HEADER: "TEXT cpu_utilization=0.6"})
    assert state.load is not None and state.load.since == first.since  # the run goes on
    clock.advance(6.0)  # longer than max_age without a report
    sink.offer(state, {HEADER: "TEXT cpu_utilization=0.7"})
    assert state.load is not None and state.load.since == clock()  # a new run
    assert pool.statuses()[0].load is state.load  # endpoints() shows it


def test_a_bad_report_is_dropped_and_said_once_per_pod_until_a_good_one() -> None:
    clock = ManualClock()
    pool = _pool(clock)
    said: list[tuple[str, str]] = []
    sink = LoadReports(clock, max_age=5.0, rejected=lambda e, why: said.append((e.ip, why)))
    a, b = pool.snapshot.members
    sink.offer(a, {HEADER: "TEXT cpu_utilization=0.5"})
    good = a.load
    for _ in range(3):
        sink.offer(a, {HEADER: "TEXT cpu_utilization=nan"})
    assert a.load is good  # the last good report stays (it ages out on its own)
    sink.offer(b, {HEADER: "garbage"})
    assert [ip for ip, _ in said] == ["10.0.0.1", "10.0.0.2"]
    assert "finite" in said[0][1]
    sink.offer(a, {HEADER: "TEXT cpu_utilization=0.1"})
    sink.offer(a, {HEADER: "TEXT cpu_utilization=-1"})
    assert [ip for ip, _ in said] == ["10.0.0.1", "10.0.0.2", "10.0.0.1"]


def test_a_pods_report_is_told_at_most_once_a_second() -> None:
    # Metrics need a Pod's latest report, not one event per response of a busy Pod.
    clock = ManualClock()
    pool = _pool(clock)
    told: list[tuple[str, float]] = []
    sink = LoadReports(
        clock, max_age=5.0, reported=lambda e, r: told.append((e.ip, r.cpu_utilization))
    )
    a, b = pool.snapshot.members
    for n in range(5):
        sink.offer(a, {HEADER: f"TEXT cpu_utilization=0.{n + 1}"})
        clock.advance(0.1)
    sink.offer(b, {HEADER: "TEXT cpu_utilization=0.9"})  # another Pod: its own second
    sink.offer(a, {HEADER: "TEXT cpu_utilization=nan"})  # dropped: never told
    assert told == [("10.0.0.1", 0.1), ("10.0.0.2", 0.9)]
    clock.advance(0.5)  # a second since a's last telling
    sink.offer(a, {HEADER: "TEXT cpu_utilization=0.7"})
    assert told[-1] == ("10.0.0.1", 0.7) and a.load is not None and a.load.cpu_utilization == 0.7


class _Response:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers


def test_the_sender_hands_reports_over_only_when_a_picker_reads_them() -> None:
    clock = ManualClock()
    pool = _pool(clock)
    state = pool.snapshot.members[0]
    response = _Response(200, {HEADER: "TEXT rps_fractional=5, cpu_utilization=0.5"})
    attempt = pool.begin(state)
    answered(response, attempt, RetryPolicy())
    attempt.done(Outcome.SUCCESS)
    assert state.load is None  # nobody reads reports: not even parsed
    pool.load_reports = LoadReports(clock, max_age=5.0)
    attempt = pool.begin(state)
    verdict = answered(response, attempt, RetryPolicy())
    attempt.done(verdict.outcome)
    assert state.load is not None and state.load.rps_fractional == 5.0


def test_a_bad_report_never_changes_the_verdict() -> None:
    clock = ManualClock()
    pool = _pool(clock)
    pool.load_reports = LoadReports(clock, max_age=5.0)
    state = pool.snapshot.members[0]
    attempt = pool.begin(state)
    verdict = answered(_Response(503, {HEADER: "TEXT eps=NaN"}), attempt, RetryPolicy())
    assert verdict.outcome is Outcome.GATEWAY_ERROR
    attempt.done(verdict.outcome)
    assert state.load is None


def _router(pool: Pool, picker: str) -> Router:
    retry = RetryPolicy()
    clock = ManualClock()
    rng = random.Random(0)
    return Router(
        service=expand_service_name("web-hl.default"),
        pool=pool,
        balancer=Balancer(pool, make_picker(picker, rng=rng, clock=clock)),
        retry=retry,
        budget=retry.budget(clock),
        rng=rng,
        port=80,
        clock=clock,
    )


def test_attempts_ask_for_reports_only_when_a_picker_reads_them() -> None:
    clock = ManualClock()
    plain = _router(_pool(clock), "round_robin")
    step = plain.start("GET", PLAIN, replayable=True).first()
    assert isinstance(step, Send) and step.headers == ()
    pool = _pool(clock)
    pool.load_reports = LoadReports(clock, max_age=5.0)
    reading = _router(pool, "weighted_round_robin")
    step = reading.start("GET", PLAIN, replayable=True).first()
    assert isinstance(step, Send) and step.headers == ((FORMAT_HEADER, "TEXT"),)
