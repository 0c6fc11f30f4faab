"""Mocking behind the balancer: ``StaticDiscovery`` for the Pods, ``httpx.MockTransport`` for
their answers. No DNS, no sockets: the documented way to test code that uses headlesslb::

    client = HeadlessClient(
        "web-hl.default",
        discovery=StaticDiscovery(["web-0=10.0.0.1:80", "web-1=10.0.0.2:80"]),
        pod_transport=httpx.MockTransport(handler),
    )

The handler sees each attempt aimed at a Pod (``request.url.host`` is the Pod's IP) with the
Host header naming the Service. ``nameservers`` is not needed when ``discovery=`` is given.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Literal

import anyio
import httpx
import pytest

import headlesslb.sync
from headlesslb import (
    ConsistentHash,
    Endpoint,
    EndpointStatus,
    HeadlessClient,
    RefreshPolicy,
    RetryPolicy,
    Subset,
)
from headlesslb.core.retry import Verdict
from headlesslb.errors import ConfigurationError, DiscoveryError
from headlesslb.events import Event, StreamAbandoned
from headlesslb.testing import StaticDiscovery
from headlesslb.testing.static import parse_endpoint

SERVICE_HOST = "web-hl.default.svc.cluster.local"
PODS = [f"web-{i}=10.0.0.{i + 1}:80" for i in range(3)]
IPS = [f"10.0.0.{i + 1}" for i in range(3)]
FAST = RefreshPolicy(min_interval=0.01, max_interval=0.05, error_backoff=0.01)

Handler = Callable[[httpx.Request], httpx.Response]


class Pods:
    """The mocked Pods: who got what, and which Pods answer 503."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.unwell: set[str] = set()
        self.rejecting: set[str] = set()
        """Pods that turn every request away for load (429)."""

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        ip = request.url.host
        if ip in self.rejecting:
            return httpx.Response(429, text=ip)
        return httpx.Response(503 if ip in self.unwell else 200, text=ip)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def hits(self) -> Counter[str]:
        return Counter(r.url.host for r in self.seen)


def client(pods: Pods, discovery: StaticDiscovery, **options: object) -> HeadlessClient:
    return HeadlessClient(
        "web-hl.default",
        discovery=discovery,
        pod_transport=pods.transport(),
        **options,  # type: ignore[arg-type]
    )


# -- async, on asyncio and trio ------------------------------------------------------------------
@pytest.mark.anyio
async def test_requests_balance_over_the_static_pods() -> None:
    pods = Pods()
    async with client(pods, StaticDiscovery(PODS)) as c:
        responses = [await c.get("/items/42?x=1") for _ in range(6)]
    assert pods.hits() == Counter(dict.fromkeys(IPS, 2))  # round-robin
    for request in pods.seen:
        assert request.headers["host"] == SERVICE_HOST
        assert request.url.scheme == "http" and request.url.port is None
        assert request.url.raw_path == b"/items/42?x=1"
    for response in responses:
        assert response.status_code == 200
        report = response.extensions["headlesslb"]
        assert report["endpoint"] == f"{response.text}:80"
        assert report["hostname"] == f"web-{IPS.index(response.text)}"
        assert str(response.url) == f"http://{SERVICE_HOST}/items/42?x=1"  # the name is kept


@pytest.mark.anyio
async def test_a_503_is_retried_on_another_pod() -> None:
    pods = Pods()
    pods.unwell.add("10.0.0.1")
    async with client(pods, StaticDiscovery(PODS)) as c:
        responses = [await c.get("/") for _ in range(6)]
    assert all(r.status_code == 200 and r.text != "10.0.0.1" for r in responses)
    retried = [r.extensions["headlesslb"]["attempts"] for r in responses if r.text]
    assert any(
        [a["status"] for a in attempts] == [503, 200] and attempts[0]["endpoint"] == "10.0.0.1:80"
        for attempts in retried
    )


@pytest.mark.anyio
async def test_a_key_shards_and_an_ordinal_pins() -> None:
    pods = Pods()
    async with client(pods, StaticDiscovery(PODS)) as c:
        same = {(await c.get("/", key="user-42")).text for _ in range(5)}
        spread = {(await c.get("/", key=f"user-{n}")).text for n in range(30)}
        pinned = [await c.post("/write", json={"n": n}, ordinal=2) for n in range(3)]
    assert len(same) == 1
    assert len(spread) > 1
    assert {r.text for r in pinned} == {"10.0.0.3"}
    assert all(r.extensions["headlesslb"]["ordinal"] == 2 for r in pinned)


@pytest.mark.anyio
@pytest.mark.parametrize("over", ["endpoint", "ordinal"])
async def test_keys_go_beyond_a_subset_whose_members_all_reject(
    over: Literal["endpoint", "ordinal"],
) -> None:
    # The Maglev table covers the subset's core, healthy or not; the ring's replacements are
    # eligible too and must take the keys when no core member may.
    six = [f"web-{i}=10.0.0.{i + 1}:80" for i in range(6)]
    options: dict[str, object] = {"subset": Subset(2, client=0), "sharding": ConsistentHash(over)}
    pods = Pods()
    async with client(pods, StaticDiscovery(six), **options) as c:
        await c.get("/")
        core = {s.endpoint.ip for s in c.transport.pool.snapshot.subset}
        pods.rejecting |= core
        rejected_first = await c.get("/", key="user-0")  # the core rejects it, then holds off
        for _ in range(10):  # plain requests meet every core member's 429
            if not core & {s.endpoint.ip for s in c.transport.pool.snapshot.eligible}:
                break
            await c.get("/")
        first = [await c.get("/", key=f"user-{n}") for n in range(10)]
        again = [await c.get("/", key=f"user-{n}") for n in range(10)]
    assert rejected_first.status_code == 200 and rejected_first.text not in core
    assert [r.status_code for r in first] == [200] * 10
    assert not core & {r.text for r in first}
    assert [r.text for r in again] == [r.text for r in first]  # the same Pod each time
    # Every Pod rejects: the keyed request ends on a rejection, delivered, not an error.
    pods = Pods()
    pods.rejecting |= {f"10.0.0.{i + 1}" for i in range(6)}
    async with client(pods, StaticDiscovery(six), **options) as c:
        rejected = await c.get("/", key="user-1")
    assert rejected.status_code == 429
    assert [a["status"] for a in rejected.extensions["headlesslb"]["attempts"]] == [429] * 3


@pytest.mark.anyio
async def test_scaling_is_picked_up_on_refresh() -> None:
    pods = Pods()
    discovery = StaticDiscovery(PODS)
    async with client(pods, discovery) as c:
        discovery.set([*PODS, "web-3=10.0.0.4:80"])
        await c.transport.refresher.refresh()
        assert len(c.endpoints()) == 4
        up = {(await c.get("/")).text for _ in range(8)}
        discovery.set(PODS[:1])
        await c.transport.refresher.refresh()
        down = {(await c.get("/")).text for _ in range(4)}
    assert "10.0.0.4" in up and len(up) == 4
    assert down == {"10.0.0.1"}
    assert discovery.rounds >= 2


@pytest.mark.anyio
async def test_discovery_failure_keeps_the_last_pods_and_then_says_so() -> None:
    pods = Pods()
    discovery = StaticDiscovery(PODS)
    async with client(pods, discovery) as c:
        assert (await c.get("/")).status_code == 200  # the first round is in
        discovery.fail(DiscoveryError("SERVFAIL"))
        assert await c.transport.refresher.refresh() == (False, 0.0)
        assert (await c.get("/")).status_code == 200  # stale beats empty
    empty = StaticDiscovery()
    empty.fail(TimeoutError("no answer"))
    async with client(pods, empty) as c:
        with pytest.raises(DiscoveryError, match="TimeoutError: no answer"):
            await c.get("/")


@pytest.mark.anyio
async def test_ordinal_without_hostnames_looks_the_pod_up_by_name() -> None:
    pods = Pods()
    discovery = StaticDiscovery(PODS, hide_hostnames=True)
    async with client(pods, discovery, statefulset="web") as c:
        assert all(e.hostname is None for e in c.endpoints())
        responses = [await c.get("/", ordinal=1) for _ in range(2)]
    assert {r.text for r in responses} == {"10.0.0.2"}
    assert discovery.lookups == [f"web-1.{SERVICE_HOST}."]  # cached for the second request
    assert responses[0].extensions["headlesslb"]["hostname"] == "web-1"


# -- blocking ------------------------------------------------------------------------------------
@pytest.fixture
def sync_client() -> Iterator[Callable[..., headlesslb.sync.HeadlessClient]]:
    made: list[headlesslb.sync.HeadlessClient] = []

    def make(
        pods: Pods, discovery: StaticDiscovery, **options: object
    ) -> headlesslb.sync.HeadlessClient:
        c = headlesslb.sync.HeadlessClient(
            "web-hl.default",
            discovery=discovery,
            pod_transport=pods.transport(),
            **options,  # type: ignore[arg-type]
        )
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_sync_client_balances_retries_shards_and_pins(
    sync_client: Callable[..., headlesslb.sync.HeadlessClient],
) -> None:
    pods = Pods()
    with sync_client(pods, StaticDiscovery(PODS)) as c:
        assert {c.get("/").text for _ in range(6)} == set(IPS)
        assert all(r.headers["host"] == SERVICE_HOST for r in pods.seen)
        pods.unwell.add("10.0.0.2")
        assert {c.get("/").status_code for _ in range(6)} == {200}
        assert len({c.get("/", key="user-7").text for _ in range(4)}) == 1
        pinned = c.put("/x", content=b"v", ordinal=0)
    assert pinned.text == "10.0.0.1" and pinned.extensions["headlesslb"]["ordinal"] == 0


def test_sync_refused_wakeup_never_waits_on_the_discovery_thread(
    sync_client: Callable[..., headlesslb.sync.HeadlessClient],
) -> None:
    """The pool tells of a refused connection under its lock. The discovery thread may be
    waiting for that lock (a DNS round applying membership), so the wake-up it hands to that
    thread must not wait for it: waiting deadlocked request threads and discovery for ever."""
    with sync_client(Pods(), StaticDiscovery(PODS)) as c:
        transport = c.transport
        assert transport._host._portal is not None
        pool, portal = transport.pool, transport._host._portal
        on_refused = pool.on_refused
        assert on_refused is not None
        returned = threading.Event()
        with pool._lock:  # a request thread in the middle of a pool change...

            async def apply_membership() -> None:
                pool.tick()  # ...while the discovery thread waits for the lock

            portal.start_task_soon(apply_membership)
            caller = threading.Thread(target=lambda: (on_refused(), returned.set()))
            caller.start()
            assert returned.wait(timeout=10), "on_refused waited on the blocked discovery loop"
        caller.join()
        assert c.get("/").status_code == 200  # the loop runs on


def test_sync_client_picks_up_scaling(
    sync_client: Callable[..., headlesslb.sync.HeadlessClient],
) -> None:
    pods = Pods()
    discovery = StaticDiscovery(PODS, ttl=0)
    with sync_client(pods, discovery, refresh=FAST) as c:
        assert c.get("/").status_code == 200  # waits for the first round
        assert len(c.endpoints()) == 3
        discovery.set(["web-9=10.0.0.99:80"])
        deadline = time.monotonic() + 2
        while [e.ip for e in c.endpoints()] != ["10.0.0.99"]:
            assert time.monotonic() < deadline, c.endpoints()
            time.sleep(0.005)
        assert c.get("/").text == "10.0.0.99"


# -- the books: every mocked attempt is reported to the pool -------------------------------------
def _read(ip: str) -> httpx.Response:
    return httpx.Response(503 if ip == "10.0.0.1" else 200, text=ip)


def _streamed(ip: str) -> httpx.Response:
    return httpx.Response(503 if ip == "10.0.0.1" else 200, stream=httpx.ByteStream(ip.encode()))


BOOKS = [
    pytest.param(_streamed, id="streamed-body"),
    pytest.param(_read, id="content-body"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("answer", BOOKS)
async def test_mocked_attempts_are_reported(answer: Callable[[str], httpx.Response]) -> None:
    transport = httpx.MockTransport(lambda request: answer(request.url.host))
    async with HeadlessClient(
        "web-hl.default", discovery=StaticDiscovery(PODS), pod_transport=transport
    ) as c:
        for _ in range(6):
            assert (await c.get("/")).status_code == 200
        statuses = {e.ip: e for e in c.endpoints()}
    assert all(e.in_flight == 0 for e in statuses.values()), statuses
    assert statuses["10.0.0.1"].failures >= 1


@pytest.mark.parametrize("answer", BOOKS)
def test_sync_mocked_attempts_are_reported(answer: Callable[[str], httpx.Response]) -> None:
    transport = httpx.MockTransport(lambda request: answer(request.url.host))
    with headlesslb.sync.HeadlessClient(
        "web-hl.default", discovery=StaticDiscovery(PODS), pod_transport=transport
    ) as c:
        for _ in range(6):
            assert c.get("/").status_code == 200
        statuses = {e.ip: e for e in c.endpoints()}
    assert all(e.in_flight == 0 for e in statuses.values()), statuses
    assert statuses["10.0.0.1"].failures >= 1


# -- a streamed body dropped unclosed is released when collected ---------------------------------
class _Body(httpx.AsyncByteStream, httpx.SyncByteStream):
    """A streamed mock body that remembers being closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield b"event"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"event"

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class _Feed:
    """Pods answering each request with a fresh streamed body; the events the client emits."""

    def __init__(self) -> None:
        self.bodies: list[_Body] = []
        self.events: list[Event] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(_Body())
        return httpx.Response(200, stream=self.bodies[-1])

    def options(self) -> dict[str, Any]:
        return {
            "discovery": StaticDiscovery(PODS),
            "pod_transport": httpx.MockTransport(self.handler),
            "observers": [self.events.append],
        }

    def released(self, endpoints: list[EndpointStatus]) -> bool:
        gc.collect()
        return not any(e.in_flight for e in endpoints) and self.bodies[-1].closed

    def check(self) -> None:
        abandoned = [e for e in self.events if isinstance(e, StreamAbandoned)]
        assert [e.first for e in abandoned] == [True, False]  # the log warns once per client
        first = abandoned[0]
        assert (first.method, first.url) == ("GET", f"http://{SERVICE_HOST}/feed")
        assert first.endpoint is not None and first.address == first.endpoint.authority


@pytest.mark.anyio
async def test_a_mocked_stream_dropped_unclosed_is_released_when_collected() -> None:
    feed = _Feed()
    async with HeadlessClient("web-hl.default", **feed.options()) as c:
        for _ in range(2):
            response = await c.http.send(c.build_request("GET", "/feed"), stream=True)
            assert sum(e.in_flight for e in c.endpoints()) == 1
            del response
            with anyio.fail_after(5):
                while not feed.released(c.endpoints()):
                    await anyio.sleep(0.01)
    feed.check()


def test_sync_a_mocked_stream_dropped_unclosed_is_released_when_collected() -> None:
    feed = _Feed()
    with headlesslb.sync.HeadlessClient("web-hl.default", **feed.options()) as c:
        for _ in range(2):
            response = c.http.send(c.build_request("GET", "/feed"), stream=True)
            assert sum(e.in_flight for e in c.endpoints()) == 1
            del response
            deadline = time.monotonic() + 5
            while not feed.released(c.endpoints()):
                assert time.monotonic() < deadline, "not released"
                time.sleep(0.01)
    feed.check()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_stream_collected_after_its_loop_ended_raises_nothing(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    feed = _Feed()

    async def main() -> httpx.Response:
        async with HeadlessClient("web-hl.default", **feed.options()) as c:
            response: httpx.Response = await c.http.send(c.build_request("GET", "/"), stream=True)
            return response

    held = [anyio.run(main, backend=backend)]  # the loop is closed, trio's run over
    held.clear()
    gc.collect()
    assert unraisable == []


# -- one verdict per response: the pool and the call core agree ----------------------------------
ONE_TRY = RetryPolicy(max_attempts=1, max_hold_off=5.0)


def _overloaded(streamed: bool) -> Handler:
    """web-0 rejects (503, Retry-After past the cap), web-1 is unwell (503), web-2 answers."""

    def handler(request: httpx.Request) -> httpx.Response:
        ip = request.url.host
        status = 200 if ip == "10.0.0.3" else 503
        headers = {"Retry-After": "3600"} if ip == "10.0.0.1" else {}
        if streamed:
            return httpx.Response(status, headers=headers, stream=httpx.ByteStream(b"x"))
        return httpx.Response(status, headers=headers, text="x")

    return handler


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The statuses :meth:`RetryPolicy.judge` is asked about, in order."""
    seen: list[int] = []
    judge = RetryPolicy.judge

    def counting(policy: RetryPolicy, status: int, headers: Mapping[str, str]) -> Verdict:
        seen.append(status)
        return judge(policy, status, headers)

    monkeypatch.setattr(RetryPolicy, "judge", counting)
    return seen


def _agreed(pods: list[EndpointStatus], judged: list[int], sent: float, asked: float) -> None:
    """Each response was judged once, and its one verdict went both ways: the rejection counts
    for neither failure nor latency in the pool and holds its Pod off (capped) in the core; the
    plain 503 is a failure and holds nothing off."""
    assert judged == [503, 503, 200]
    rejecter, unwell, well = sorted(pods, key=lambda e: e.ip)
    assert all(e.in_flight == 0 and e.requests == 1 for e in pods)
    assert rejecter.failures == 0 and rejecter.ewma_latency is None
    # Held off for 5 s from its answer (between sent and asked), counted from endpoints().
    assert rejecter.hold_off_remaining is not None
    assert sent + 5.0 - asked <= rejecter.hold_off_remaining <= 5.0
    assert unwell.failures == 1 and unwell.hold_off_remaining is None
    assert well.failures == 0 and well.hold_off_remaining is None


@pytest.mark.anyio
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed-body", "content-body"])
async def test_one_verdict_per_response_counts_in_the_pool_and_holds_off_in_the_core(
    streamed: bool, judged: list[int]
) -> None:
    transport = httpx.MockTransport(_overloaded(streamed))
    async with HeadlessClient(
        "web-hl.default", discovery=StaticDiscovery(PODS), pod_transport=transport, retry=ONE_TRY
    ) as c:
        sent = time.monotonic()
        statuses = [(await c.get("/", ordinal=n)).status_code for n in range(3)]
        assert statuses == [503, 503, 200]
        pods = c.endpoints()
        asked = time.monotonic()
    _agreed(pods, judged, sent, asked)


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed-body", "content-body"])
def test_sync_one_verdict_per_response_counts_in_the_pool_and_holds_off_in_the_core(
    streamed: bool, judged: list[int]
) -> None:
    transport = httpx.MockTransport(_overloaded(streamed))
    with headlesslb.sync.HeadlessClient(
        "web-hl.default", discovery=StaticDiscovery(PODS), pod_transport=transport, retry=ONE_TRY
    ) as c:
        sent = time.monotonic()
        statuses = [c.get("/", ordinal=n).status_code for n in range(3)]
        assert statuses == [503, 503, 200]
        pods = c.endpoints()
        asked = time.monotonic()
    _agreed(pods, judged, sent, asked)


# -- StaticDiscovery itself ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("10.0.0.1:8080", Endpoint("10.0.0.1", 8080)),
        ("[fd00::1]:80", Endpoint("fd00::1", 80)),
        ("web-3=10.0.0.4:80", Endpoint("10.0.0.4", 80, "web-3", 3)),
        ("Cache=[FD00::2]:80", Endpoint("fd00::2", 80, "cache", None)),
        ("10.0.0.1", Endpoint("10.0.0.1", 9000)),
        ("fd00::1", Endpoint("fd00::1", 9000)),
        (Endpoint("10.0.0.1", 1, "x", 7), Endpoint("10.0.0.1", 1, "x", 7)),
    ],
)
def test_endpoint_specs(spec: str | Endpoint, expected: Endpoint) -> None:
    assert parse_endpoint(spec, port=9000) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("10.0.0.1", "gives no port"),
        ("web-0.example:80", "not an IP address"),
        ("10.0.0.1:0", "not in 1-65535"),
        ("10.0.0.1:http", "not a number"),
        ("[fd00::1", "unclosed"),
        ("[fd00::1]80", "expected ':port'"),
        ("=10.0.0.1:80", "empty hostname"),
    ],
)
def test_bad_endpoint_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StaticDiscovery([spec])


@pytest.mark.anyio
async def test_static_discovery_scripts_rounds() -> None:
    discovery = StaticDiscovery(["10.0.0.2:80", "web-0=10.0.0.1:80", "10.0.0.2:80"], ttl=7)
    first = await discovery.resolve()
    assert [e.ip for e in first.endpoints] == ["10.0.0.1", "10.0.0.2"]  # sorted, deduplicated
    assert first.ttl == 7.0 and not first.partial
    discovery.set("10.0.0.3:80", ttl=1)
    assert (await discovery.resolve()).endpoints == (Endpoint("10.0.0.3", 80),)
    cause = OSError("network unreachable")
    discovery.fail(cause)
    for _ in range(2):
        with pytest.raises(DiscoveryError, match="OSError: network unreachable") as caught:
            await discovery.resolve()
        assert caught.value.__cause__ is cause
    with pytest.raises(DiscoveryError):
        await discovery.resolve_name("web-0.web-hl.default.svc.cluster.local.", 80)
    discovery.fail(None)
    assert (await discovery.resolve()).ttl == 1.0
    assert discovery.rounds == 5
    with pytest.raises(ValueError, match="ttl"):
        discovery.set([], ttl=-1)


@pytest.mark.anyio
async def test_static_discovery_answers_pods_by_name() -> None:
    discovery = StaticDiscovery(PODS, hide_hostnames=True)
    assert all(e.hostname is None for e in (await discovery.resolve()).endpoints)
    found = await discovery.resolve_name(f"WEB-1.{SERVICE_HOST}.", 8080)
    assert found.endpoints == (Endpoint("10.0.0.2", 8080),)
    assert (await discovery.resolve_name(f"web-7.{SERVICE_HOST}.", 80)).endpoints == ()
    assert discovery.lookups == [f"WEB-1.{SERVICE_HOST}.", f"web-7.{SERVICE_HOST}."]


def test_http2_without_h2_is_refused_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx refuses it when the client is made; before, headlesslb took it and failed later.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "h2" else real(name, *a)
    )
    for make in (HeadlessClient, headlesslb.sync.HeadlessClient):
        with pytest.raises(ConfigurationError, match=r"http2=True needs the h2 package"):
            make(
                "web-hl",
                namespace="default",
                discovery=StaticDiscovery(["10.0.0.1:80"]),
                http2=True,
            )


@pytest.mark.anyio
async def test_clients_and_transports_say_what_they_are() -> None:
    discovery = StaticDiscovery(["10.0.0.1:80", "10.0.0.2:80"])
    client = HeadlessClient("web-hl", namespace="default", discovery=discovery)
    assert repr(client.transport) == (
        "<headlesslb.aio.transport.HeadlessTransport http://web-hl.default.svc.cluster.local new>"
    )
    async with client:
        await client.transport.runtime.wait_ready()
        assert repr(client) == (
            "<headlesslb.aio.client.HeadlessClient <headlesslb.aio.transport.HeadlessTransport"
            " http://web-hl.default.svc.cluster.local open, 2 Pods>>"
        )
    sync = headlesslb.sync.HeadlessClient("web-hl", namespace="default", discovery=discovery)
    sync.close()
    assert repr(sync).endswith("http://web-hl.default.svc.cluster.local closed>>")
