"""Helpers for integration tests over a LocalCluster (real DNS, real HTTP, loopback only)."""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
import httpx

import headlesslb.sync
from headlesslb import HeadlessClient
from headlesslb.testing import LocalCluster

FLAVOR = {"client": "async"}
"""Which client ``make_client`` builds: set per test by the ``client_flavor`` fixture."""


def library() -> Any:
    """The HTTP library of this row's client (``httpx`` or ``httpx2``): what its own errors are.
    (httpx2 is imported only by its rows: the minimum-versions run has no httpx2 at first.)"""
    if FLAVOR["client"].startswith("httpx2"):
        import httpx2

        return httpx2
    return httpx


def make_client(cluster: LocalCluster, service: str = "web-hl", **kwargs: Any) -> Any:
    """A client aimed at the cluster's DNS, named port ``http``: the async ``HeadlessClient``,
    or, for the sync rows of the behaviour matrix, the sync one behind :class:`SyncAsAsync`."""
    kwargs.setdefault("port", "http")
    kwargs.setdefault("namespace", cluster.namespace)
    kwargs.setdefault("cluster_domain", cluster.domain)
    kwargs.setdefault("nameservers", [cluster.nameserver])
    flavor = FLAVOR["client"]
    if flavor == "sync":
        return SyncAsAsync(headlesslb.sync.HeadlessClient(service, **kwargs))
    if flavor == "httpx2":
        from headlesslb.httpx2 import HeadlessClient as Httpx2Client

        return Httpx2Client(service, **kwargs)
    if flavor == "httpx2-sync":
        from headlesslb.httpx2.sync import HeadlessClient as Httpx2SyncClient

        return SyncAsAsync(Httpx2SyncClient(service, **kwargs))
    return HeadlessClient(service, **kwargs)


async def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


class _OnPortal:
    """An object living on the sync transport's discovery loop: its coroutine methods are run
    there (through the portal), from a worker thread, so async tests can await them."""

    def __init__(self, obj: Any, transport: headlesslb.sync.HeadlessTransport) -> None:
        self._obj = obj
        self._transport = transport

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        if inspect.iscoroutinefunction(value):

            async def on_portal(*args: Any, **kwargs: Any) -> Any:
                portal = self._transport._host._portal
                assert portal is not None, "the sync transport is not running"
                return await _in_thread(portal.call, functools.partial(value, *args, **kwargs))

            return on_portal
        return value


class _SyncTransportView:
    def __init__(self, transport: headlesslb.sync.HeadlessTransport) -> None:
        self._transport = transport

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    @property
    def refresher(self) -> Any:
        return _OnPortal(self._transport.refresher, self._transport)

    @property
    def health(self) -> Any:
        health = self._transport.health
        return None if health is None else _OnPortal(health, self._transport)


class _InThread:
    """A blocking object driven from an async test: each method call runs in a worker thread."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)

        async def in_thread(*args: Any, **kwargs: Any) -> Any:
            return await _in_thread(value, *args, **kwargs)

        return in_thread if callable(value) else value


class SyncAsAsync:
    """The sync client driven from an async test: each blocking call runs in a worker thread,
    so the same test body checks both clients (the behaviour matrix)."""

    def __init__(self, client: headlesslb.sync.HeadlessClient) -> None:
        self.sync = client
        self.transport = _SyncTransportView(client.transport)
        self.http = _InThread(client.http)
        """The client's own ``httpx.Client``, awaitable like ``HeadlessClient.http``."""

    async def __aenter__(self) -> SyncAsAsync:
        await _in_thread(self.sync.__enter__)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await _in_thread(self.sync.close)

    def endpoints(self) -> Any:
        return self.sync.endpoints()

    async def wait_ready(self, timeout: float | None = None) -> None:
        await _in_thread(self.sync.wait_ready, timeout)

    async def request(self, method: str, url: Any, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = await _in_thread(self.sync.request, method, url, **kwargs)
        return response

    async def get(self, url: Any, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: Any, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def put(self, url: Any, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, **kwargs)

    async def delete(self, url: Any, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, **kwargs)

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: Any, **kwargs: Any) -> AsyncIterator[Any]:
        manager = self.sync.stream(method, url, **kwargs)
        response = await _in_thread(manager.__enter__)
        try:
            yield _SyncResponse(response)
        finally:
            await _in_thread(manager.__exit__, None, None, None)


class _SyncResponse:
    """A streamed sync response whose reads run in a worker thread."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    async def aread(self) -> bytes:
        body: bytes = await _in_thread(self._response.read)
        return body


async def served_by(
    client: HeadlessClient, n: int, path: str = "/", **kwargs: Any
) -> collections.Counter[str]:
    """Send ``n`` sequential GETs and count the Pod names that answered."""
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        response = await client.get(path, **kwargs)
        assert response.status_code == 200, response.text
        counts[response.json()["pod"]] += 1
    return counts


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, within: float, every: float = 0.05
) -> float:
    """Poll ``check`` until True; fail after ``within`` seconds. Returns the time taken."""
    start = anyio.current_time()
    with anyio.fail_after(within):
        while not await _result(check()):
            await anyio.sleep(every)
    return anyio.current_time() - start


def established_connections(ips: set[str]) -> int:
    """This process's ESTABLISHED TCP connections to any of ``ips`` (read from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    wanted = {_hex_ip(ip) for ip in ips}
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_ip = fields[2].split(":")[0]
            if fields[3] == "01" and fields[9] in inodes and remote_ip in wanted:
                count += 1
    return count


def _hex_ip(ip: str) -> str:
    return "".join(f"{int(part):02X}" for part in reversed(ip.split(".")))


async def _result(value: Awaitable[bool] | bool) -> bool:
    return await value if inspect.isawaitable(value) else bool(value)
