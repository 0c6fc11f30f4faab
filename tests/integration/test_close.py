"""Close, hardening round two: close wakes every waiter at once, nothing is sent after close
(whichever path a request resumes on), and a request racing close gets a typed error.

Each wait is forced by a hook on the real object the request waits on (the runtime's first
answer, a Pod lookup by name, the fallback's address), which keeps waiting far longer than the
deadlines here: a request that is not woken by close fails the test instead of passing late.
All run on both clients over a real LocalCluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import headlesslb.sync
from headlesslb import RefreshPolicy, RetryPolicy
from headlesslb.errors import ClientClosed
from headlesslb.testing import LocalCluster

from .helpers import eventually, make_client

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]

HELD = 10.0
"""How long a hooked wait would last if close did not end it (seconds)."""
WOKEN = 3.0
"""How soon after close a waiting request must have failed (seconds): well under HELD."""


def _served(cluster: LocalCluster) -> int:
    return sum(cluster.requests_served(p.name) for p in cluster.pods("web"))


def _transport(client: Any) -> Any:
    """The real transport object (the sync client's view hands attributes through)."""
    transport = client.transport
    return getattr(transport, "_transport", transport)


async def _close_while_waiting(
    client: Any, waiting: threading.Event, send: Callable[[], Awaitable[object]]
) -> tuple[BaseException | None, float]:
    """Start ``send()``, close the client once ``waiting`` is set, return (the error it raised,
    seconds from close until it ended)."""
    outcome: dict[str, Any] = {}

    async def request() -> None:
        try:
            await send()
        except Exception as exc:
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await eventually(waiting.is_set, within=10)
        closed_at = time.monotonic()
        with anyio.fail_after(HELD + 5):  # the sync close blocked for the whole wait, once
            await client.aclose()
        with anyio.fail_after(HELD + 5):
            while "ended" not in outcome:
                await anyio.sleep(0.01)
    return outcome.get("error"), outcome["ended"] - closed_at


def _holding(
    waiting: threading.Event, then: Callable[[], Awaitable[Any]] | None = None
) -> Callable[..., Awaitable[Any]]:
    """A hook for an awaited lookup: say it is waiting, hold for ``HELD`` s, then ``then()``."""

    async def hook(*args: object) -> Any:
        waiting.set()
        await anyio.sleep(HELD)
        return None if then is None else await then()

    return hook


async def test_close_wakes_a_request_waiting_for_the_first_answer(cluster: LocalCluster) -> None:
    cluster.dns_set_mode("drop")  # the first answer never comes
    client = make_client(cluster, refresh=RefreshPolicy(first_resolution_timeout=HELD))
    await client.__aenter__()
    runtime = _transport(client).runtime
    waiting = threading.Event()
    real = runtime.wait_ready

    async def wait_ready() -> None:
        waiting.set()
        await real()

    runtime.wait_ready = wait_ready
    error, took = await _close_while_waiting(client, waiting, lambda: client.get("/"))
    assert took < WOKEN, f"the request waited {took:.1f} s after close"
    assert isinstance(error, ClientClosed), error


async def test_close_wakes_a_request_waiting_for_a_pod_lookup(cluster: LocalCluster) -> None:
    # A numeric port: A records only, no hostnames, so ordinal= looks the Pod up by its name.
    port = cluster.pods("web")[0].port
    client = make_client(cluster, port=port, statefulset="web")
    await client.__aenter__()
    await eventually(lambda: len(client.endpoints()) == 3, within=10)
    waiting = threading.Event()
    _transport(client).runtime.lookup_pod = _holding(waiting)
    error, took = await _close_while_waiting(client, waiting, lambda: client.get("/", ordinal=1))
    assert took < WOKEN, f"the request waited {took:.1f} s after close"
    assert isinstance(error, ClientClosed), error
    assert _served(cluster) == 0


async def test_nothing_reaches_the_fallback_after_close(cluster: LocalCluster) -> None:
    # The fallback's address arrives only after close: a request that resumed then and sent its
    # POST anyway (the sender still open while close waited for the background) was the defect.
    cluster.delete_service("web-hl")
    client = make_client(cluster, fallback="web-lb")
    await client.__aenter__()
    transport = _transport(client)
    fallback = transport.fallback
    address = await fallback.address()  # resolved now, handed over the moment close starts
    waiting = threading.Event()

    async def address_after_close() -> tuple[str, int]:
        waiting.set()
        while transport._host.state != "closed":
            await anyio.sleep(0.001)
        return address

    fallback.address = address_after_close
    error, took = await _close_while_waiting(
        client, waiting, lambda: client.post("/", content=b"must not arrive")
    )
    assert isinstance(error, ClientClosed), error
    assert took < WOKEN
    assert _served(cluster) == 0


async def test_close_wakes_a_request_waiting_for_the_fallback_address(
    cluster: LocalCluster,
) -> None:
    cluster.delete_service("web-hl")
    client = make_client(cluster, fallback="web-lb")
    await client.__aenter__()
    waiting = threading.Event()
    _transport(client).fallback.address = _holding(waiting)
    error, took = await _close_while_waiting(client, waiting, lambda: client.get("/"))
    assert took < WOKEN, f"the request waited {took:.1f} s after close"
    assert isinstance(error, ClientClosed), error
    assert _served(cluster) == 0


async def test_close_wakes_a_request_backing_off(cluster: LocalCluster) -> None:
    for pod in cluster.pods("web"):
        cluster.fail(pod.name, 503)
    retry = RetryPolicy(max_attempts=5, backoff_base=HELD, backoff_max=HELD)
    client = make_client(cluster, retry=retry)
    await client.__aenter__()
    answered = threading.Event()

    async def served_once() -> None:
        await eventually(lambda: _served(cluster) >= 1, within=10)
        answered.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(served_once)
        error, took = await _close_while_waiting(client, answered, lambda: client.get("/"))
    assert isinstance(error, ClientClosed), error
    # Back-offs are drawn from [0, HELD]: only a run of short ones could pass without the fix.
    assert took < WOKEN, f"the request waited {took:.1f} s after close"


def test_a_sync_request_racing_close_gets_client_closed(cluster: LocalCluster) -> None:
    # close() from another thread landed between the client's open check and httpx's send,
    # which then raised its own plain RuntimeError ("the client has been closed"). Forced here
    # by closing inside build_request, which runs exactly there. (The async client has no such
    # window: no await separates its check from httpx's.)
    client = headlesslb.sync.HeadlessClient("web-hl", port="http", **_dns(cluster))
    build = client.build_request

    def build_then_close(*args: Any, **kwargs: Any) -> Any:
        request = build(*args, **kwargs)
        closer = threading.Thread(target=client.close)  # another thread, as in the report
        closer.start()
        closer.join(5)
        return request

    client.build_request = build_then_close  # type: ignore[method-assign]
    try:
        with pytest.raises(ClientClosed):
            client.get("/")
    finally:
        client.close()
    assert _served(cluster) == 0


def _dns(cluster: LocalCluster) -> dict[str, Any]:
    return {
        "namespace": cluster.namespace,
        "cluster_domain": cluster.domain,
        "nameservers": [cluster.nameserver],
    }
