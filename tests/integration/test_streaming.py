"""Streamed responses over a LocalCluster (the echo app's ``/stream``: server-sent events).

A stream counts as in flight on its Pod until it is closed; once its headers reached the caller
nothing is retried or hedged; a stream the caller drops without closing is released (its Pod's
in-flight count, its connection, a departed Pod's pool) when it is garbage-collected, and the
client says so once. Async clients on asyncio and trio, and the sync client; both the
``HeadlessClient`` and a bare ``HeadlessTransport`` under httpx's own client.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

import headlesslb.sync
from headlesslb import EndpointStatus, HeadlessClient, HeadlessTransport, HedgePolicy
from headlesslb.events import Event, StreamAbandoned
from headlesslb.testing import LocalCluster

from .helpers import eventually

LONG = "/stream?chunks=400&interval=0.05"
"""A stream of 20 s: longer than any test keeps it open."""

ABANDONED = "a streamed response was garbage-collected without being closed"


def _kwargs(cluster: LocalCluster, **kwargs: Any) -> dict[str, Any]:
    return {
        "port": "http",
        "cluster_domain": cluster.domain,
        **cluster.client_kwargs(),
        **kwargs,
    }


def _in_flight(endpoints: list[EndpointStatus]) -> dict[str | None, int]:
    return {s.hostname: s.in_flight for s in endpoints}


def _pod_of(line: str) -> str:
    assert line.startswith("data: "), line
    pod: str = json.loads(line[6:])["pod"]
    return pod


async def _next_pod(lines: AsyncIterator[str]) -> str:
    """The Pod of the stream's next event (events are separated by blank lines)."""
    async for line in lines:
        if line:
            return _pod_of(line)
    raise AssertionError("the stream ended")


def _next_pod_sync(lines: Iterator[str]) -> str:
    for line in lines:
        if line:
            return _pod_of(line)
    raise AssertionError("the stream ended")


def _served(cluster: LocalCluster) -> int:
    return sum(cluster.requests_served(p.name) for p in cluster.pods("web"))


def _collected(check: Callable[[], bool]) -> Callable[[], bool]:
    """``check``, after a garbage collection: a half-read body is first closed by its async
    generator's finalizer (asyncio, trio), which leaves it in cyclic garbage."""

    def after_gc() -> bool:
        gc.collect()
        return check()

    return after_gc


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if ABANDONED in r.getMessage()]


# -- async: HeadlessClient, and HeadlessTransport under httpx.AsyncClient -------------------------
class _Async:
    """One async client, used the way ``via`` says: ``HeadlessClient.stream`` or an
    ``httpx.AsyncClient`` over a ``HeadlessTransport`` (``send(..., stream=True)``)."""

    def __init__(self, http: httpx.AsyncClient, transport: HeadlessTransport, via: str) -> None:
        self.http = http
        self.transport = transport
        self.via = via
        self.client: HeadlessClient | None = None

    def endpoints(self) -> list[EndpointStatus]:
        return self.transport.endpoints()

    def request(self, path: str, **options: Any) -> httpx.Request:
        if self.client is not None:
            return self.client.build_request("GET", path, **options)
        extensions = {"headlesslb": options} if options else {}
        return self.http.build_request("GET", path, extensions=extensions)

    @contextlib.asynccontextmanager
    async def stream(self, path: str, **options: Any) -> AsyncIterator[httpx.Response]:
        if self.client is not None:
            async with self.client.stream("GET", path, **options) as response:
                yield response
            return
        response = await self.unclosed(path, **options)
        try:
            yield response
        finally:
            await response.aclose()

    async def unclosed(self, path: str, **options: Any) -> httpx.Response:
        """A streamed response nobody closes (``send(stream=True)``)."""
        return await self.http.send(self.request(path, **options), stream=True)


@contextlib.asynccontextmanager
async def _async_client(cluster: LocalCluster, via: str, **kwargs: Any) -> AsyncIterator[_Async]:
    if via == "client":
        async with HeadlessClient("web-hl", **_kwargs(cluster, **kwargs)) as client:
            used = _Async(client.http, client.transport, via)
            used.client = client
            yield used
    else:
        transport = HeadlessTransport("web-hl", **_kwargs(cluster, **kwargs))
        async with httpx.AsyncClient(transport=transport, base_url="http://web-hl") as http:
            yield _Async(http, transport, via)


VIA = pytest.mark.parametrize("via", ["client", "transport"])


@pytest.mark.anyio
@VIA
async def test_a_stream_is_in_flight_until_it_is_closed(cluster: LocalCluster, via: str) -> None:
    async with _async_client(cluster, via, picker="least_request") as client:
        async with client.stream(LONG) as response:
            lines = response.aiter_lines()
            pod = await _next_pod(lines)
            for _ in range(3):  # all along the stream, not only at its start
                assert _in_flight(client.endpoints()) == {
                    p: int(p == pod) for p in ("web-0", "web-1", "web-2")
                }
                await anyio.sleep(0.1)
            assert await _next_pod(lines) == pod
        assert _in_flight(client.endpoints()) == {"web-0": 0, "web-1": 0, "web-2": 0}
        assert client.transport._sender._active == {}


@pytest.mark.anyio
@VIA
async def test_least_request_avoids_the_pod_with_an_open_stream(
    cluster: LocalCluster, via: str
) -> None:
    async with _async_client(cluster, via, picker="least_request") as client:
        async with client.stream(LONG, ordinal=0) as response:
            assert response.headers["x-pod"] == "web-0"
            for _ in range(30):
                answer = await client.http.get("/")
                assert answer.json()["pod"] != "web-0"
        assert cluster.requests_served("web-0") == 1


@pytest.mark.anyio
@VIA
async def test_peak_ewma_measures_a_stream_to_its_headers(cluster: LocalCluster, via: str) -> None:
    async with _async_client(cluster, via, picker="peak_ewma") as client:
        async with client.stream("/stream?chunks=11&interval=0.1", ordinal=0) as response:
            assert len([line async for line in response.aiter_lines() if line]) == 11
        latency = {s.hostname: s.ewma_latency for s in client.endpoints()}["web-0"]
        assert latency is not None and latency < 0.5  # its headers' time, not the stream's 1 s


@pytest.mark.anyio
@VIA
async def test_a_reset_mid_stream_reaches_the_caller_and_is_not_retried(
    cluster: LocalCluster, via: str
) -> None:
    cluster.reset_stats()
    async with _async_client(cluster, via) as client:
        async with client.stream("/stream?chunks=10&interval=0.02&reset_after=3") as response:
            report = response.extensions["headlesslb"]
            pod = response.headers["x-pod"]
            lines = []
            with pytest.raises(httpx.TransportError):
                async for line in response.aiter_lines():
                    lines.append(line)
        assert [_pod_of(line) for line in lines if line] == [pod] * 3
        assert len(report["attempts"]) == 1
        assert _served(cluster) == 1  # not retried, on this Pod or another
        status = {s.hostname: s for s in client.endpoints()}[pod]
        assert status.failures == 1 and status.in_flight == 0  # reported: a reset


@pytest.mark.anyio
@VIA
async def test_a_hedged_stream_is_not_raced_once_delivered(cluster: LocalCluster, via: str) -> None:
    cluster.reset_stats()
    hedge = HedgePolicy(delay=0.3)
    async with _async_client(cluster, via, hedge=hedge, picker="least_request") as client:
        started = time.monotonic()
        async with client.stream("/stream?chunks=8&interval=0.1") as response:
            report = response.extensions["headlesslb"]
            lines = [line async for line in response.aiter_lines() if line]
        assert time.monotonic() - started > hedge.delay  # the body outlived the hedge delay
        assert len(lines) == 8
        # Every attempt was made before the headers were delivered (the report was complete
        # then): none raced the stream afterwards. (A first attempt slower than the delay
        # was legitimately hedged before delivery.)
        assert _served(cluster) == len(report["attempts"])
        assert _in_flight(client.endpoints()) == {"web-0": 0, "web-1": 0, "web-2": 0}


@pytest.mark.anyio
@VIA
@pytest.mark.parametrize("read", [0, 2], ids=["unread", "half-read"])
async def test_an_abandoned_stream_is_released_when_collected(
    cluster: LocalCluster, via: str, read: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headlesslb")
    caplog.set_level(logging.DEBUG, logger="headlesslb.streams")
    async with _async_client(cluster, via, picker="least_request") as client:
        sender = client.transport._sender
        for _ in range(2):
            response = await client.unclosed(LONG)
            assert sum(_in_flight(client.endpoints()).values()) == 1
            if read:
                lines = response.aiter_lines()
                for _ in range(read):
                    await _next_pod(lines)
                del lines
            del response  # never closed
            gc.collect()
            await eventually(
                _collected(
                    lambda: not any(_in_flight(client.endpoints()).values()) and not sender._active
                ),
                within=5,
            )
        assert sorted(_in_flight(client.endpoints()).values()) == [0, 0, 0]
    warnings = _warnings(caplog)
    # Once per client: the next abandoned stream is a DEBUG line.
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.DEBUG]
    assert warnings[0].name == "headlesslb.streams"
    message = warnings[0].getMessage()
    assert message.startswith("GET http://web-hl") and "/stream?chunks=400" in message


@pytest.mark.anyio
async def test_a_stream_dropped_in_another_thread_is_released_on_the_loop(
    cluster: LocalCluster,
) -> None:
    threads: list[int] = []

    def observer(event: Event) -> None:
        if isinstance(event, StreamAbandoned):
            threads.append(threading.get_ident())

    async with _async_client(cluster, "client", observers=[observer]) as client:
        held = [await client.unclosed(LONG)]
        await anyio.to_thread.run_sync(held.clear)  # its last reference dies in a worker thread
        await eventually(
            _collected(lambda: not any(_in_flight(client.endpoints()).values())), within=5
        )
        assert not client.transport._sender._active
    assert threads == [threading.get_ident()]  # released on the loop's thread, not the worker's


@pytest.fixture
def draining_cluster() -> Iterator[LocalCluster]:
    """StatefulSet ``web`` ×3 whose not-ready Pods leave DNS (they keep serving)."""
    with LocalCluster(ttl=1) as c:
        c.add_statefulset("web", replicas=3, publish_not_ready=False)
        yield c


@pytest.mark.anyio
@VIA
async def test_a_departed_pods_pool_closes_once_its_abandoned_stream_is_collected(
    draining_cluster: LocalCluster, via: str
) -> None:
    cluster = draining_cluster
    pod = cluster.pod("web-2")
    address = (pod.ip, pod.port)
    async with _async_client(cluster, via) as client:
        sender = client.transport._sender
        response = await client.unclosed(LONG, ordinal=2)
        cluster.set_ready("web-2", False)
        await eventually(lambda: "web-2" not in _in_flight(client.endpoints()), within=5)
        await anyio.sleep(0.1)
        assert address in sender.addresses  # its stream is open: the pool stays
        del response
        gc.collect()
        await eventually(_collected(lambda: address not in sender.addresses), within=5)
        assert not sender._active


# -- sync ------------------------------------------------------------------------------------------
class _Sync:
    """The sync twin of :class:`_Async`."""

    def __init__(self, http: httpx.Client, transport: Any, client: Any = None) -> None:
        self.http = http
        self.transport = transport
        self.client = client

    def endpoints(self) -> list[EndpointStatus]:
        result: list[EndpointStatus] = self.transport.endpoints()
        return result

    def request(self, path: str, **options: Any) -> httpx.Request:
        if self.client is not None:
            request: httpx.Request = self.client.build_request("GET", path, **options)
            return request
        extensions = {"headlesslb": options} if options else {}
        return self.http.build_request("GET", path, extensions=extensions)

    @contextlib.contextmanager
    def stream(self, path: str, **options: Any) -> Iterator[httpx.Response]:
        if self.client is not None:
            with self.client.stream("GET", path, **options) as response:
                yield response
            return
        with contextlib.closing(self.unclosed(path, **options)) as response:
            yield response

    def unclosed(self, path: str, **options: Any) -> httpx.Response:
        return self.http.send(self.request(path, **options), stream=True)


@contextlib.contextmanager
def _sync_client(cluster: LocalCluster, via: str, **kwargs: Any) -> Iterator[_Sync]:
    if via == "client":
        with headlesslb.sync.HeadlessClient("web-hl", **_kwargs(cluster, **kwargs)) as client:
            yield _Sync(client.http, client.transport, client)
    else:
        transport = headlesslb.sync.HeadlessTransport("web-hl", **_kwargs(cluster, **kwargs))
        with httpx.Client(transport=transport, base_url="http://web-hl") as http:
            yield _Sync(http, transport)


def _until(check: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.02)


@VIA
def test_sync_a_stream_is_in_flight_until_it_is_closed(cluster: LocalCluster, via: str) -> None:
    with _sync_client(cluster, via, picker="least_request") as client:
        with client.stream(LONG) as response:
            lines = response.iter_lines()
            pod = _next_pod_sync(lines)
            for _ in range(3):
                assert _in_flight(client.endpoints()) == {
                    p: int(p == pod) for p in ("web-0", "web-1", "web-2")
                }
                time.sleep(0.1)
            assert _next_pod_sync(lines) == pod
            for _ in range(30):  # least-request sends nothing more to the streaming Pod
                assert client.http.get("/").json()["pod"] != pod
        assert _in_flight(client.endpoints()) == {"web-0": 0, "web-1": 0, "web-2": 0}
        assert client.transport._sender._active == {}
    assert cluster.requests_served(pod) == 1


@VIA
def test_sync_peak_ewma_measures_a_stream_to_its_headers(cluster: LocalCluster, via: str) -> None:
    with _sync_client(cluster, via, picker="peak_ewma") as client:
        with client.stream("/stream?chunks=11&interval=0.1", ordinal=0) as response:
            assert len([line for line in response.iter_lines() if line]) == 11
        latency = {s.hostname: s.ewma_latency for s in client.endpoints()}["web-0"]
        assert latency is not None and latency < 0.5


@VIA
def test_sync_a_reset_mid_stream_reaches_the_caller_and_is_not_retried(
    cluster: LocalCluster, via: str
) -> None:
    cluster.reset_stats()
    with _sync_client(cluster, via) as client:
        with client.stream("/stream?chunks=10&interval=0.02&reset_after=3") as response:
            report = response.extensions["headlesslb"]
            pod = response.headers["x-pod"]
            lines = []
            with pytest.raises(httpx.TransportError):
                for line in response.iter_lines():
                    lines.append(line)
        assert [_pod_of(line) for line in lines if line] == [pod] * 3
        assert len(report["attempts"]) == 1
        assert _served(cluster) == 1
        status = {s.hostname: s for s in client.endpoints()}[pod]
        assert status.failures == 1 and status.in_flight == 0


@VIA
def test_sync_a_hedged_stream_is_not_raced_once_delivered(cluster: LocalCluster, via: str) -> None:
    cluster.reset_stats()
    hedge = HedgePolicy(delay=0.3)
    with _sync_client(cluster, via, hedge=hedge, picker="least_request") as client:
        started = time.monotonic()
        with client.stream("/stream?chunks=8&interval=0.1") as response:
            report = response.extensions["headlesslb"]
            lines = [line for line in response.iter_lines() if line]
        assert time.monotonic() - started > hedge.delay
        assert len(lines) == 8
        assert _served(cluster) == len(report["attempts"])
        assert _in_flight(client.endpoints()) == {"web-0": 0, "web-1": 0, "web-2": 0}


@VIA
@pytest.mark.parametrize("read", [0, 2], ids=["unread", "half-read"])
def test_sync_an_abandoned_stream_is_released_when_collected(
    cluster: LocalCluster, via: str, read: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="headlesslb")
    caplog.set_level(logging.DEBUG, logger="headlesslb.streams")
    with _sync_client(cluster, via, picker="least_request") as client:
        sender = client.transport._sender
        for _ in range(2):
            response = client.unclosed(LONG)
            assert sum(_in_flight(client.endpoints()).values()) == 1
            if read:
                lines = response.iter_lines()
                for _ in range(read):
                    _next_pod_sync(lines)
                del lines  # closes the generators: the attempt ends, but not the sender's count
            del response
            gc.collect()
            _until(
                _collected(
                    lambda: not any(_in_flight(client.endpoints()).values()) and not sender._active
                ),
                within=5,
            )
            # Its connection was closed, not left half-read in httpcore's pool.
            _until(lambda: not any(p.connections for p in sender._pools.values()), within=5)
    warnings = _warnings(caplog)
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.DEBUG]
    message = warnings[0].getMessage()
    assert message.startswith("GET http://web-hl") and "/stream?chunks=400" in message


@VIA
def test_sync_a_departed_pods_pool_closes_once_its_abandoned_stream_is_collected(
    draining_cluster: LocalCluster, via: str
) -> None:
    cluster = draining_cluster
    pod = cluster.pod("web-2")
    address = (pod.ip, pod.port)
    with _sync_client(cluster, via) as client:
        sender = client.transport._sender
        response = client.unclosed(LONG, ordinal=2)
        cluster.set_ready("web-2", False)
        _until(lambda: "web-2" not in _in_flight(client.endpoints()), within=5)
        time.sleep(0.1)
        assert address in sender.addresses
        del response
        gc.collect()
        _until(_collected(lambda: address not in sender.addresses), within=5)
        assert not sender._active
