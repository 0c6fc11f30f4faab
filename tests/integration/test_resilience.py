"""Failures over a LocalCluster: Pods killed, failing, slow, resetting; DNS down; retry budget."""

from __future__ import annotations

import collections
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from headlesslb import (
    DiscoveryError,
    HealthCheck,
    NoEndpointsAvailable,
    OutlierPolicy,
    RefreshPolicy,
    RetryPolicy,
)
from headlesslb.testing import LocalCluster

from .helpers import eventually, library, make_client, served_by

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]


async def _load(
    client: Any, *, workers: int, requests: int, method: str = "GET", **kwargs: Any
) -> tuple[collections.Counter[str], list[BaseException]]:
    """``requests`` requests from ``workers`` concurrent workers: who served, what failed."""
    served: collections.Counter[str] = collections.Counter()
    errors: list[BaseException] = []
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            try:
                response = await client.request(method, "/load", **kwargs)
            except library().HTTPError as exc:
                errors.append(exc)
                continue
            if response.status_code != 200:
                errors.append(AssertionError(f"status {response.status_code}"))
            else:
                served[response.json()["pod"]] += 1

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    return served, errors


async def test_pod_killed_under_concurrent_load_fails_no_get(cluster: LocalCluster) -> None:
    cluster.slow("web-1", 0.05)  # so requests are in flight on web-1 when it dies
    async with make_client(cluster) as client:
        async with anyio.create_task_group() as tg:
            results: list[Any] = []

            async def run() -> None:
                results.append(await _load(client, workers=8, requests=400))

            tg.start_soon(run)
            await eventually(lambda: cluster.requests_served("web-1") >= 10, within=10)
            cluster.kill("web-1")
        served, errors = results[0]
        assert errors == []
        assert sum(served.values()) == 400
        assert not next(s for s in client.endpoints() if s.hostname == "web-1").healthy


async def test_posts_fail_only_if_they_may_have_reached_the_dead_pod(
    cluster: LocalCluster,
) -> None:
    cluster.slow("web-1", 0.3)
    web1 = cluster.pod("web-1")
    async with make_client(cluster) as client:
        async with anyio.create_task_group() as tg:
            results: list[Any] = []

            async def run() -> None:
                results.append(await _load(client, workers=6, requests=60, method="POST"))

            tg.start_soon(run)
            await eventually(lambda: cluster.requests_served("web-1") >= 2, within=10)
            cluster.kill("web-1")
        served, errors = results[0]
    assert errors, "POSTs in flight on the killed Pod must fail: they may have been processed"
    for error in errors:
        # The transport's own error, and only for requests that had reached web-1.
        assert isinstance(error, library().ReadError | library().RemoteProtocolError), repr(error)
        assert web1.ip in " ".join(getattr(error, "__notes__", [])), error
    assert sum(served.values()) + len(errors) == 60


async def test_pod_answering_503_is_ejected_and_users_never_see_it(cluster: LocalCluster) -> None:
    cluster.fail("web-1", 503)
    async with make_client(cluster) as client:
        counts = await served_by(client, 60)  # asserts every response is a 200
        assert "web-1" not in counts
        assert not next(s for s in client.endpoints() if s.hostname == "web-1").healthy
    assert cluster.requests_served("web-1") <= OutlierPolicy().consecutive_failures


async def test_slow_pod_is_cut_off_by_the_per_try_timeout(cluster: LocalCluster) -> None:
    cluster.slow("web-1", 5.0)
    retry = RetryPolicy(per_try_timeout=0.2, deadline=2.0)
    async with make_client(cluster, retry=retry) as client:
        for _ in range(9):
            with anyio.fail_after(retry.deadline + 1):  # the deadline holds, with slack
                response = await client.get("/")
            assert response.status_code == 200
            assert response.json()["pod"] != "web-1"


async def test_deadline_bounds_the_whole_request(cluster: LocalCluster) -> None:
    for pod in ("web-0", "web-1", "web-2"):
        cluster.slow(pod, 5.0)
    retry = RetryPolicy(per_try_timeout=0.3, deadline=0.5)
    async with make_client(cluster, retry=retry) as client:
        with anyio.fail_after(3), pytest.raises(library().TimeoutException):
            await client.get("/")


@pytest.mark.slow
async def test_dns_down_for_30_seconds(
    cluster: LocalCluster, client_flavor: str, anyio_backend: str
) -> None:
    # One row holds the full 30 s outage. The others run the very same discovery runtime (trio's
    # loop, or the sync client's thread) and check the same behaviour over a shorter outage, still
    # four times the longest error back-off, to keep the suite's time.
    outage = 30 if (client_flavor, anyio_backend) == ("async", "asyncio") else 8
    refresh = RefreshPolicy(max_error_backoff=2.0)
    async with make_client(cluster, refresh=refresh, discovery_timeout=0.5) as client:
        await served_by(client, 3)
        cluster.stop_dns()
        cluster.scale("web", 4)  # changes made while DNS is down
        failed_rounds_before = client.transport.refresher.rounds
        deadline = anyio.current_time() + outage
        requests = 0
        while anyio.current_time() < deadline:
            response = await client.get("/")
            assert response.status_code == 200
            assert response.json()["pod"] in {"web-0", "web-1", "web-2"}  # the stale set
            requests += 1
            await anyio.sleep(0.05)
        assert client.transport.refresher.rounds > failed_rounds_before  # it kept trying
        assert isinstance(client.transport.refresher.last_error, Exception)
        cluster.start_dns()

        async def new_pod_served() -> bool:
            return "web-3" in await served_by(client, 4)

        await eventually(new_pod_served, within=refresh.max_error_backoff * 1.1 + cluster.ttl + 1)
    assert requests > 100


async def test_all_pods_dead_goes_to_the_fallback(cluster: LocalCluster) -> None:
    cluster.add_deployment("spare", replicas=1, headless=None, lb="spare-lb")
    for pod in ("web-0", "web-1", "web-2"):
        cluster.kill(pod)
    async with make_client(cluster, fallback="spare-lb") as client:
        for method in ("GET", "POST"):  # the request never left: any method may fall back
            response = await client.request(method, "/")
            assert response.status_code == 200
            assert response.json()["pod"].startswith("spare-")
            info = response.extensions["headlesslb"]
            assert info["fallback"] is True
            pods_tried = [a["outcome"] for a in info["attempts"] if not a.get("fallback")]
            assert pods_tried and set(pods_tried) == {"refused"}


async def test_all_pods_dead_without_fallback_is_no_endpoints(cluster: LocalCluster) -> None:
    for pod in ("web-0", "web-1", "web-2"):
        cluster.kill(pod)
    async with make_client(cluster) as client:
        with anyio.fail_after(2), pytest.raises(NoEndpointsAvailable, match="accepted"):
            await client.get("/")
        with anyio.fail_after(2), pytest.raises(NoEndpointsAvailable):
            await client.post("/", json={"a": 1})


async def test_retry_budget_caps_total_attempts(cluster: LocalCluster) -> None:
    for pod in ("web-0", "web-1", "web-2"):
        cluster.fail(pod, 503)
    retry = RetryPolicy(max_attempts=3, budget_ratio=0.2, budget_min_per_second=5)
    requests = 150
    async with make_client(cluster, retry=retry) as client:
        start = anyio.current_time()
        exhausted = 0
        for _ in range(requests):
            response = await client.get("/")
            assert response.status_code == 503  # the last response, returned, not raised
            exhausted += response.extensions["headlesslb"]["retry_budget_exhausted"]
        elapsed = anyio.current_time() - start
    attempts = sum(cluster.requests_served(p) for p in ("web-0", "web-1", "web-2"))
    floor = retry.budget_min_per_second * (elapsed + 1)
    assert attempts <= requests * (1 + retry.budget_ratio) + floor, (attempts, elapsed)
    assert exhausted > 0


async def test_reset_mid_response(cluster: LocalCluster, client_flavor: str) -> None:
    cluster.reset("web-1", True)
    async with make_client(cluster) as client:
        assert "web-1" not in await served_by(client, 12)  # GETs are retried elsewhere

        async def attempts_of_failed_post(**kwargs: Any) -> str:
            # Pinned to web-1 so every attempt meets the reset; the notes count the attempts.
            with pytest.raises((library().RemoteProtocolError, library().ReadError)) as caught:
                await client.post("/", ordinal=1, **kwargs)
            return " ".join(caught.value.__notes__)

        assert "1 attempt(s)" in await attempts_of_failed_post(content=b"once")
        assert "3 attempt(s)" in await attempts_of_failed_post(content=b"safe", idempotent=True)

        async def body() -> AsyncIterator[bytes]:
            yield b"streamed"

        def sync_body() -> Iterator[bytes]:
            yield b"streamed"

        # A streamed body cannot be replayed once sent, idempotent or not.
        streamed = sync_body() if client_flavor in ("sync", "httpx2-sync") else body()
        assert "1 attempt(s)" in await attempts_of_failed_post(content=streamed, idempotent=True)


async def test_refused_connection_triggers_early_refresh(cluster: LocalCluster) -> None:
    slow_refresh = RefreshPolicy(min_interval=60, max_interval=60, early_min_interval=0.5)
    async with make_client(cluster, refresh=slow_refresh) as client:
        await served_by(client, 3)
        cluster.scale("web", 2)  # web-2 is gone: server and DNS record

        async def dropped() -> bool:
            await served_by(client, 3)
            return len(client.endpoints()) == 2

        await eventually(dropped, within=5)  # far sooner than the 60 s refresh period


async def test_health_checks_take_a_failing_pod_out_and_back(cluster: LocalCluster) -> None:
    check = HealthCheck(interval=0.1, timeout=0.5, unhealthy_threshold=2, healthy_threshold=2)
    async with make_client(cluster, health=check) as client:
        await served_by(client, 3)
        cluster.fail("web-2", 500)  # only /healthz tells: 500 is not a gateway error

        await eventually(lambda: not _healthy(client, "web-2"), within=5)
        cluster.reset_stats()
        assert "web-2" not in await served_by(client, 30)
        cluster.fail("web-2", None)
        await eventually(lambda: _healthy(client, "web-2"), within=5)


async def test_new_pods_wait_for_a_passing_probe(cluster: LocalCluster) -> None:
    check = HealthCheck(interval=30, timeout=0.5, start_unhealthy=True)
    cluster.fail("web-2", 503)
    async with make_client(cluster, health=check) as client:
        await eventually(lambda: _healthy(client, "web-0"), within=5)
        assert set(await served_by(client, 30)) == {"web-0", "web-1"}
        cluster.fail("web-2", None)
        cluster.scale("web", 4)  # the new Pod is probed at once, not an interval later
        await eventually(lambda: _healthy(client, "web-3"), within=cluster.ttl + 3)
        assert "web-3" in await served_by(client, 8)


def _healthy(client: Any, hostname: str) -> bool:
    return any(s.hostname == hostname and s.healthy for s in client.endpoints())


async def test_passing_health_check_ends_an_ejection_early(cluster: LocalCluster) -> None:
    check = HealthCheck(interval=0.1, timeout=0.5)
    long_ejection = OutlierPolicy(base_ejection=60, max_ejection=60)
    async with make_client(cluster, health=check, outlier=long_ejection) as client:
        cluster.kill("web-1")
        await served_by(client, 6)  # web-1 refuses and is ejected for a minute
        assert not _healthy(client, "web-1")
        cluster.restart("web-1")
        await eventually(lambda: _healthy(client, "web-1"), within=3)
        assert "web-1" in await served_by(client, 6)


async def test_flapping_records_cause_no_errors() -> None:
    with LocalCluster(ttl=1) as cluster:
        pods = [p.name for p in cluster.add_deployment("app", replicas=3, headless="app-hl")]
        flapper = pods[0]
        async with make_client(cluster, "app-hl") as client:
            for i in range(6):
                ready = i % 2 == 1
                cluster.set_ready(flapper, ready)  # in and out of DNS, server running throughout
                ok, _ = await client.transport.refresher.refresh()
                assert ok
                served = await served_by(client, 12)  # asserts every response is a 200
                assert (flapper in served) is ready
                assert len(client.endpoints()) == (3 if ready else 2)


async def test_pod_dropping_connections_is_retried_even_for_posts(cluster: LocalCluster) -> None:
    """A Pod that silently drops SYNs (a dead node) costs a connect timeout, and since the POST
    never left, it is retried on another Pod rather than failed as a read timeout."""
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.77", cluster.port))
    black_hole.listen(0)
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:  # fill the accept queue: further SYNs are dropped
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.77", cluster.port))
    cluster.add_record("web-hl.default.svc.cluster.local.", "A", "127.0.0.77")
    try:
        retry = RetryPolicy(per_try_timeout=0.3)
        async with make_client(cluster, port=cluster.port, retry=retry) as client:
            timed_out = 0
            for _ in range(12):
                response = await client.post("/", content=b"x")
                assert response.status_code == 200
                attempts = response.extensions["headlesslb"]["attempts"]
                timed_out += attempts[0].get("error") == "ConnectTimeout"
            assert timed_out >= 1
    finally:
        for sock in (black_hole, *fillers):
            sock.close()


async def test_fallback_lookups_with_dns_down_fail_together(cluster: LocalCluster) -> None:
    """With DNS silent, a burst of requests falling back shares one failed lookup instead of
    queueing one DNS timeout after another."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.78", 0))  # receives queries, never answers
    nameserver = f"127.0.0.78:{silent.getsockname()[1]}"
    try:
        async with make_client(
            cluster, nameservers=[nameserver], discovery_timeout=0.5, fallback="web-lb"
        ) as client:
            await client.transport.refresher.wait_ready()
            errors: list[BaseException] = []

            async def one() -> None:
                try:
                    await client.get("/")
                except DiscoveryError as exc:
                    errors.append(exc)

            with anyio.fail_after(2.5):  # six lookups in a row would take 3 s
                async with anyio.create_task_group() as tg:
                    for _ in range(6):
                        tg.start_soon(one)
            assert len(errors) == 6
    finally:
        silent.close()
