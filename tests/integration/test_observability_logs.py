"""Logs an operator can act on, over a LocalCluster: one line per state change, never per request.

Records are read with caplog (the loggers are the library's own, under ``headlesslb``), on the
async and the sync client.
"""

from __future__ import annotations

import logging

import pytest

from headlesslb import OutlierPolicy, RefreshPolicy
from headlesslb.testing import LocalCluster

from .helpers import eventually, make_client, served_by

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]

FAST_REFRESH = RefreshPolicy(
    min_interval=0.1, max_interval=0.3, error_backoff=0.1, max_error_backoff=0.2
)


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def test_the_library_logs_nowhere_until_the_application_says_where() -> None:
    handlers = logging.getLogger("headlesslb").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


async def test_a_pod_kill_gives_one_ejection_line_and_one_readmission_line(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    outlier = OutlierPolicy(base_ejection=0.5, jitter=0)
    attempt_log = "headlesslb.attempts"
    with caplog.at_level(logging.INFO, logger="headlesslb"):
        caplog.set_level(logging.DEBUG, logger="headlesslb.attempts")  # and a line per attempt
        async with make_client(cluster, outlier=outlier) as client:
            await served_by(client, 6)
            cluster.kill("web-1")
            await served_by(client, 40)  # every request served; web-1 refused once
            attempts = [r for r in caplog.records if r.name == attempt_log]
            assert len(attempts) == 47  # 46 requests, one of them retried after web-1 refused
            (refused,) = [r for r in attempts if r.error is not None]  # type: ignore[attr-defined]
            assert refused.hostname == "web-1" and refused.levelno == logging.DEBUG  # type: ignore[attr-defined]
            assert "ConnectError (refused)" in refused.getMessage()
            assert [r.resend_count for r in attempts].count(1) == 1  # type: ignore[attr-defined]
            (ejected,) = records(caplog, "ejected")
            assert ejected.levelno == logging.INFO and ejected.name == "headlesslb.pool"
            assert ejected.hostname == "web-1" and ejected.ordinal == 1  # type: ignore[attr-defined]
            assert ejected.reason == "connection refused"  # type: ignore[attr-defined]
            assert ejected.endpoint == f"{cluster.pod('web-1').ip}:{cluster.port}"  # type: ignore[attr-defined]
            assert ejected.service == cluster.fqdn("web-hl").rstrip(".")  # type: ignore[attr-defined]
            cluster.restart("web-1")

            async def readmitted() -> bool:
                await served_by(client, 3)
                return bool(records(caplog, "readmitted"))

            await eventually(readmitted, within=5)
    (back,) = records(caplog, "readmitted")
    assert back.reason == "ejection expired"  # type: ignore[attr-defined]
    # 3 Pods joined + 1 ejection + 1 readmission: nothing per request, however many were sent.
    ours = [r for r in caplog.records if r.levelno >= logging.INFO and r.name != attempt_log]
    assert len(ours) == 5, [r.getMessage() for r in ours]


async def test_membership_fallback_and_dns_failure_and_recovery(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="headlesslb"):
        async with make_client(
            cluster, fallback="web-lb", refresh=FAST_REFRESH, discovery_timeout=0.3
        ) as client:
            await served_by(client, 3)
            assert len(records(caplog, "joined DNS")) == 3
            cluster.scale("web", 4)
            await eventually(lambda: records(caplog, "web-3"), within=5)
            (joined,) = records(caplog, "web-3")
            assert joined.reason == "joined DNS" and joined.ordinal == 3  # type: ignore[attr-defined]
            cluster.delete_service("web-hl")

            async def on_fallback() -> bool:
                response = await client.get("/")
                return bool(response.extensions["headlesslb"]["fallback"])

            await eventually(on_fallback, within=5)
            for _ in range(20):
                await client.get("/")
            (engaged,) = records(caplog, "sending requests to the fallback")
            assert engaged.levelno == logging.WARNING
            assert engaged.reason == (  # type: ignore[attr-defined]
                "no usable endpoint (0 in DNS, NXDOMAIN: no such Service, or none of its Pods"
                " is ready)"
            )
            cluster.create_service("web-hl")

            async def off_fallback() -> bool:
                response = await client.get("/")
                return not response.extensions["headlesslb"]["fallback"]

            await eventually(off_fallback, within=5)
            for _ in range(10):
                await client.get("/")
            cluster.stop_dns()
            await eventually(lambda: records(caplog, "discovery failed"), within=10)
            await served_by(client, 3)  # the last good set keeps serving
            cluster.start_dns()
            await eventually(lambda: records(caplog, "discovery recovered"), within=10)
    failed = records(caplog, "discovery failed")
    assert failed[0].levelno == logging.WARNING
    assert "keeping 4 known endpoints" in failed[0].getMessage()
    (recovered,) = records(caplog, "discovery recovered")
    assert recovered.levelno == logging.INFO
    assert len(records(caplog, "no longer used")) == 1
    assert len(records(caplog, "left DNS")) == 4  # NXDOMAIN emptied the pool
    assert len(records(caplog, "sending requests to the fallback")) == 1
