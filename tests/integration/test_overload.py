"""Overload over a LocalCluster: rate-limited Pods (429 / 503 + Retry-After), client throttling,
bounded-load sharding; async and sync clients alike."""

from __future__ import annotations

import collections
import time

import anyio
import httpx
import pytest

from headlesslb import (
    AdaptiveThrottle,
    ConsistentHash,
    EndpointStatus,
    HedgePolicy,
    OutlierPolicy,
    RetryPolicy,
    Throttled,
)
from headlesslb.testing import LocalCluster
from tests.hostile.raw_pod import RawPod

from .helpers import SyncAsAsync, make_client

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]


async def test_a_rate_limited_pod_is_held_off_and_its_429s_retried_elsewhere(
    cluster: LocalCluster,
) -> None:
    cluster.rate_limit("web-1", 0.1, burst=1, retry_after=30)  # one request, then 429s
    async with make_client(cluster) as client:
        retried = 0
        for _ in range(30):
            response = await client.get("/limited")
            assert response.status_code == 200
            attempts = response.extensions["headlesslb"]["attempts"]
            if attempts[0].get("status") == 429:
                retried += 1
                assert attempts[0]["hostname"] == "web-1" and len(attempts) == 2
        assert retried == 1  # one 429, then web-1 is held off for its Retry-After
        web1 = next(s for s in client.endpoints() if s.hostname == "web-1")
        assert web1.hold_off_remaining is not None and web1.healthy
    assert cluster.stats()["rejected"]["web-1"] == 1
    assert cluster.requests_served("web-1") == 2


async def test_503_with_retry_after_is_a_rejection_not_an_ejection(cluster: LocalCluster) -> None:
    cluster.rate_limit("web-0", 0.1, burst=1, status=503, retry_after=1)
    policy = RetryPolicy(max_hold_off=0)  # no hold-off: web-0 keeps getting its share
    async with make_client(cluster, retry=policy) as client:
        for _ in range(30):
            assert (await client.get("/limited")).status_code == 200
        web0 = next(s for s in client.endpoints() if s.hostname == "web-0")
        assert web0.healthy and web0.failures == 0  # five 503s in a row would have ejected it
    assert cluster.stats()["rejected"]["web-0"] >= 5


async def test_a_post_answered_429_is_not_retried(cluster: LocalCluster) -> None:
    for pod in ("web-0", "web-1", "web-2"):
        cluster.rate_limit(pod, 0.1, burst=1)
    async with make_client(cluster) as client:
        statuses = collections.Counter(
            [(await client.post("/write", content=b"x")).status_code for _ in range(6)]
        )
    assert statuses == {200: 3, 429: 3}
    assert sum(cluster.stats()["pods"].values()) == 6


async def test_when_every_pod_rejects_the_throttle_sheds_locally(cluster: LocalCluster) -> None:
    for pod in ("web-0", "web-1", "web-2"):
        cluster.rate_limit(pod, 0.1, burst=1)
    throttle = AdaptiveThrottle(min_requests=5)
    async with make_client(cluster, throttle=throttle, retry=RetryPolicy(hold_off=0)) as client:
        shed = 0
        for _ in range(60):
            try:
                await client.get("/limited")
            except Throttled as exc:
                assert isinstance(exc, httpx.TransportError) and exc.probability > 0
                shed += 1
    reached = sum(cluster.stats()["pods"].values())
    assert shed > 20
    assert reached < 60  # no retry storm: fewer requests reached the Pods than were asked for


async def test_bounded_load_spreads_a_hot_key_strict_affinity_does_not(
    cluster: LocalCluster,
) -> None:
    for pod in ("web-0", "web-1", "web-2"):
        cluster.slow(pod, 0.3)

    async def pods_serving(sharding: ConsistentHash) -> set[str]:
        served: set[str] = set()
        async with make_client(cluster, sharding=sharding) as client:
            await client.get("/warm", key="hot")

            async def one() -> None:
                served.add((await client.get("/hot", key="hot")).json()["pod"])

            async with anyio.create_task_group() as tg:
                for _ in range(9):
                    tg.start_soon(one)
        return served

    assert len(await pods_serving(ConsistentHash())) == 1
    assert len(await pods_serving(ConsistentHash(balance_factor=1.25))) == 3


async def test_a_hedge_to_another_pod_beats_a_slow_one_and_the_loser_is_cancelled(
    cluster: LocalCluster, client_flavor: str
) -> None:
    cluster.slow("web-1", 1.0)
    slow = cluster.pod("web-1")
    hedge = HedgePolicy(delay=0.02)
    async with make_client(cluster, hedge=hedge, retry=RetryPolicy(budget_ratio=1.0)) as client:
        # Named, not only generated, so that this test's sync row does build the sync client.
        assert isinstance(client, SyncAsAsync) == (client_flavor == "sync")
        sender = client.transport._sender
        hedged = 0
        for _ in range(6):
            sent = time.monotonic()
            response = await client.get("/hedged")
            assert response.status_code == 200
            report = response.extensions["headlesslb"]
            assert report["hostname"] != "web-1"  # the slow Pod never wins
            first = report["attempts"][0]
            if first["hostname"] == "web-1":
                hedged += 1
                assert first["error"] == "cancelled" and len(report["attempts"]) == 2
                # The loser is stopped, not left blocked (the sync shell's worker thread too):
                # its send ends, releasing the slow Pod's address, before that Pod answers.
                while (slow.ip, slow.port) in sender._active:
                    assert time.monotonic() < sent + 1.0, "the losing attempt ran on"
                    await anyio.sleep(0.005)
        assert hedged >= 1
        assert all(s.in_flight == 0 for s in client.endpoints())  # the losers were released


async def test_a_pod_that_never_answers_is_ejected_though_it_only_ever_loses_races(
    cluster: LocalCluster,
) -> None:
    # Two healthy Pods and one that accepts and never answers. Every first attempt to it loses
    # to a hedge; when a lost race counted as "cancelled" it was never ejected.
    cluster.scale("web", 2)
    with RawPod("silent", host="127.77.10.1", name="mute") as silent:
        target = f"mute.{cluster.service('web-hl').fqdn}"
        cluster.add_record(target, "A", silent.ip)
        cluster.add_record(cluster.srv_name("web-hl"), "SRV", f"0 100 {silent.port} {target}")
        hedge = HedgePolicy(delay=0.05)
        async with make_client(cluster, hedge=hedge, retry=RetryPolicy(budget_ratio=1.0)) as client:

            def mute() -> EndpointStatus | None:
                return next((s for s in client.endpoints() if s.hostname == "mute"), None)

            lost = 0
            for _ in range(40):  # five lost races eject it: about 15 requests round-robin
                response = await client.get("/hedged")
                assert response.status_code == 200
                report = response.extensions["headlesslb"]
                assert report["hostname"] != "mute"
                first = report["attempts"][0]
                if first["hostname"] == "mute":  # the loser's record comes first
                    assert first["error"] == "cancelled"
                    # A first attempt to it lost to its hedge: a timeout. (On a loaded machine a
                    # hedge to it may also lose to a slow first attempt: that says nothing.)
                    lost += first["outcome"] == "timeout"
                status = mute()
                if status is not None and not status.healthy:
                    break
            status = mute()
            assert status is not None and not status.healthy, f"not ejected after {lost} lost races"
            assert status.ejection_remaining is not None and status.in_flight == 0
            assert lost == OutlierPolicy().consecutive_failures
