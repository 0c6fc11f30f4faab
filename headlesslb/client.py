"""``HeadlessClient``: an ``httpx.AsyncClient`` balanced over a headless Service, in one object."""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Literal

import httpx

from . import validate
from .clock import Clock, monotonic
from .dns import IpFamily
from .endpoint import EndpointStatus
from .errors import NotStarted
from .fallback import DEFAULT_PORTS, authority
from .health import HealthCheck
from .pickers.base import HashKey, PickerFactory
from .pool import OutlierPolicy
from .retry import RetryPolicy
from .schedule import RefreshPolicy
from .transport import EXTENSION, HeadlessTransport, RequestOptions

__all__ = ["HeadlessClient"]

_READ_BODY = RequestOptions(read_body=True)


class HeadlessClient:
    """Balanced HTTP over the Pods of a headless Service::

        async with HeadlessClient("web-hl", port="http", fallback="web-lb") as client:
            r = await client.get("/items/42")                  # balanced over Pods
            r = await client.get("/items/42", key="user-42")   # same key, same Pod
            r = await client.post("/write", json=doc, ordinal=0)  # pinned to web-0

    Entering starts discovery (the first request waits for the first DNS answer); leaving stops
    it and closes every connection. Arguments are those of :class:`HeadlessTransport`, plus
    ``timeout``, ``headers`` and ``follow_redirects`` for the underlying ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        service: str,
        *,
        port: int | str | None = None,
        scheme: Literal["http", "https"] = "http",
        picker: str | PickerFactory = "round_robin",
        sharding: PickerFactory | None = None,
        writes_to: int | None = None,
        fallback: str | None = None,
        nameservers: Sequence[str] | None = None,
        resolv_conf: str = "/etc/resolv.conf",
        namespace: str | None = None,
        cluster_domain: str | None = None,
        statefulset: str | None = None,
        ip_family: IpFamily = "ipv4",
        refresh: RefreshPolicy | None = None,
        outlier: OutlierPolicy | None = None,
        health: HealthCheck | None = None,
        retry: RetryPolicy | None = None,
        timeout: httpx.Timeout | float | None = 10.0,
        discovery_timeout: float = 3.0,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = False,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        limits: httpx.Limits | None = None,
        http2: bool = False,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
    ) -> None:
        validate.flag("follow_redirects", follow_redirects)
        if not isinstance(timeout, httpx.Timeout):
            validate.number("timeout", timeout, min=0, exclusive_min=True, allow_none=True)
        self.transport = HeadlessTransport(
            service,
            port=port,
            scheme=scheme,
            picker=picker,
            sharding=sharding,
            writes_to=writes_to,
            fallback=fallback,
            nameservers=nameservers,
            resolv_conf=resolv_conf,
            namespace=namespace,
            cluster_domain=cluster_domain,
            statefulset=statefulset,
            ip_family=ip_family,
            refresh=refresh,
            outlier=outlier,
            health=health,
            retry=retry,
            discovery_timeout=discovery_timeout,
            verify=verify,
            cert=cert,
            limits=limits,
            http2=http2,
            clock=clock,
            rng=rng,
        )
        default_port = DEFAULT_PORTS[scheme]
        # A named port's number is known only per Pod (SRV): the URL then names the Service alone.
        port = self.transport.port if isinstance(self.transport.port, int) else default_port
        host = authority(self.transport.service.host, port, default_port)
        self.base_url = httpx.URL(f"{scheme}://{host}")
        self.http = httpx.AsyncClient(
            transport=self.transport,
            base_url=self.base_url,
            timeout=timeout,
            headers=headers,
            follow_redirects=follow_redirects,
        )
        self._state: Literal["new", "open", "closed"] = "new"

    async def __aenter__(self) -> HeadlessClient:
        if self._state != "new":
            raise NotStarted("a HeadlessClient can be entered once; make a new one")
        await self.http.__aenter__()
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop discovery and close all connections (what leaving ``async with`` does)."""
        if self._state == "open":
            self._state = "closed"
            await self.http.aclose()
        self._state = "closed"

    def endpoints(self) -> list[EndpointStatus]:
        """The Pods discovered now, with their health and load."""
        return self.transport.endpoints()

    def _check_open(self) -> None:
        if self._state != "open":
            what = "was closed" if self._state == "closed" else "was not entered"
            raise NotStarted(
                f"this HeadlessClient {what}: use 'async with HeadlessClient(...) as client:'"
            )

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        key: HashKey | None = None,
        ordinal: int | None = None,
        idempotent: bool | None = None,
        read_body: bool = False,
        **kwargs: Any,
    ) -> httpx.Request:
        """An ``httpx.Request`` carrying the routing options (see :class:`RequestOptions`).

        Options may also come in ``extensions={"headlesslb": {...}}``; keyword arguments win.
        """
        extensions = kwargs.get("extensions") or {}
        given = extensions.get(EXTENSION)
        if given is None and key is None and ordinal is None and idempotent is None:
            options = _READ_BODY if read_body else None  # the common case: nothing to validate
        else:
            base = RequestOptions.from_extension(given) if given is not None else RequestOptions()
            options = RequestOptions.from_extension(
                {
                    "key": base.key if key is None else key,
                    "ordinal": base.ordinal if ordinal is None else ordinal,
                    "idempotent": base.idempotent if idempotent is None else idempotent,
                    "read_body": base.read_body or read_body,
                }
            )
        if options is not None:
            kwargs["extensions"] = {**extensions, EXTENSION: options}
        return self.http.build_request(method, url, **kwargs)

    async def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        key: HashKey | None = None,
        ordinal: int | None = None,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request to one Pod: ``key`` shards, ``ordinal`` pins, ``idempotent`` allows
        retrying a non-idempotent method after it may have reached a Pod. Other keyword
        arguments are ``httpx.AsyncClient.request``'s (json, params, headers, timeout, ...)."""
        self._check_open()
        follow = kwargs.pop("follow_redirects", httpx.USE_CLIENT_DEFAULT)
        auth = kwargs.pop("auth", httpx.USE_CLIENT_DEFAULT)
        # The whole body is read anyway: reading it inside the transport lets a connection lost
        # mid-body be retried on another Pod like any other failure.
        request = self.build_request(
            method, url, key=key, ordinal=ordinal, idempotent=idempotent, read_body=True, **kwargs
        )
        return await self.http.send(request, auth=auth, follow_redirects=follow)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        key: HashKey | None = None,
        ordinal: int | None = None,
        idempotent: bool | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """Like :meth:`request`, with the body read as you iterate it (``async with``)."""
        self._check_open()
        follow = kwargs.pop("follow_redirects", httpx.USE_CLIENT_DEFAULT)
        auth = kwargs.pop("auth", httpx.USE_CLIENT_DEFAULT)
        request = self.build_request(
            method, url, key=key, ordinal=ordinal, idempotent=idempotent, **kwargs
        )
        response = await self.http.send(request, auth=auth, follow_redirects=follow, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    async def get(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """GET (see :meth:`request` for routing keywords)."""
        return await self.request("GET", url, **kwargs)

    async def head(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """HEAD (see :meth:`request`)."""
        return await self.request("HEAD", url, **kwargs)

    async def options(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """OPTIONS (see :meth:`request`)."""
        return await self.request("OPTIONS", url, **kwargs)

    async def post(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """POST (see :meth:`request`)."""
        return await self.request("POST", url, **kwargs)

    async def put(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """PUT (see :meth:`request`)."""
        return await self.request("PUT", url, **kwargs)

    async def patch(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """PATCH (see :meth:`request`)."""
        return await self.request("PATCH", url, **kwargs)

    async def delete(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        """DELETE (see :meth:`request`)."""
        return await self.request("DELETE", url, **kwargs)
