"""HealthChecker rounds and the bounded probe helper, without sockets (real Pool, fake probes)."""

from __future__ import annotations

import errno
import logging
import ssl
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.lowlevel
import httpx
import pytest

from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pool import OutlierPolicy, Pool
from headlesslb.io.health import (
    PROBE_BODY_LIMIT,
    HealthCheck,
    HealthChecker,
    probe_once,
    probe_request,
    read_probe_response,
)

pytestmark = pytest.mark.anyio

BAD = Endpoint("10.0.0.1", 80, "web-0", 0)
GOOD = [Endpoint("10.0.0.2", 80, "web-1", 1), Endpoint("10.0.0.3", 80, "web-2", 2)]


def _errors() -> list[BaseException]:
    return [
        ssl.SSLError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
        ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed (EOF)"),
        ValueError("invalid literal"),
        RuntimeError("event loop is closed"),
        KeyError("x"),
        AttributeError("'NoneType' object has no attribute 'read'"),
        ZeroDivisionError("a bug in the probe"),
        OSError(errno.ECONNRESET, "Connection reset by peer"),
        httpx.ConnectError("connection refused"),
        httpx.RemoteProtocolError("illegal status line"),
        ExceptionGroup("from a nested task group", [ValueError("a"), OSError("b")]),
    ]


async def _until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not predicate():
            await anyio.sleep(0.005)


@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
async def test_a_probe_that_raises_fails_only_its_endpoint(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="headlesslb.health")
    # Every member starts ejected for a long while: a passing probe ends an ejection early, so a
    # good endpoint becoming available again proves its probe completed and was counted.
    pool = Pool(OutlierPolicy(max_ejection_percent=100, panic_threshold=0), clock=ManualClock())
    pool.update(Resolution((BAD, *GOOD), ttl=5))
    for endpoint in (BAD, *GOOD):
        assert pool.eject(endpoint.key)
    check = HealthCheck(interval=60, timeout=30, unhealthy_threshold=1)
    bad_raised = anyio.Event()
    completed: list[Endpoint] = []

    async def probe(endpoint: Endpoint) -> bool:
        if endpoint == BAD:
            bad_raised.set()
            raise error
        await bad_raised.wait()  # the good probes are still in flight when the bad one raises
        for _ in range(5):
            await anyio.lowlevel.checkpoint()  # where a cancellation would be delivered
        completed.append(endpoint)
        return True

    checker = HealthChecker(check, pool, probe)
    async with anyio.create_task_group() as tg:
        await tg.start(checker.run)
        await _until(lambda: checker.rounds >= 1)
        tg.cancel_scope.cancel()

    assert sorted(completed, key=lambda e: e.ip) == GOOD  # not cancelled by the failure
    states = {s.key: s for s in pool.snapshot.members}
    assert not states[BAD.key].health_ok  # the exception counted as a failed probe
    assert all(states[e.key].health_ok and states[e.key].available for e in GOOD)
    assert [s.endpoint for s in pool.snapshot.eligible] == GOOD
    failures = [r for r in caplog.records if "probe of web-0 10.0.0.1:80 failed" in r.getMessage()]
    assert failures and all(r.levelno == logging.DEBUG for r in failures)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the round did not fail


async def test_rounds_keep_completing_while_one_probe_always_raises() -> None:
    pool = Pool(clock=ManualClock())
    pool.update(Resolution((BAD, *GOOD), ttl=5))
    check = HealthCheck(interval=0.01, timeout=30, unhealthy_threshold=2, healthy_threshold=1)
    probed: dict[str, int] = {}

    async def probe(endpoint: Endpoint) -> bool:
        probed[endpoint.ip] = probed.get(endpoint.ip, 0) + 1
        if endpoint == BAD:
            raise RuntimeError("boom")
        await anyio.lowlevel.checkpoint()
        return True

    checker = HealthChecker(check, pool, probe)
    async with anyio.create_task_group() as tg:
        await tg.start(checker.run)
        await _until(lambda: checker.rounds >= 4)
        tg.cancel_scope.cancel()
    states = {s.key: s for s in pool.snapshot.members}
    assert not states[BAD.key].health_ok
    assert all(states[e.key].health_ok for e in GOOD)
    assert min(probed.values()) >= 4


# -- the bounded probe --------------------------------------------------------------------------


class Body(httpx.AsyncByteStream):
    """A response body: ``prefix`` then, unless it ends, ``filler`` forever or a stall."""

    def __init__(self, prefix: bytes = b"", *, endless: bool = False, stall: bool = False) -> None:
        self.prefix = prefix
        self.endless = endless
        self.stall = stall
        self.yielded = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            if self.prefix:
                self.yielded += len(self.prefix)
                yield self.prefix
            while self.endless:
                self.yielded += 100
                yield b"x" * 100
                await anyio.lowlevel.checkpoint()
            if self.stall:
                await anyio.sleep_forever()  # a Pod trickling nothing more
        finally:
            self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def sender(
    status: int, body: Body, seen: list[httpx.Request] | None = None
) -> Callable[[Endpoint, httpx.Request], object]:
    async def send(endpoint: Endpoint, request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, stream=body, request=request)  # type: ignore[arg-type]

    return send


async def test_endless_body_is_cut_after_the_limit() -> None:
    body = Body(endless=True)
    check = HealthCheck(timeout=60)  # far longer than the test: the limit ends it, not the clock
    assert await probe_once(sender(200, body), GOOD[0], check)  # type: ignore[arg-type]
    assert body.closed
    assert PROBE_BODY_LIMIT <= body.yielded < PROBE_BODY_LIMIT + 100


async def test_small_body_is_read_to_the_end_and_closed() -> None:
    body = Body(b'{"status": "ok"}')
    seen: list[httpx.Request] = []
    check = HealthCheck(path="/ready?full=1", timeout=2.5)
    assert await probe_once(sender(204, body, seen), GOOD[0], check)  # type: ignore[arg-type]
    assert body.closed and body.yielded == 16
    (request,) = seen
    assert str(request.url) == "http://10.0.0.2/ready?full=1"  # port 80 is the default
    assert request.headers["user-agent"] == "headlesslb-health-check"
    assert request.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 2.5)


async def test_unhealthy_status_fails_and_closes() -> None:
    body = Body(b"down", endless=True)
    assert not await probe_once(sender(503, body), GOOD[0], HealthCheck())  # type: ignore[arg-type]
    assert body.closed


async def test_stalled_body_fails_at_the_timeout() -> None:
    body = Body(b"HTTP", stall=True)
    assert not await probe_once(sender(200, body), GOOD[0], HealthCheck(timeout=0.05))  # type: ignore[arg-type]
    assert body.closed


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("garbage"),
        ssl.SSLError(1, "bad certificate"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_transport_errors_are_a_failed_probe(error: Exception) -> None:
    async def send(endpoint: Endpoint, request: httpx.Request) -> httpx.Response:
        raise error

    assert not await probe_once(send, GOOD[0], HealthCheck())


async def test_a_bug_propagates_for_the_checker_to_count() -> None:
    async def send(endpoint: Endpoint, request: httpx.Request) -> httpx.Response:
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        await probe_once(send, GOOD[0], HealthCheck())


async def test_probe_request_with_a_service_base_url() -> None:
    request = probe_request(
        HealthCheck(path="/healthz"), GOOD[0], base_url="https://web-hl.default.svc.cluster.local/"
    )
    assert str(request.url) == "https://web-hl.default.svc.cluster.local/healthz"
    assert request.headers["host"] == "web-hl.default.svc.cluster.local"
    v6 = probe_request(HealthCheck(), Endpoint("fd00::1", 8080))
    assert str(v6.url) == "http://[fd00::1]:8080/healthz"


async def test_read_probe_response_on_an_already_read_response() -> None:
    response = httpx.Response(200, content=b"ok")
    assert await read_probe_response(response, HealthCheck())
    assert response.is_closed
