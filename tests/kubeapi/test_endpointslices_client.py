"""The clients on EndpointSlice discovery: real HTTP Pods (LocalCluster, on 127.0.x.y), slices
on the kubeapi bed pointing at them, requests through the async and the sync client.

The point of push discovery: a Pod marked terminating gets no new request once the client has
seen the MODIFIED event, while a request in flight to it finishes; a new Pod gets requests
without waiting for a TTL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

import headlesslb.sync
from headlesslb import (
    DnsUnreachable,
    EmptyAnswer,
    EndpointSlices,
    EndpointStatus,
    HeadlessClient,
    KubeAPIConfig,
    NoHealthyPods,
    zone_shares,
)
from headlesslb.telemetry.prometheus import PrometheusMetrics
from headlesslb.testing import LocalCluster, PodInfo
from headlesslb.testing._kubeapi import Json, KubeAPI, KubeAPIError, endpoint, endpoint_port

pytestmark = pytest.mark.kubeapi
SERVICE = "web"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as c:
        yield c


@pytest.fixture
def pods(cluster: LocalCluster) -> Iterator[list[PodInfo]]:
    made = cluster.add_deployment(SERVICE, 3, headless=None, lb=None)
    cluster.reset_stats()
    yield made
    cluster.delete_workload(SERVICE)


def entries(pods: Sequence[PodInfo], terminating: Sequence[str] = ()) -> list[Json]:
    return [
        endpoint(
            p.ip,
            ready=p.name not in terminating,
            serving=True,
            terminating=p.name in terminating,
            target_ref={"kind": "Pod", "name": p.name},
        )
        for p in pods
    ]


def options(bed: KubeAPI, namespace: str) -> dict[str, Any]:
    api = KubeAPIConfig(bed.base_url, token=bed.token, ca_file=str(bed.ca_file))
    return {"port": "http", "namespace": namespace, "discovery": EndpointSlices(api=api)}


def status(statuses: Sequence[EndpointStatus], pod: PodInfo) -> EndpointStatus | None:
    return next((s for s in statuses if s.ip == pod.ip), None)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_terminating_pod_drains(
    kubeapi: KubeAPI, namespace: str, cluster: LocalCluster, pods: list[PodInfo]
) -> None:
    port = pods[0].port
    await anyio.to_thread.run_sync(
        lambda: kubeapi.create_slice(
            namespace,
            "web-a",
            service=SERVICE,
            endpoints=entries(pods),
            ports=[endpoint_port(port, name="http")],
        )
    )
    victim, *others = pods
    async with HeadlessClient(SERVICE, **options(kubeapi, namespace)) as client:
        for _ in range(30):
            assert (await client.get("/")).status_code == 200
        assert all(cluster.requests_served(p.name) == 10 for p in pods)

        # A request in flight to the victim when it turns terminating finishes.
        cluster.slow(victim.name, 1.0)
        results: list[int] = []

        async def one() -> None:
            results.append((await client.get("/")).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
            with anyio.fail_after(10):
                while (s := status(client.endpoints(), victim)) is None or not s.in_flight:
                    await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(
                lambda: kubeapi.set_endpoints(
                    namespace, "web-a", entries(pods, terminating=[victim.name])
                )
            )
            with anyio.fail_after(10):
                while not (s := status(client.endpoints(), victim)) or not s.terminating:
                    await anyio.sleep(0.01)
            assert s.draining and s.in_flight == 1
            # Seen: from here on, nothing new goes to the victim.
            before = cluster.requests_served(victim.name)
            for _ in range(60):
                assert (await client.get("/")).status_code == 200
        assert results == [200, 200, 200]
        assert cluster.requests_served(victim.name) == before
        assert sum(cluster.requests_served(p.name) for p in others) == 20 + 2 + 60
        drained = status(client.endpoints(), victim)
        assert drained is not None and drained.in_flight == 0 and drained.terminating

        # The Pod leaves the slice; a new one is served as soon as the slice says it is ready.
        new = cluster.scale(SERVICE, 4)[-1]
        await anyio.to_thread.run_sync(
            lambda: kubeapi.set_endpoints(namespace, "web-a", entries([*others, new]))
        )
        with anyio.fail_after(10):
            while status(client.endpoints(), new) is None:
                await anyio.sleep(0.01)
        assert status(client.endpoints(), victim) is None
        for _ in range(30):
            assert (await client.get("/")).status_code == 200
        assert cluster.requests_served(new.name) == 10


def test_sync_client_follows_the_slices(
    kubeapi: KubeAPI, namespace: str, cluster: LocalCluster, pods: list[PodInfo]
) -> None:
    port = pods[0].port
    kubeapi.create_slice(
        namespace,
        "web-a",
        service=SERVICE,
        endpoints=entries(pods[:2]),
        ports=[endpoint_port(port, name="http")],
    )
    victim, keeper, late = pods
    with headlesslb.sync.HeadlessClient(SERVICE, **options(kubeapi, namespace)) as client:
        for _ in range(20):
            assert client.get("/").status_code == 200
        assert cluster.requests_served(late.name) == 0
        kubeapi.create_slice(
            namespace,
            "web-b",
            service=SERVICE,
            endpoints=entries([late]),
            ports=[endpoint_port(port, name="http")],
        )
        wait_for(lambda: status(client.endpoints(), late) is not None)
        kubeapi.set_endpoints(namespace, "web-a", entries(pods[:2], terminating=[victim.name]))
        wait_for(lambda: getattr(status(client.endpoints(), victim), "terminating", False))
        before = cluster.requests_served(victim.name)
        for _ in range(40):
            assert client.get("/").status_code == 200
        assert cluster.requests_served(victim.name) == before
        assert cluster.requests_served(late.name) == 20
        assert cluster.requests_served(keeper.name) == 10 + 20


@pytest.fixture
def nine(cluster: LocalCluster) -> Iterator[list[PodInfo]]:
    made = cluster.add_deployment("zoned", 9, headless=None, lb=None)
    cluster.reset_stats()
    yield made
    cluster.delete_workload("zoned")


def zoned(pods: Sequence[PodInfo], not_ready: Sequence[PodInfo] = ()) -> list[Json]:
    return [
        endpoint(p.ip, ready=p not in not_ready, zone="abc"[i // 3]) for i, p in enumerate(pods)
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_zone_aware_stays_local_then_spills(
    kubeapi: KubeAPI, namespace: str, cluster: LocalCluster, nine: list[PodInfo]
) -> None:
    port = nine[0].port

    def slices(not_ready: Sequence[PodInfo] = ()) -> None:
        body = zoned(nine, not_ready)
        try:
            kubeapi.set_endpoints(namespace, "zoned-a", body)
        except KubeAPIError:
            kubeapi.create_slice(
                namespace,
                "zoned-a",
                service="zoned",
                endpoints=body,
                ports=[endpoint_port(port, name="http")],
            )

    await anyio.to_thread.run_sync(slices)
    api = KubeAPIConfig(kubeapi.base_url, token=kubeapi.token, ca_file=str(kubeapi.ca_file))
    local = nine[:3]

    async def shares(count: int) -> dict[str | None, float]:
        before = {p.name: cluster.requests_served(p.name) for p in nine}
        for _ in range(count):
            assert (await client.get("/")).status_code == 200
        served = {p.name: cluster.requests_served(p.name) - before[p.name] for p in nine}
        by_zone: dict[str | None, float] = {}
        for i, p in enumerate(nine):
            by_zone["abc"[i // 3]] = by_zone.get("abc"[i // 3], 0) + served[p.name] / count
        return by_zone

    async def until_members(count: int) -> None:
        with anyio.fail_after(10):
            while len(client.endpoints()) != count:
                await anyio.sleep(0.01)

    discovery = EndpointSlices(api=api, zone="a")
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    async with HeadlessClient(
        "zoned", port="http", namespace=namespace, discovery=discovery, observers=[metrics]
    ) as client:
        await until_members(9)
        assert (await shares(90))["a"] == 1.0
        assert zone_shares(client.endpoints())["a"] == 1.0
        # One local Pod of three not ready: the two left carry the zone (overload 1.33).
        await anyio.to_thread.run_sync(slices, local[:1])
        await until_members(8)
        assert (await shares(90))["a"] == 1.0
        # Two of three: spill over every ready Pod, the local one keeping its 1/7.
        await anyio.to_thread.run_sync(slices, local[:2])
        await until_members(7)
        spilled = await shares(140)
        assert spilled == {"a": 20 / 140, "b": 60 / 140, "c": 60 / 140}
        # The metrics count the same attempts per zone.
        service = f"zoned.{namespace}.svc.cluster.local"
        zone_attempts = {
            zone: registry.get_sample_value(
                "headlesslb_zone_attempts_total", {"service": service, "zone": zone}
            )
            for zone in "abc"
        }
        assert zone_attempts == {"a": 90 + 90 + 20, "b": 60, "c": 60}
        # Back: local again.
        await anyio.to_thread.run_sync(slices)
        await until_members(9)
        assert (await shares(90))["a"] == 1.0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_wait_ready_says_why_in_endpointslice_words(kubeapi: KubeAPI, namespace: str) -> None:
    opts = options(kubeapi, namespace)
    async with HeadlessClient("nothing", **opts) as client:
        with pytest.raises(EmptyAnswer, match="no ready Pod in the Service's EndpointSlices"):
            await client.wait_ready(timeout=5)
    await anyio.to_thread.run_sync(
        lambda: kubeapi.create_slice(
            namespace,
            "leaving-a",
            service="leaving",
            endpoints=[endpoint("10.20.0.1", ready=False, serving=True, terminating=True)],
            ports=[endpoint_port(8080, name="http")],
        )
    )
    async with HeadlessClient("leaving", **opts) as client:
        with pytest.raises(NoHealthyPods, match="1 in its EndpointSlices, every one terminating"):
            await client.wait_ready(timeout=5)
    user = f"nobody-{namespace}"
    token = await anyio.to_thread.run_sync(kubeapi.add_user, user, "get")
    await anyio.to_thread.run_sync(kubeapi.deny, user)
    api = KubeAPIConfig(kubeapi.base_url, token=token, ca_file=str(kubeapi.ca_file))
    denied = {**opts, "discovery": EndpointSlices(api=api)}
    async with HeadlessClient("leaving", **denied) as client:
        with pytest.raises(DnsUnreachable, match=r"the Kubernetes API could not be asked.*403"):
            await client.wait_ready(timeout=5)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_httpx2_client_on_endpointslices(
    kubeapi: KubeAPI, namespace: str, cluster: LocalCluster, pods: list[PodInfo]
) -> None:
    httpx2_client = pytest.importorskip("headlesslb.httpx2").HeadlessClient
    await anyio.to_thread.run_sync(
        lambda: kubeapi.create_slice(
            namespace,
            "web-a",
            service=SERVICE,
            endpoints=entries(pods, terminating=[pods[0].name]),
            ports=[endpoint_port(pods[0].port, name="http")],
        )
    )
    async with httpx2_client(SERVICE, **options(kubeapi, namespace)) as client:
        for _ in range(20):
            assert (await client.get("/")).status_code == 200
    assert cluster.requests_served(pods[0].name) == 0
    assert [cluster.requests_served(p.name) for p in pods[1:]] == [10, 10]
