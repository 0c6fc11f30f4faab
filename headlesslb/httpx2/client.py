"""``HeadlessClient``: an ``httpx2.AsyncClient`` balanced over a headless Service, in one object."""

# Generated from headlesslb/aio/client.py by tools/unasync.py: edit that file, not this one.

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Literal

import httpx2
from typing_extensions import Unpack

from headlesslb.clientbase import ClientBase
from headlesslb.errors import NotStarted
from headlesslb.httpx2.options import BodyRequestArgs, ClientOptions, RequestArgs, client_settings
from headlesslb.httpx2.transport import HeadlessTransport

__all__ = ["HeadlessClient"]


class HeadlessClient(ClientBase):
    """Balanced HTTP over the Pods of a headless Service::

        async with HeadlessClient("web-hl", port="http", fallback="web-lb") as client:
            r = await client.get("/items/42")                  # balanced over Pods
            r = await client.get("/items/42", key="user-42")   # same key, same Pod
            r = await client.post("/write", json=doc, ordinal=0)  # pinned to web-0

    Discovery starts on entering, on :meth:`open`, or on the first request (which waits for the
    first DNS answer), and runs until the client is closed, from anywhere: leaving the block,
    or :meth:`aclose`. Nothing outlives it. The keyword arguments are
    :class:`~headlesslb.httpx2.options.ClientOptions`: those of :class:`HeadlessTransport`, plus
    ``timeout``, ``headers`` and ``follow_redirects`` for the underlying ``httpx2.AsyncClient``.
    """

    def __init__(self, service: str, **options: Unpack[ClientOptions]) -> None:
        settings = client_settings(dict(options))
        transport_options = {k: v for k, v in options.items() if k not in settings}
        self.transport = HeadlessTransport(service, **transport_options)  # type: ignore[arg-type]
        self.parts_base = self.transport.parts.urls.base
        self.base_url = httpx2.URL(self.parts_base)
        self.http: httpx2.AsyncClient = httpx2.AsyncClient(
            transport=self.transport, base_url=self.base_url, **settings
        )
        self._state: Literal["open", "closed"] = "open"

    async def __aenter__(self) -> HeadlessClient:
        return await self.open()

    async def open(self) -> HeadlessClient:
        """Start discovery now rather than on the first request, for a client that lives beyond
        one block (a module-level client, an app's lifespan); close it with :meth:`aclose`.
        Calling it again, from anywhere, does nothing::

            client = HeadlessClient("web-hl", port="http")

            async def handler() -> None:
                await client.open()
                r = await client.get("/items/42")
        """
        self._check_open()
        self.transport.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop discovery and close all connections (what leaving the block does); safe from
        anywhere, and twice."""
        self._state = "closed"
        await self.http.aclose()

    # A timeout argument, as readiness probes (and redis-py's ping) take one, rather than a
    # time limit around the call: with one, the caller could not tell a timeout from a reason.
    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once some Pod may take requests, or raise why none may: a readiness probe
        (:meth:`HeadlessTransport.wait_ready`: NXDOMAIN, an empty answer, DNS unreachable, no
        Pod passed its health check, or ``timeout`` passed, each a
        :class:`~headlesslb.errors.NotReady`). Starts discovery if it was not started yet::

            try:
                await client.wait_ready(timeout=2)
            except headlesslb.NotReady as exc:
                return Response(str(exc), status_code=503)
        """
        self._check_open()
        await self.transport.wait_ready(timeout)

    def _check_open(self) -> None:
        if self._state != "open":
            raise NotStarted("this HeadlessClient was closed: make a new one")

    async def request(
        self, method: str, url: httpx2.URL | str, **kwargs: Unpack[BodyRequestArgs]
    ) -> httpx2.Response:
        """Send a request to one Pod: ``key`` shards, ``ordinal`` pins, ``idempotent`` allows
        retrying a non-idempotent method after it may have reached a Pod. Other keyword
        arguments are ``httpx2.AsyncClient.request``'s (json, params, headers, timeout, ...)."""
        self._check_open()
        follow = kwargs.pop("follow_redirects", httpx2.USE_CLIENT_DEFAULT)
        auth = kwargs.pop("auth", httpx2.USE_CLIENT_DEFAULT)
        # The whole body is read anyway: reading it inside the transport lets a connection lost
        # mid-body be retried on another Pod like any other failure.
        request = self.build_request(method, url, read_body=True, **kwargs)
        try:
            return await self.http.send(request, auth=auth, follow_redirects=follow)
        except RuntimeError as error:
            self._closed_meanwhile(error)
            raise

    @asynccontextmanager
    async def stream(
        self, method: str, url: httpx2.URL | str, **kwargs: Unpack[BodyRequestArgs]
    ) -> AsyncIterator[httpx2.Response]:
        """Like :meth:`request`, with the body read as you iterate it, inside the block."""
        self._check_open()
        follow = kwargs.pop("follow_redirects", httpx2.USE_CLIENT_DEFAULT)
        auth = kwargs.pop("auth", httpx2.USE_CLIENT_DEFAULT)
        request = self.build_request(method, url, **kwargs)
        try:
            response = await self.http.send(
                request, auth=auth, follow_redirects=follow, stream=True
            )
        except RuntimeError as error:
            self._closed_meanwhile(error)
            raise
        try:
            yield response
        finally:
            await response.aclose()

    async def get(self, url: httpx2.URL | str, **kwargs: Unpack[RequestArgs]) -> httpx2.Response:
        """GET (see :meth:`request` for routing keywords)."""
        return await self.request("GET", url, **kwargs)

    async def head(self, url: httpx2.URL | str, **kwargs: Unpack[RequestArgs]) -> httpx2.Response:
        """HEAD (see :meth:`request`)."""
        return await self.request("HEAD", url, **kwargs)

    async def options(
        self, url: httpx2.URL | str, **kwargs: Unpack[RequestArgs]
    ) -> httpx2.Response:
        """OPTIONS (see :meth:`request`)."""
        return await self.request("OPTIONS", url, **kwargs)

    async def post(
        self, url: httpx2.URL | str, **kwargs: Unpack[BodyRequestArgs]
    ) -> httpx2.Response:
        """POST (see :meth:`request`)."""
        return await self.request("POST", url, **kwargs)

    async def put(
        self, url: httpx2.URL | str, **kwargs: Unpack[BodyRequestArgs]
    ) -> httpx2.Response:
        """PUT (see :meth:`request`)."""
        return await self.request("PUT", url, **kwargs)

    async def patch(
        self, url: httpx2.URL | str, **kwargs: Unpack[BodyRequestArgs]
    ) -> httpx2.Response:
        """PATCH (see :meth:`request`)."""
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: httpx2.URL | str, **kwargs: Unpack[RequestArgs]) -> httpx2.Response:
        """DELETE (see :meth:`request`)."""
        return await self.request("DELETE", url, **kwargs)
