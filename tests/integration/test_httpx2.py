"""What only the httpx2 flavour must show: its errors are httpx2's as well as headlesslb's, its
transport works in a plain ``httpx2`` client that is never entered (an SDK's), and a request
through it touches no httpx or httpcore class. The behaviour it shares with the httpx clients
runs in the matrix (``HTTPX2_MODULES`` in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpcore
import httpx
import httpx2
import pytest

import headlesslb
import headlesslb.httpx2
import headlesslb.httpx2.sync
from headlesslb import errors
from headlesslb.core.retry import RetryPolicy
from headlesslb.testing import LocalCluster

pytestmark = pytest.mark.anyio

FLAVOURS = ["async", "sync"]


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the flavour changes the HTTP library, not the event loop's part."""
    return "asyncio"


def _options(cluster: LocalCluster, **kwargs: Any) -> dict[str, Any]:
    return {
        "port": "http",
        "nameservers": [cluster.nameserver],
        "namespace": cluster.namespace,
        "cluster_domain": cluster.domain,
        **kwargs,
    }


async def _get(flavour: str, cluster: LocalCluster, service: str, **kwargs: Any) -> Any:
    """One GET through the httpx2 client of ``flavour`` (the sync one in a worker thread)."""
    if flavour == "async":
        async with headlesslb.httpx2.HeadlessClient(service, **_options(cluster, **kwargs)) as c:
            return await c.get("/")

    def blocking() -> Any:
        with headlesslb.httpx2.sync.HeadlessClient(service, **_options(cluster, **kwargs)) as c:
            return c.get("/")

    return await anyio.to_thread.run_sync(blocking)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_no_endpoints_is_headlesslbs_error_and_httpx2s(
    cluster: LocalCluster, flavour: str
) -> None:
    with pytest.raises(errors.NoEndpointsAvailable) as caught:
        await _get(flavour, cluster, "nothing-hl")
    error = caught.value
    assert isinstance(error, httpx2.TransportError)  # what the OpenAI and Anthropic SDKs catch
    assert isinstance(error.request, httpx2.Request)
    assert error.request.url.host.startswith("nothing-hl.")
    assert "nothing-hl" in str(error)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_deadline_is_httpx2s_timeout(cluster: LocalCluster, flavour: str) -> None:
    for pod in ("web-0", "web-1", "web-2"):
        cluster.slow(pod, 5.0)
    retry = RetryPolicy(per_try_timeout=0.3, deadline=0.5)
    with anyio.fail_after(4), pytest.raises(errors.DeadlineExceeded) as caught:
        await _get(flavour, cluster, "web-hl", retry=retry)
    assert isinstance(caught.value, httpx2.TimeoutException)


async def test_a_plain_httpx2_client_never_entered_balances_and_closes(
    cluster: LocalCluster,
) -> None:
    # As openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=...)) uses it.
    transport = headlesslb.httpx2.HeadlessTransport("web-hl", **_options(cluster))
    client = httpx2.AsyncClient(transport=transport, base_url="http://web-hl")
    pods = {(await client.get("/")).json()["pod"] for _ in range(9)}
    assert pods == {"web-0", "web-1", "web-2"}
    assert transport.running
    await client.aclose()
    assert not transport.running


@pytest.fixture
def no_httpx() -> Iterator[list[str]]:
    """Every httpx and httpcore class a request could build refuses to be built (the names of
    those that were tried are collected, so a swallowed error still fails the test)."""
    tried: list[str] = []
    classes = [
        httpx.Request,
        httpx.Response,
        httpx.URL,
        httpx.Headers,
        httpx.ByteStream,
        httpcore.Request,
        httpcore.Response,
        httpcore.URL,
        httpcore.AsyncConnectionPool,
        httpcore.ConnectionPool,
    ]
    saved = [(cls, cls.__init__) for cls in classes]

    def refuse(cls: type) -> Any:
        def init(self: object, *args: object, **kwargs: object) -> None:
            tried.append(cls.__qualname__)
            raise AssertionError(f"the httpx2 request path built an {cls.__module__} object")

        return init

    for cls in classes:
        cls.__init__ = refuse(cls)  # type: ignore[method-assign]
    try:
        yield tried
    finally:
        for cls, init in saved:
            cls.__init__ = init  # type: ignore[method-assign]


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_request_touches_no_httpx_class(
    cluster: LocalCluster, flavour: str, no_httpx: list[str]
) -> None:
    response = await _get(flavour, cluster, "web-hl")
    assert isinstance(response, httpx2.Response) and response.status_code == 200
    assert response.extensions["headlesslb"]["hostname"] in {"web-0", "web-1", "web-2"}
    assert no_httpx == []


async def test_the_guard_sees_the_httpx_flavour(cluster: LocalCluster, no_httpx: list[str]) -> None:
    # The check above can fail: the httpx client, under the same guard, is caught building.
    with pytest.raises(AssertionError):
        async with headlesslb.HeadlessClient("web-hl", **_options(cluster)) as client:
            await client.get("/")
    assert no_httpx
