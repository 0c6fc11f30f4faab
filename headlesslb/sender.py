"""Sending one attempt to one address, and what its failure means.

:class:`PodSender` sends straight to an ``ip:port`` while the request keeps its Host header, with
one httpcore connection pool per address; it counts the requests in flight per address, so the
connections of a Pod that left DNS close as soon as its last request ends, however long that took.
:class:`AttemptStream` reports the attempt's outcome to the pool exactly once, when the response
body ends. :func:`classify` maps an httpx error to the retry phase
(:class:`~headlesslb.retry.Failure`) and the balancing outcome (:class:`~headlesslb.pool.Outcome`).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpcore
import httpx

from .errors import ClientClosed
from .pool import Attempt, Outcome
from .retry import Failure

__all__ = ["AttemptStream", "PodSender", "classify", "map_httpcore_errors"]

Address = tuple[str, int]

# httpcore's errors and the httpx errors users catch, as httpx's own transport maps them (kept
# here because that mapping is private to httpx).
_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


@contextlib.contextmanager
def map_httpcore_errors() -> Iterator[None]:
    """Re-raise httpcore's errors as the matching httpx errors (the most specific one)."""
    try:
        yield
    except Exception as exc:
        for kind in type(exc).__mro__:
            mapped = _ERRORS.get(kind)
            if mapped is not None:
                raise mapped(str(exc)) from exc
        raise


class PodSender:
    """Sends requests straight to ``ip:port`` addresses, one httpcore connection pool per address.

    Building the httpcore request directly skips httpx's URL rebuild, which was most of a naive
    rewriting transport's overhead (design §8). A pool per Pod, rather than one shared pool, keeps
    httpcore's per-request pool bookkeeping proportional to one Pod's connections instead of all
    of them (it walks every connection, twice per request).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        http2: bool = False,
        limits: httpx.Limits | None = None,
    ) -> None:
        self._ssl_context = httpx.create_ssl_context(verify=verify, cert=cert)
        self._http2 = http2
        self._limits = limits or httpx.Limits(
            max_connections=None, max_keepalive_connections=None, keepalive_expiry=4.0
        )
        self._pools: dict[Address, httpcore.AsyncConnectionPool] = {}
        self._active: dict[Address, int] = {}
        """Requests in flight per address, from the send until the response is closed."""
        self._departed: set[Address] = set()
        """Addresses whose pool closes as soon as nothing is in flight there."""
        self._closed = False

    def _pool(self, address: Address) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(address)
        if pool is None:
            if self._closed:
                raise ClientClosed("the client was closed: no new connection is opened")
            limits = self._limits
            pool = self._pools[address] = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context,
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_keepalive_connections,
                keepalive_expiry=limits.keepalive_expiry,
                http2=self._http2,
            )
        return pool

    async def send_to(
        self,
        request: httpx.Request,
        host: str,
        port: int,
        *,
        scheme: bytes,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None = None,
        connect_timeout: float | None = None,
    ) -> httpx.Response:
        """Send ``request`` to ``host:port`` over ``scheme`` (``b"http"`` or ``b"https"``: the
        client's configuration, never the URL's); ``sni`` is the name TLS verifies (https only);
        ``connect_timeout`` caps the request's own connect timeout."""
        extensions = request.extensions
        if sni is not None or connect_timeout is not None:
            extensions = dict(extensions)
            if sni is not None:
                extensions["sni_hostname"] = sni
            if connect_timeout is not None:
                timeouts = dict(extensions.get("timeout") or {})
                current = timeouts.get("connect")
                timeouts["connect"] = (
                    connect_timeout if current is None else min(current, connect_timeout)
                )
                extensions["timeout"] = timeouts
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=scheme, host=host, port=port, target=request.url.raw_path),
            headers=headers if headers is not None else request.headers.raw,
            content=request.stream,
            extensions=extensions,
        )
        address = (host, port)
        pool = self._pool(address)
        self._active[address] = self._active.get(address, 0) + 1
        try:
            with map_httpcore_errors():
                core_response = await pool.handle_async_request(core_request)
        except BaseException:
            await self._release(address)
            raise
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_PodStream(self, address, core_response.stream),
            extensions=core_response.extensions,
        )

    async def _release(self, address: Address) -> None:
        left = self._active[address] - 1
        if left:
            self._active[address] = left
            return
        del self._active[address]
        if address in self._departed:
            await self._close(address)

    async def retire(self, keep: set[Address]) -> None:
        """Close the connections of every address not in ``keep``: now if nothing is in flight
        there, else as soon as its last response is closed. Addresses in ``keep`` stay."""
        self._departed = {address for address in self._pools if address not in keep}
        for address in list(self._departed):
            if address not in self._active:
                await self._close(address)

    async def _close(self, address: Address) -> None:
        self._departed.discard(address)
        pool = self._pools.pop(address, None)
        if pool is not None:
            with contextlib.suppress(Exception):  # a socket that fails to close is closed anyway
                await pool.aclose()

    @property
    def addresses(self) -> set[Address]:
        """Addresses with an open connection pool (diagnostics and tests)."""
        return set(self._pools)

    async def aclose(self) -> None:
        """Close every connection; from now on nothing is sent."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        self._departed.clear()
        for pool in pools:
            with contextlib.suppress(Exception):
                await pool.aclose()


class _PodStream(httpx.AsyncByteStream):
    """A response body from httpcore: errors mapped to httpx's, the request counted until close."""

    __slots__ = ("_address", "_inner", "_open", "_sender")

    def __init__(self, sender: PodSender, address: Address, inner: Any) -> None:
        self._sender = sender
        self._address = address
        self._inner = inner
        self._open = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_httpcore_errors():
            async for chunk in self._inner:
                yield chunk

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            with map_httpcore_errors():
                await self._inner.aclose()
        finally:
            await self._sender._release(self._address)


class AttemptStream(httpx.AsyncByteStream):
    """Response body that reports its attempt's outcome exactly once, when the body ends."""

    __slots__ = ("_attempt", "_inner", "_outcome")

    def __init__(self, inner: httpx.AsyncByteStream, attempt: Attempt, outcome: Outcome) -> None:
        self._inner = inner
        self._attempt = attempt
        self._outcome: Outcome | None = outcome

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            self._report(classify(exc)[1])
            raise
        except BaseException:
            self._report(Outcome.CANCELLED)
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._report(self._outcome or Outcome.SUCCESS)

    def _report(self, outcome: Outcome) -> None:
        if self._outcome is not None:
            self._outcome = None
            self._attempt.done(outcome)


def classify(exc: httpx.TransportError) -> tuple[Failure | None, Outcome]:
    """(retry phase, balancing outcome) of an attempt that failed with ``exc``.

    Only connect-phase errors prove the request never reached the server; everything after the
    connection was made may have been processed.
    """
    if isinstance(exc, ClientClosed):
        return None, Outcome.CANCELLED  # says nothing about the Pod
    if isinstance(exc, httpx.ConnectError):
        return Failure.NOT_SENT, Outcome.REFUSED if is_refused(exc) else Outcome.CONNECT_FAILURE
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure.NOT_SENT, Outcome.CONNECT_FAILURE
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return Failure.MAYBE_PROCESSED, Outcome.TIMEOUT
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError):
        return Failure.MAYBE_PROCESSED, Outcome.RESET
    return None, Outcome.RESET


def is_refused(exc: BaseException) -> bool:
    """Whether a connect error was a refusal (nothing listens: the Pod is gone).

    trio wraps the OSError in an ExceptionGroup, so this walks causes, contexts and group
    members; the search is short and bounded.
    """
    pending: list[BaseException | None] = [exc]
    for _ in range(16):
        if not pending:
            return False
        seen = pending.pop()
        if seen is None:
            continue
        if isinstance(seen, ConnectionRefusedError):
            return True
        pending += [seen.__cause__, seen.__context__]
        if isinstance(seen, BaseExceptionGroup):
            pending += seen.exceptions
    return False
