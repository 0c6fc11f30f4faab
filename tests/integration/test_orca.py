"""Load reports over a LocalCluster (real DNS, real HTTP): Pods that send ORCA
``endpoint-load-metrics`` headers, honest and hostile (huge, malformed, NaN and negative,
not UTF-8, infinite), and one that claims next to no load while failing every request. Each
leaves the client working; the liar is still ejected."""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Iterator

import pytest

from headlesslb import LeastLoaded, WeightedRoundRobin
from headlesslb.core.events import EndpointEjected, Event, LoadReported, LoadReportRejected
from headlesslb.core.pickers.base import PickerFactory
from headlesslb.testing import LocalCluster
from tests.integration.apps import orca_app

from .helpers import make_client

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]

PODS = orca_app.LIAR + 1
BAD = sorted(set(orca_app.REPORTS) - {orca_app.HONEST})


@pytest.fixture
def reporting() -> Iterator[LocalCluster]:
    with LocalCluster(ttl=5) as cluster:
        cluster.add_statefulset("lb", replicas=PODS, app=f"{orca_app.__name__}:make", factory=True)
        yield cluster


PICKERS: dict[str, PickerFactory] = {
    # No blackout: weights count from the first report (A58's default waits 10 s).
    "weighted_round_robin": WeightedRoundRobin(blackout_period=0.0, weight_update_period=0.1),
    "least_loaded": LeastLoaded(),
}


@pytest.mark.parametrize("picker", sorted(PICKERS))
async def test_hostile_reports_leave_the_client_working_and_the_liar_is_ejected(
    reporting: LocalCluster, picker: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Event] = []
    caplog.set_level(logging.WARNING, logger="headlesslb.pool")
    started = time.monotonic()
    async with make_client(
        reporting, "lb-hl", picker=PICKERS[picker], observers=[seen.append]
    ) as client:
        for _ in range(200):
            response = await client.get("/")
            assert response.status_code == 200  # the liar's 503s are retried elsewhere
            assert response.json()["asked"] == "TEXT"  # every attempt asks for a report
        statuses = {s.ordinal: s for s in client.endpoints()}
    liar = statuses[orca_app.LIAR]
    ejected = [e for e in seen if isinstance(e, EndpointEjected)]
    assert [e.endpoint.ordinal for e in ejected] == [orca_app.LIAR]
    assert not liar.healthy and liar.ejection_remaining is not None
    # The honest Pod's report is shown; the hostile ones' are not (none was usable).
    honest = statuses[orca_app.HONEST].load
    assert honest is not None and honest.rps_fractional == 100.0
    age = statuses[orca_app.HONEST].load_age
    assert age is not None and age >= 0.0
    assert honest.metric("num_requests_waiting") == 1.0
    for ordinal in BAD:
        assert statuses[ordinal].load is None
        assert statuses[ordinal].requests > 0  # still served: a bad report is no failure
    # One event, and one log line, per hostile Pod however many reports it sent.
    rejected = [e for e in seen if isinstance(e, LoadReportRejected)]
    assert sorted(e.endpoint.ordinal for e in rejected) == BAD
    lines = [r for r in caplog.records if "load report that cannot be used" in r.getMessage()]
    assert len(lines) == len(BAD)
    reasons = {e.endpoint.ordinal: e.reason for e in rejected}
    assert "longer than" in reasons[1] and "finite" in reasons[3] and "plain name" in reasons[4]
    # What metrics export: usable reports only, each Pod's at most once a second (not one
    # per response).
    reported = [e for e in seen if isinstance(e, LoadReported)]
    by_pod = collections.Counter(e.endpoint.ordinal for e in reported)
    assert orca_app.HONEST in by_pod and not set(by_pod) & set(BAD)
    assert max(by_pod.values()) <= math.ceil(time.monotonic() - started) + 1


async def test_without_a_picker_that_reads_them_nothing_is_asked(reporting: LocalCluster) -> None:
    async with make_client(reporting, "lb-hl", picker="least_request") as client:
        for _ in range(20):
            response = await client.get("/")
            if response.status_code == 200:
                assert response.json()["asked"] == ""
        assert all(s.load is None for s in client.endpoints())
