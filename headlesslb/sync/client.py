"""``headlesslb.sync.HeadlessClient``: an ``httpx.Client`` balanced over a headless Service.

The blocking twin of :class:`headlesslb.HeadlessClient`, for Flask, Django, Celery and scripts:
same arguments, routing, failure handling, health checks, fallback, report and ``endpoints()``.
One client is shared safely by every thread of a process and survives ``fork()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Literal

import httpx
from typing_extensions import Unpack

from ..clientbase import ClientBase
from ..errors import NotStarted
from ..options import BodyRequestArgs, ClientOptions, RequestArgs, client_settings
from .transport import HeadlessTransport

__all__ = ["HeadlessClient"]


class HeadlessClient(ClientBase):
    """Balanced, blocking HTTP over the Pods of a headless Service::

        from headlesslb.sync import HeadlessClient

        client = HeadlessClient("web-hl", port="http", fallback="web-lb")  # module level is fine
        r = client.get("/items/42")                    # balanced over Pods
        r = client.get("/items/42", key="user-42")     # same key, same Pod
        r = client.post("/write", json=doc, ordinal=0) # pinned to web-0
        client.close()                                 # from any thread

    Discovery starts on ``with`` or on the first request (which waits for the first DNS answer)
    and runs in one background thread until :meth:`close`. The keyword arguments are
    :class:`~headlesslb.options.ClientOptions`, as for the async client.
    """

    def __init__(self, service: str, **options: Unpack[ClientOptions]) -> None:
        settings = client_settings(dict(options))
        transport_options = {k: v for k, v in options.items() if k not in settings}
        self.transport = HeadlessTransport(service, **transport_options)  # type: ignore[arg-type]
        self.parts_base = self.transport.parts.urls.base
        self.base_url = httpx.URL(self.parts_base)
        self.http: httpx.Client = httpx.Client(
            transport=self.transport, base_url=self.base_url, **settings
        )
        self._state: Literal["open", "closed"] = "open"

    def __enter__(self) -> HeadlessClient:
        self._check_open()
        self.transport.__enter__()  # start discovery now rather than on the first request
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop discovery and close all connections; safe from any thread, and twice."""
        if self._state == "open":
            self._state = "closed"
            self.http.close()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once some Pod may take requests, or raise why none may: a readiness probe
        (:meth:`HeadlessTransport.wait_ready`, each reason a
        :class:`~headlesslb.errors.NotReady`). Starts discovery if it was not started yet."""
        self._check_open()
        self.transport.wait_ready(timeout)

    def _check_open(self) -> None:
        if self._state != "open":
            raise NotStarted("this HeadlessClient was closed: make a new one")

    def request(
        self, method: str, url: httpx.URL | str, **kwargs: Unpack[BodyRequestArgs]
    ) -> httpx.Response:
        """Send a request to one Pod: ``key`` shards, ``ordinal`` pins, ``idempotent`` allows
        retrying a non-idempotent method after it may have reached a Pod. Other keyword
        arguments are ``httpx.Client.request``'s (json, params, headers, timeout, ...)."""
        self._check_open()
        follow = kwargs.pop("follow_redirects", httpx.USE_CLIENT_DEFAULT)
        auth = kwargs.pop("auth", httpx.USE_CLIENT_DEFAULT)
        request = self.build_request(method, url, read_body=True, **kwargs)
        try:
            return self.http.send(request, auth=auth, follow_redirects=follow)
        except RuntimeError as error:
            self._closed_meanwhile(error)
            raise

    @contextmanager
    def stream(
        self, method: str, url: httpx.URL | str, **kwargs: Unpack[BodyRequestArgs]
    ) -> Iterator[httpx.Response]:
        """Like :meth:`request`, with the body read as you iterate it (``with``)."""
        self._check_open()
        follow = kwargs.pop("follow_redirects", httpx.USE_CLIENT_DEFAULT)
        auth = kwargs.pop("auth", httpx.USE_CLIENT_DEFAULT)
        request = self.build_request(method, url, **kwargs)
        try:
            response = self.http.send(request, auth=auth, follow_redirects=follow, stream=True)
        except RuntimeError as error:
            self._closed_meanwhile(error)
            raise
        try:
            yield response
        finally:
            response.close()

    def get(self, url: httpx.URL | str, **kwargs: Unpack[RequestArgs]) -> httpx.Response:
        """GET (see :meth:`request` for routing keywords)."""
        return self.request("GET", url, **kwargs)

    def head(self, url: httpx.URL | str, **kwargs: Unpack[RequestArgs]) -> httpx.Response:
        """HEAD (see :meth:`request`)."""
        return self.request("HEAD", url, **kwargs)

    def options(self, url: httpx.URL | str, **kwargs: Unpack[RequestArgs]) -> httpx.Response:
        """OPTIONS (see :meth:`request`)."""
        return self.request("OPTIONS", url, **kwargs)

    def post(self, url: httpx.URL | str, **kwargs: Unpack[BodyRequestArgs]) -> httpx.Response:
        """POST (see :meth:`request`)."""
        return self.request("POST", url, **kwargs)

    def put(self, url: httpx.URL | str, **kwargs: Unpack[BodyRequestArgs]) -> httpx.Response:
        """PUT (see :meth:`request`)."""
        return self.request("PUT", url, **kwargs)

    def patch(self, url: httpx.URL | str, **kwargs: Unpack[BodyRequestArgs]) -> httpx.Response:
        """PATCH (see :meth:`request`)."""
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: httpx.URL | str, **kwargs: Unpack[RequestArgs]) -> httpx.Response:
        """DELETE (see :meth:`request`)."""
        return self.request("DELETE", url, **kwargs)
