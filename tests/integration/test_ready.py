"""``wait_ready()``, the readiness probe (issue #23): it returns once some Pod may take requests,
or raises why none may: NXDOMAIN (logged once), an empty answer, DNS unreachable, no Pod passed
its health check, or the timeout. Requests say NXDOMAIN or an empty answer too. All on both
clients over a real LocalCluster, each bounded by deadlines.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import anyio
import pytest

from headlesslb import (
    ClientClosed,
    DiscoveryError,
    DnsUnreachable,
    EmptyAnswer,
    HealthCheck,
    NoEndpointsAvailable,
    NoHealthyPods,
    NotReady,
    NotReadyInTime,
    RefreshPolicy,
    ServiceNotFound,
)
from headlesslb.testing import LocalCluster

from .helpers import eventually, make_client

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]

BOUND = 10.0
"""No test here waits longer than this for anything (seconds)."""


def _runtime(client: Any) -> Any:
    transport = client.transport
    return getattr(transport, "_transport", transport).runtime


def _nxdomain_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.levelno == logging.WARNING and "NXDOMAIN" in r.getMessage()
    ]


async def test_healthy_service_is_ready_promptly(cluster: LocalCluster) -> None:
    client = make_client(cluster)
    try:
        began = time.monotonic()
        with anyio.fail_after(BOUND):
            await client.wait_ready(5)  # starts the client, as a first request would
        assert time.monotonic() - began < 2
        assert (await client.get("/")).status_code == 200
    finally:
        await client.aclose()


async def test_typo_is_no_such_service_logged_once(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="headlesslb"):
        async with make_client(
            cluster, "web-h1", refresh=RefreshPolicy(min_interval=0.1)
        ) as client:
            with anyio.fail_after(BOUND), pytest.raises(ServiceNotFound) as raised:
                await client.wait_ready(5)
            assert isinstance(raised.value, NoEndpointsAvailable)
            assert "no such Service" in str(raised.value)
            runtime = _runtime(client)
            await eventually(lambda: runtime.refresher.rounds >= 4, within=BOUND)
            with pytest.raises(NoEndpointsAvailable, match="NXDOMAIN"):
                await client.get("/")
    assert len(_nxdomain_warnings(caplog)) == 1, [r.getMessage() for r in caplog.records]


async def test_no_pods_left_is_nxdomain_too(cluster: LocalCluster) -> None:
    cluster.scale("web", 0)  # Kubernetes DNS has no name for a headless Service without Pods
    async with make_client(cluster) as client:
        with anyio.fail_after(BOUND), pytest.raises(ServiceNotFound):
            await client.wait_ready(5)


async def test_empty_answer(cluster: LocalCluster) -> None:
    # The name exists with an AAAA record only: an A question gets an empty answer.
    name = f"empty-hl.{cluster.namespace}.svc.{cluster.domain}"
    cluster.add_record(name, "AAAA", ["fd00::1"])
    async with make_client(cluster, "empty-hl", port=8080, ip_family="ipv4") as client:
        with anyio.fail_after(BOUND), pytest.raises(EmptyAnswer) as raised:
            await client.wait_ready(5)
        assert "empty answer" in str(raised.value)
        with pytest.raises(NoEndpointsAvailable, match="empty answer"):
            await client.get("/")


async def test_dns_unreachable(cluster: LocalCluster) -> None:
    cluster.stop_dns()
    async with make_client(cluster, discovery_timeout=0.5) as client:
        with anyio.fail_after(BOUND), pytest.raises(DnsUnreachable) as raised:
            await client.wait_ready(5)
    assert isinstance(raised.value, DiscoveryError)
    assert isinstance(raised.value.__cause__, DiscoveryError)


async def test_no_pod_passed_its_health_check(cluster: LocalCluster) -> None:
    for pod in cluster.pods("web"):
        cluster.fail(pod.name, 503)
    check = HealthCheck(interval=0.2, timeout=0.5, start_unhealthy=True)
    async with make_client(cluster, health=check) as client:
        with anyio.fail_after(BOUND), pytest.raises(NoHealthyPods, match="health check"):
            await client.wait_ready(5)


async def test_timeout_says_what_it_saw(cluster: LocalCluster) -> None:
    cluster.dns_set_mode("drop")  # no answer, and no round ends within the timeout
    async with make_client(cluster, discovery_timeout=5) as client:
        began = time.monotonic()
        with anyio.fail_after(BOUND), pytest.raises(NotReadyInTime, match="no DNS answer yet"):
            await client.wait_ready(0.3)
        assert time.monotonic() - began < 3


async def test_close_during_wait_ready_raises_client_closed(cluster: LocalCluster) -> None:
    cluster.dns_set_mode("drop")
    client = make_client(cluster, discovery_timeout=8)
    await client.__aenter__()
    runtime = _runtime(client)
    waiting = threading.Event()
    real = runtime.until_usable

    async def until_usable(within: float) -> NotReady | None:
        waiting.set()
        result: NotReady | None = await real(within)
        return result

    runtime.until_usable = until_usable
    outcome: dict[str, Any] = {}

    async def wait() -> None:
        try:
            await client.wait_ready(BOUND)
        except Exception as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await eventually(waiting.is_set, within=BOUND)
        closed_at = time.monotonic()
        with anyio.fail_after(BOUND):
            await client.aclose()
        await eventually(lambda: "ended" in outcome, within=BOUND)
    assert outcome["ended"] - closed_at < 3
    assert isinstance(outcome.get("error"), ClientClosed), outcome
