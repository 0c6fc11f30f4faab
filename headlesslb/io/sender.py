"""Sending one attempt to one address, asynchronously (the async client, and every health probe).

:class:`PodSender` sends straight to an ``ip:port`` while the request keeps its Host header, with
one httpcore connection pool per address; it counts the requests in flight per address, so the
connections of a Pod that left DNS close as soon as its last request ends, however long that took.
An attempt's response is judged once, at header time (:meth:`RetryPolicy.judge
<headlesslb.core.retry.RetryPolicy.judge>`): the sender hands the verdict to the shell, for the
call core, and its body reports the verdict's outcome to the pool exactly once, when it ends:
read to the end or closed, or, for a streamed response the caller dropped unclosed, when the
garbage collector finds it (:class:`Reaper`: reported as cancelled, released on the loop).
:class:`TransportSender` sends through a user's httpx transport instead (``pod_transport=``:
``httpx.MockTransport``, respx), for tests with no sockets behind the balancer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeAlias

import httpcore
import httpx

from ..core.call import Send
from ..core.events import EventHub, StreamAbandoned
from ..core.pool import Attempt, Outcome
from ..core.retry import ANSWERED, RetryPolicy, Verdict
from ..errors import ClientClosed
from .outcomes import classify, map_httpcore_errors
from .tasks import spawn, waker
from .tls import tls_context

__all__ = [
    "Abandoned",
    "Answer",
    "AsyncSender",
    "PodSender",
    "Reaper",
    "ReportingBody",
    "TransportSender",
    "answered",
    "pod_request",
    "report_attempt",
    "transport_answer",
    "transport_request",
    "with_headers",
]

log = logging.getLogger("headlesslb.streams")

Address = tuple[str, int]

Answer: TypeAlias = tuple[httpx.Response, Verdict]
"""An attempt's response and its verdict, made by the sender at header time."""


class AsyncSender(Protocol):
    """What the async shell sends attempts with."""

    async def send_attempt(
        self,
        request: httpx.Request,
        step: Send,
        policy: RetryPolicy,
        *,
        scheme: bytes,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Answer:
        """Send the attempt ``step`` (its Pod, pool attempt and per-try timeout): the response
        and its verdict by ``policy``, whose outcome the body reports to the pool attempt when
        it ends (a failed send is the caller's to report)."""
        ...

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
        """Send ``request`` to ``host:port`` with no attempt to report (the fallback)."""
        ...

    async def retire(self, keep: set[Address]) -> None:
        """Close connections to addresses not in ``keep`` once they are idle."""
        ...

    async def aclose(self) -> None:
        """Close everything; nothing is sent afterwards."""
        ...


def core_extensions(
    request: httpx.Request, sni: str | None, connect_timeout: float | None
) -> dict[str, Any]:
    """The request's extensions plus SNI and a capped connect timeout (shared by both shells)."""
    extensions = request.extensions
    if sni is None and connect_timeout is None:
        return extensions
    extensions = dict(extensions)
    if sni is not None:
        extensions["sni_hostname"] = sni
    if connect_timeout is not None:
        timeouts = dict(extensions.get("timeout") or {})
        current = timeouts.get("connect")
        timeouts["connect"] = connect_timeout if current is None else min(current, connect_timeout)
        extensions["timeout"] = timeouts
    return extensions


def with_headers(
    headers: list[tuple[bytes, bytes]], extra: tuple[tuple[str, str], ...]
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus ``extra`` (an observer's ``traceparent``), replacing same-named ones:
    an attempt carries its own trace context, not one the request came in with."""
    # Plain loops: comprehensions are a function call each (before Python 3.12), per attempt.
    added = []
    names = set()
    for name, value in extra:
        raw = name.encode("latin-1")
        names.add(raw.lower())
        added.append((raw, value.encode("latin-1")))
    merged = []
    for header in headers:
        if header[0].lower() not in names:
            merged.append(header)
    merged += added
    return merged


def transport_request(
    request: httpx.Request,
    host: str,
    port: int,
    scheme: bytes,
    sni: str | None,
    headers: list[tuple[bytes, bytes]] | None,
    connect_timeout: float | None,
) -> httpx.Request:
    """The httpx request a ``pod_transport`` gets for one attempt: ``scheme://host:port`` with
    the request's path, its Host header naming the Service (shared by both shells)."""
    return httpx.Request(
        request.method,
        httpx.URL(scheme=scheme.decode(), host=host, port=port, path="/").copy_with(
            raw_path=request.url.raw_path
        ),
        headers=headers if headers is not None else request.headers.raw,
        stream=request.stream,
        extensions=core_extensions(request, sni, connect_timeout),
    )


def pod_request(
    request: httpx.Request,
    host: str,
    port: int,
    *,
    scheme: bytes,
    sni: str | None,
    headers: list[tuple[bytes, bytes]] | None,
    connect_timeout: float | None,
) -> httpcore.Request:
    """The httpcore request for one attempt: aimed at ``host:port`` over ``scheme`` (the
    client's configuration, never the URL's), Host header and path kept. Building it directly
    skips httpx's URL rebuild, most of a naive rewriting transport's overhead."""
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(scheme=scheme, host=host, port=port, target=request.url.raw_path),
        headers=headers if headers is not None else request.headers.raw,
        content=request.stream,
        extensions=(
            request.extensions  # the usual case (plain http, no per-try timeout): no call
            if sni is None and connect_timeout is None
            else core_extensions(request, sni, connect_timeout)
        ),
    )


class Abandoned:
    """A response body the garbage collector found unclosed: what releasing it takes (never the
    body itself, which is being destroyed)."""

    __slots__ = ("address", "attempt", "inner", "request")

    def __init__(
        self, inner: Any, attempt: Attempt | None, request: httpx.Request, address: Address | None
    ) -> None:
        self.inner = inner
        """The stream the body wrapped (httpcore's, or a ``pod_transport``'s): to close."""
        self.attempt = attempt
        self.request = request
        self.address = address
        """Where the sender counted it in (None: a ``pod_transport``'s, counted nowhere)."""


class Reaper:
    """One sender's response bodies dropped unclosed: queued by the garbage collector, released
    by the sender's owner (its event loop; the sync client's runtime thread).

    A body's ``__del__`` runs wherever the garbage collector does: on any thread, between any
    two bytecodes of whatever ran there, perhaps inside the very lock releasing it would take
    (httpcore's pool lock is not reentrant) or in the middle of a pool's bookkeeping, which is
    one loop's and unlocked in the async client. So :meth:`abandoned`, its only call, does two
    things, both safe there and neither blocking: it puts the body's record on a
    ``queue.SimpleQueue`` (reentrant by design, "appropriate for use in destructors such as
    ``__del__``") and calls :attr:`wake`, which schedules :meth:`reap` on the owner: asyncio's
    ``call_soon_threadsafe`` or trio's ``run_sync_soon`` (:func:`~headlesslb.io.tasks.waker`),
    or the sync runtime thread's ``call_soon``. Everything else (reporting the attempt, the
    event, the counts, closing) happens there.
    """

    __slots__ = ("_queue", "_warned", "events", "wake")

    def __init__(self, events: EventHub | None) -> None:
        self.events = events
        """Where :class:`~headlesslb.core.events.StreamAbandoned` goes (None: nowhere)."""
        self.wake: Callable[[], object] | None = None
        """Schedules :meth:`reap` on the owner, from any thread (set by the owner, once)."""
        self._queue: queue.SimpleQueue[
            tuple[Any, Attempt | None, httpx.Request, Address | None]
        ] = queue.SimpleQueue()
        self._warned = False

    def abandoned(
        self, inner: Any, attempt: Attempt | None, request: httpx.Request, address: Address | None
    ) -> None:
        """Queue a body found unclosed and wake the owner (the garbage collector's context: no
        module global is read here, so it works at interpreter exit too)."""
        self._queue.put((inner, attempt, request, address))
        wake = self.wake
        if wake is not None:
            # Not contextlib.suppress: no object to build here. The loop may be closed, its run
            # over: nobody is left to release to.
            try:  # noqa: SIM105
                wake()
            except Exception:
                pass

    def reap(self, release: Callable[[Abandoned], None]) -> None:
        """Release every body queued so far (the owner's context): its attempt reported as
        cancelled (it says nothing about the Pod), the event emitted, then ``release(record)``
        (the counts, the connection). Never raises: it runs as a loop callback."""
        while True:
            try:
                record = Abandoned(*self._queue.get_nowait())
            except queue.Empty:
                return
            try:
                attempt = record.attempt
                report_attempt(attempt, Outcome.CANCELLED)
                self._announce(record, attempt)
                release(record)
            except Exception:
                log.exception("releasing a streamed response that was not closed failed")

    def _announce(self, record: Abandoned, attempt: Attempt | None) -> None:
        events = self.events
        if events is None:
            return
        first, self._warned = not self._warned, True
        endpoint = None if attempt is None else attempt.state.endpoint
        if endpoint is not None:
            address = endpoint.authority
        elif record.address is not None:
            host, port = record.address
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        else:
            address = "?"
        request = record.request
        events.emit(
            StreamAbandoned(
                events.service, request.method, str(request.url), endpoint, address, first
            )
        )


class PodSender:
    """Sends requests straight to ``ip:port`` addresses, one httpcore connection pool per address.

    A pool per Pod, rather than one shared pool, keeps httpcore's per-request pool bookkeeping
    proportional to one Pod's connections instead of all of them (it walks every connection,
    twice per request).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        http2: bool = False,
        limits: httpx.Limits | None = None,
        events: EventHub | None = None,
    ) -> None:
        self._ssl_context = tls_context(verify, cert)
        self._http2 = http2
        self._limits = limits or httpx.Limits(
            max_connections=None, max_keepalive_connections=None, keepalive_expiry=4.0
        )
        self._reaper = Reaper(events)
        """Bodies dropped unclosed, released on this sender's loop (woken by its first send)."""
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
            if self._reaper.wake is None:  # on the loop that sends, once
                self._reaper.wake = waker(self._reap)
        return pool

    async def send_attempt(
        self,
        request: httpx.Request,
        step: Send,
        policy: RetryPolicy,
        *,
        scheme: bytes,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Answer:
        """Send the attempt ``step`` (its Pod, pool attempt and per-try timeout; see
        :meth:`send_to`): the response and its verdict by ``policy``, whose outcome the body
        reports to the pool attempt when it ends (a failed send is the caller's to report)."""
        endpoint = step.state.endpoint
        attempt = step.attempt
        response, body = await self._send(
            request, endpoint.ip, endpoint.port, scheme, sni, headers, step.timeout, attempt
        )
        body.verdict = verdict = answered(response, attempt, policy)
        return response, verdict

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
        """Send ``request`` to ``host:port`` with no attempt to report (health probes, the
        fallback); ``sni`` is the name TLS verifies (https only); ``connect_timeout`` caps the
        request's own connect timeout."""
        response, _ = await self._send(
            request, host, port, scheme, sni, headers, connect_timeout, None
        )
        return response

    async def _send(
        self,
        request: httpx.Request,
        host: str,
        port: int,
        scheme: bytes,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None,
        connect_timeout: float | None,
        attempt: Attempt | None,
    ) -> tuple[httpx.Response, _PodStream]:
        core_request = pod_request(
            request,
            host,
            port,
            scheme=scheme,
            sni=sni,
            headers=headers,
            connect_timeout=connect_timeout,
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
        body = _PodStream(self, address, core_response.stream, attempt, request)
        response = httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=body,
            extensions=core_response.extensions,
        )
        return response, body

    async def _release(self, address: Address) -> None:
        pool = self._leave(address)
        if pool is not None:
            await _aclose(pool)

    def _leave(self, address: Address) -> httpcore.AsyncConnectionPool | None:
        """Count a request out of ``address``: the pool to close now, when it was the last one
        there and the address has departed (taken out at once: nothing new goes to it)."""
        left = self._active[address] - 1
        if left:
            self._active[address] = left
            return None
        del self._active[address]
        if address not in self._departed:
            return None
        self._departed.discard(address)
        return self._pools.pop(address, None)

    def _reap(self) -> None:
        """Release the bodies dropped unclosed (on the loop: the reaper's wake-up)."""
        self._reaper.reap(self._release_abandoned)

    def _release_abandoned(self, record: Abandoned) -> None:
        # A loop callback cannot await: the count drops now (least-request sees it at once,
        # and a departed pool is taken out of use now); the closing, which awaits, is a task
        # of the loop's own.
        assert record.address is not None
        pool = self._leave(record.address)
        spawn("closing a stream that was not closed", functools.partial(_discard, record, pool))

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
            await _aclose(pool)

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
            await _aclose(pool)


async def _aclose(closable: Any) -> None:
    with contextlib.suppress(Exception):  # a socket that fails to close is closed anyway
        await closable.aclose()


async def _discard(record: Abandoned, pool: httpcore.AsyncConnectionPool | None) -> None:
    """Close an abandoned body's stream (httpcore closes a connection whose response was not
    read to the end: it is never reused) and, when that was its departed Pod's last request,
    the Pod's pool."""
    await _aclose(record.inner)
    if pool is not None:
        await _aclose(pool)


class _PodStream(httpx.AsyncByteStream):
    """A response body from httpcore: errors mapped to httpx's, the request counted until close,
    and the attempt's outcome (its verdict's) reported exactly once, when the body ends (or,
    dropped unclosed, as cancelled once the garbage collector finds it: :class:`Reaper`)."""

    __slots__ = ("_address", "_attempt", "_inner", "_open", "_request", "_sender", "verdict")

    def __init__(
        self,
        sender: PodSender,
        address: Address,
        inner: Any,
        attempt: Attempt | None,
        request: httpx.Request,
    ) -> None:
        self._sender = sender
        self._address = address
        self._inner = inner
        self._attempt = attempt
        self._request = request
        self._open = True
        self.verdict = ANSWERED
        """What the response means, set by the sender once judged (with no attempt, unused)."""

    # __del__, not weakref.finalize: nothing to make or detach per response, one flag read when
    # a closed body goes. Only Reaper.abandoned runs here (see Reaper for why).
    def __del__(self) -> None:
        if self._open:
            self._open = False
            self._sender._reaper.abandoned(self._inner, self._attempt, self._request, self._address)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            with map_httpcore_errors():
                async for chunk in self._inner:
                    yield chunk
        except httpx.TransportError as exc:
            report_attempt(self._attempt, classify(exc).outcome)
            raise
        except BaseException:
            report_attempt(self._attempt, Outcome.CANCELLED)
            raise

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            with map_httpcore_errors():
                await self._inner.aclose()
        finally:
            report_attempt(self._attempt, self.verdict.outcome)
            await self._sender._release(self._address)


def transport_answer(
    response: httpx.Response,
    attempt: Attempt,
    policy: RetryPolicy,
    reporting: Callable[[Any, Attempt, Verdict], httpx.SyncByteStream | httpx.AsyncByteStream],
) -> Answer:
    """A ``pod_transport``'s response to an attempt, judged by ``policy`` (both shells): a body
    read already reports the verdict's outcome now, another is wrapped by ``reporting`` to
    report it when it ends."""
    verdict = answered(response, attempt, policy)
    if response.is_closed:  # built with content=/json=: read and closed already
        report_attempt(attempt, verdict.outcome)
    else:
        response.stream = reporting(response.stream, attempt, verdict)
    return response, verdict


def answered(response: httpx.Response, attempt: Attempt, policy: RetryPolicy) -> Verdict:
    """The headers of ``attempt``'s ``response`` came back now (its latency ends here, however
    long the body streams): the one verdict ``policy`` makes of it (every sender, both shells)."""
    attempt.answer()
    return policy.judge(response.status_code, response.headers)


def report_attempt(attempt: Attempt | None, outcome: Outcome) -> None:
    """Report ``outcome`` to ``attempt`` unless it was reported already (bodies of both shells)."""
    if attempt is not None and not attempt.finished:
        attempt.done(outcome)


class TransportSender:
    """Sends each attempt through an httpx transport (``pod_transport=``), as a request for
    ``http(s)://<ip>:<port>/<path>`` carrying the Service's Host header: mock the Pods behind the
    balancer with ``httpx.MockTransport`` or respx, no sockets involved."""

    def __init__(self, transport: httpx.AsyncBaseTransport, events: EventHub | None = None) -> None:
        self._transport = transport
        self._closed = False
        self._reaper = Reaper(events)

    async def send_attempt(
        self,
        request: httpx.Request,
        step: Send,
        policy: RetryPolicy,
        *,
        scheme: bytes,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Answer:
        """Send the attempt ``step`` through the transport: the response and its verdict by
        ``policy``, whose outcome the body reports to the pool attempt when it ends."""
        endpoint = step.state.endpoint
        response = await self.send_to(
            request,
            endpoint.ip,
            endpoint.port,
            scheme=scheme,
            sni=sni,
            headers=headers,
            connect_timeout=step.timeout,
        )
        reaper = self._reaper
        if reaper.wake is None:  # on the loop that sends, once
            reaper.wake = waker(functools.partial(reaper.reap, _discard_spawned))
        return transport_answer(
            response,
            step.attempt,
            policy,
            functools.partial(_ReportingStream, reaper=reaper, request=request),
        )

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
        """Send through the transport, with no attempt to report (the fallback)."""
        if self._closed:
            raise ClientClosed("the client was closed: nothing more is sent")
        outgoing = transport_request(request, host, port, scheme, sni, headers, connect_timeout)
        return await self._transport.handle_async_request(outgoing)

    async def retire(self, keep: set[Address]) -> None:
        """Nothing to close: the transport owns its connections."""

    async def aclose(self) -> None:
        """Close the transport; nothing is sent afterwards."""
        self._closed = True
        await self._transport.aclose()


def _discard_spawned(record: Abandoned) -> None:
    """Close a ``pod_transport`` body dropped unclosed, in a task of the loop (it awaits)."""
    spawn("closing a stream that was not closed", functools.partial(_discard, record, None))


class ReportingBody:
    """A body from a user's transport (``pod_transport=``, both shells) that reports its
    attempt's verdict when it ends, or, dropped unclosed, is handed to ``reaper`` when the
    garbage collector finds it (reported as cancelled, closed by the sender's owner)."""

    def __init__(
        self,
        inner: Any,
        attempt: Attempt,
        verdict: Verdict,
        *,
        reaper: Reaper,
        request: httpx.Request,
    ) -> None:
        self._inner = inner
        self._attempt = attempt
        self._verdict = verdict
        self._reaper = reaper
        self._request = request
        self._open = True

    def __del__(self) -> None:
        if self._open:
            self._open = False
            self._reaper.abandoned(self._inner, self._attempt, self._request, None)


class _ReportingStream(ReportingBody, httpx.AsyncByteStream):
    """An async ``pod_transport`` body (see :class:`ReportingBody`)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            report_attempt(self._attempt, classify(exc).outcome)
            raise
        except BaseException:
            report_attempt(self._attempt, Outcome.CANCELLED)
            raise

    async def aclose(self) -> None:
        self._open = False
        try:
            await self._inner.aclose()
        finally:
            report_attempt(self._attempt, self._verdict.outcome)
