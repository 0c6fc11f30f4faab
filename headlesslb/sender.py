"""Sending one attempt to one address, and what its failure means.

:class:`PodSender` is httpx's own transport plus a way to send straight to an ``ip:port`` while the
request keeps its Host header; :class:`AttemptStream` reports the attempt's outcome to the pool
exactly once, when the response body ends. :func:`classify` maps an httpx error to the retry phase
(:class:`~headlesslb.retry.Failure`) and the balancing outcome (:class:`~headlesslb.pool.Outcome`).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpcore
import httpx
from httpx._transports.default import AsyncResponseStream, map_httpcore_exceptions

from .pool import Attempt, Outcome
from .retry import Failure

__all__ = ["AttemptStream", "PodSender", "classify"]


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
        self._pools: dict[tuple[str, int], httpcore.AsyncConnectionPool] = {}

    def _pool(self, host: str, port: int) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get((host, port))
        if pool is None:
            limits = self._limits
            pool = self._pools[(host, port)] = httpcore.AsyncConnectionPool(
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
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None = None,
        connect_timeout: float | None = None,
    ) -> httpx.Response:
        """Send ``request`` to ``host:port``; ``sni`` is the name TLS verifies (https only);
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
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=host, port=port, target=url.raw_path),
            headers=headers if headers is not None else request.headers.raw,
            content=request.stream,
            extensions=extensions,
        )
        with map_httpcore_exceptions():
            core_response = await self._pool(host, port).handle_async_request(core_request)
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=AsyncResponseStream(core_response.stream),  # type: ignore[arg-type]
            extensions=core_response.extensions,
        )

    async def retain(self, keep: set[tuple[str, int]]) -> bool:
        """Close the pools of addresses not in ``keep`` that have no request in flight.

        Returns whether some pool outside ``keep`` was busy and is still open.
        """
        busy = False
        for address, pool in list(self._pools.items()):
            # httpcore lists requests waiting for or using a connection in _requests (1.0.x);
            # a pool with any is in use even if it has no connection yet.
            waiting = getattr(pool, "_requests", ())
            if address in keep:
                continue
            if waiting or not all(c.is_idle() for c in pool.connections):
                busy = True
                continue
            del self._pools[address]
            await pool.aclose()
        return busy

    async def aclose(self) -> None:
        """Close every connection."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()


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
