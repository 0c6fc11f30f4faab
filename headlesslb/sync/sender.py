"""Sending one attempt to one address, blocking: the sync twin of :mod:`headlesslb.io.sender`.

One httpcore ``ConnectionPool`` per Pod address, shared by every thread of the process; requests
in flight are counted per address (under a lock), so the connections of a Pod that left DNS close
as soon as its last request ends. A body dropped unclosed is released by the runtime's thread
once the garbage collector finds it (:class:`~headlesslb.io.sender.Reaper`). After ``fork()``
the child forgets the parent's pools and bodies without touching their sockets (closing them
would shut the parent's connections down, TLS included).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Protocol

import httpcore
import httpx

from ..core import forksafe
from ..core.call import Send
from ..core.events import EventHub
from ..core.pool import Attempt, Outcome
from ..core.retry import ANSWERED, RetryPolicy
from ..errors import ClientClosed
from ..io.outcomes import classify, httpx_error
from ..io.sender import (
    Abandoned,
    Answer,
    Reaper,
    ReportingBody,
    answered,
    pod_request,
    report_attempt,
    transport_answer,
    transport_request,
)
from ..io.tls import tls_context
from .network import Network

__all__ = ["SyncPodSender", "SyncSender", "SyncTransportSender"]

Address = tuple[str, int]


class SyncSender(Protocol):
    """What the sync shell sends attempts with."""

    def send_attempt(
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

    def send_to(
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

    def retire(self, keep: set[Address]) -> None:
        """Close connections to addresses not in ``keep`` once they are idle."""
        ...

    def reap_on(self, call_soon: Callable[[Callable[[], object]], None]) -> None:
        """Release bodies dropped unclosed on the thread ``call_soon`` hands callbacks to (the
        runtime's: ``call_soon`` must be safe from any thread and from the garbage collector)."""
        ...

    def close(self) -> None:
        """Close everything; nothing is sent afterwards."""
        ...


class SyncPodSender:
    """Blocking sends straight to ``ip:port`` addresses, one connection pool per address."""

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
        """Bodies dropped unclosed, released on the runtime's thread (:meth:`reap_on`)."""
        self._lock = forksafe.lock(self)
        self._network = Network()
        self._pools: dict[Address, httpcore.ConnectionPool] = {}
        self._active: dict[Address, int] = {}
        self._departed: set[Address] = set()
        self._closed = False
        forksafe.forget(self, SyncPodSender._forget)

    def _new_pool(self, address: Address) -> httpcore.ConnectionPool:
        """The first request to ``address``: its connection pool (under the lock)."""
        if self._closed:
            raise ClientClosed("the client was closed: no new connection is opened")
        limits = self._limits
        pool = self._pools[address] = httpcore.ConnectionPool(
            ssl_context=self._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http2=self._http2,
            network_backend=self._network,
        )
        return pool

    def send_attempt(
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
        response, body = self._send(
            request, endpoint.ip, endpoint.port, scheme, sni, headers, step.timeout, attempt
        )
        body.verdict = verdict = answered(response, attempt, policy)
        return response, verdict

    def send_to(
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
        """Send ``request`` to ``host:port`` with no attempt to report (the fallback; see
        :meth:`headlesslb.io.sender.PodSender.send_to`); ``connect_timeout`` caps every timeout
        of the attempt (a blocking send cannot be cancelled from outside)."""
        response, _ = self._send(request, host, port, scheme, sni, headers, connect_timeout, None)
        return response

    def _send(
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
            connect_timeout=None,
        )
        if connect_timeout is not None:
            core_request.extensions = _capped(core_request.extensions, connect_timeout)
        address = (host, port)
        with self._lock:  # counted in until the body closes (_release)
            pool = self._pools.get(address)
            if pool is None:
                pool = self._new_pool(address)
            active = self._active
            active[address] = active.get(address, 0) + 1
        try:
            core_response = pool.handle_request(core_request)
        except BaseException as exc:
            self._release(address)
            mapped = httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        body = _PodStream(self, address, core_response.stream, attempt, request)
        response = httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=body,
            extensions=core_response.extensions,
        )
        return response, body

    def _release(self, address: Address) -> None:
        with self._lock:
            left = self._active.get(address, 1) - 1
            if left > 0:
                self._active[address] = left
                return
            self._active.pop(address, None)
            pool = self._pools.pop(address, None) if address in self._departed else None
            self._departed.discard(address)
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close()

    def reap_on(self, call_soon: Callable[[Callable[[], object]], None]) -> None:
        """Release bodies dropped unclosed on the thread ``call_soon`` hands callbacks to (the
        transport's runtime thread, set when the transport starts)."""
        self._reaper.wake = functools.partial(call_soon, self._reap)

    def _reap(self) -> None:
        self._reaper.reap(self._release_abandoned)

    def _release_abandoned(self, record: Abandoned) -> None:
        # Here, on the runtime's thread, not in the garbage collector's context: closing takes
        # httpcore's pool lock (not reentrant) and the count ours. httpcore closes a connection
        # whose response was not read to the end: it never goes back to the pool half-read.
        with contextlib.suppress(Exception):  # a socket that fails to close is closed anyway
            record.inner.close()
        assert record.address is not None
        self._release(record.address)

    def retire(self, keep: set[Address]) -> None:
        """Close the connections of every address not in ``keep``: now if nothing is in flight
        there, else as soon as its last response is closed."""
        with self._lock:
            self._departed = {a for a in self._pools if a not in keep}
            idle = [self._pools.pop(a) for a in list(self._departed) if a not in self._active]
            self._departed = {a for a in self._departed if a in self._pools}
        for pool in idle:
            with contextlib.suppress(Exception):
                pool.close()

    @property
    def addresses(self) -> set[Address]:
        """Addresses with an open connection pool (diagnostics and tests)."""
        with self._lock:
            return set(self._pools)

    def _forget(self) -> None:
        """In a forked child: drop the parent's pools unclosed (closing would shut the parent's
        connections down, TLS included), start afresh."""
        self._network = Network()  # the parent's streams are never shut down from here
        self._pools = {}
        self._active = {}
        self._departed = set()
        # The parent's bodies keep the parent's reaper: dropped here, they are never released
        # (that would close the parent's connections); the child's are released by its own.
        self._reaper.wake = None
        self._reaper = Reaper(self._reaper.events)

    def close(self) -> None:
        """Close every connection; from now on nothing is sent. A request blocked on one in
        another thread fails at once (a transport error)."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
            self._departed.clear()
        self._network.shutdown()
        for pool in pools:
            with contextlib.suppress(Exception):
                pool.close()


def _capped(extensions: MutableMapping[str, Any], seconds: float) -> dict[str, Any]:
    timeouts = dict(extensions.get("timeout") or {})
    for phase in ("connect", "read", "write", "pool"):
        current = timeouts.get(phase)
        timeouts[phase] = seconds if current is None else min(current, seconds)
    return {**extensions, "timeout": timeouts}


class _PodStream(httpx.SyncByteStream):
    """A blocking response body: errors mapped, the request counted until close, the attempt's
    outcome (its verdict's) reported exactly once when the body ends (or, dropped unclosed, as
    cancelled once the garbage collector finds it: :class:`~headlesslb.io.sender.Reaper`)."""

    __slots__ = (
        "_address",
        "_attempt",
        "_inner",
        "_open",
        "_reaper",
        "_request",
        "_sender",
        "verdict",
    )

    def __init__(
        self,
        sender: SyncPodSender,
        address: Address,
        inner: Any,
        attempt: Attempt | None,
        request: httpx.Request,
    ) -> None:
        self._sender = sender
        self._reaper = sender._reaper  # its own, not a forked child's (SyncPodSender._forget)
        self._address = address
        self._inner = inner
        self._attempt = attempt
        self._request = request
        self._open = True
        self.verdict = ANSWERED
        """What the response means, set by the sender once judged (with no attempt, unused)."""

    # As the async body's: only Reaper.abandoned runs here; the runtime thread releases it.
    def __del__(self) -> None:
        if self._open:
            self._open = False
            self._reaper.abandoned(self._inner, self._attempt, self._request, self._address)

    # Errors are mapped in except clauses, free until one is raised: a with block would cost
    # two calls per use, and every request reads and closes one body.
    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except BaseException as exc:
            mapped = httpx_error(exc)
            if mapped is not None:
                report_attempt(self._attempt, classify(mapped).outcome)
                raise mapped from exc
            if isinstance(exc, httpx.TransportError):
                report_attempt(self._attempt, classify(exc).outcome)
            else:
                report_attempt(self._attempt, Outcome.CANCELLED)
            raise

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self._inner.close()
        except BaseException as exc:
            mapped = httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            report_attempt(self._attempt, self.verdict.outcome)
            self._sender._release(self._address)


class SyncTransportSender:
    """Sends each attempt through a blocking httpx transport (``pod_transport=``), as a request
    for ``http(s)://<ip>:<port>/<path>`` carrying the Service's Host header."""

    def __init__(self, transport: httpx.BaseTransport, events: EventHub | None = None) -> None:
        self._transport = transport
        self._closed = False
        self._reaper = Reaper(events)

    def send_attempt(
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
        response = self.send_to(
            request,
            endpoint.ip,
            endpoint.port,
            scheme=scheme,
            sni=sni,
            headers=headers,
            connect_timeout=step.timeout,
        )
        return transport_answer(
            response,
            step.attempt,
            policy,
            functools.partial(_ReportingStream, reaper=self._reaper, request=request),
        )

    def send_to(
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
        return self._transport.handle_request(outgoing)

    def retire(self, keep: set[Address]) -> None:
        """Nothing to close: the transport owns its connections."""

    def reap_on(self, call_soon: Callable[[Callable[[], object]], None]) -> None:
        """Release bodies dropped unclosed on the thread ``call_soon`` hands callbacks to."""
        self._reaper.wake = functools.partial(call_soon, self._reap)

    def _reap(self) -> None:
        self._reaper.reap(_close_inner)

    def close(self) -> None:
        """Close the transport; nothing is sent afterwards."""
        self._closed = True
        self._transport.close()


def _close_inner(record: Abandoned) -> None:
    record.inner.close()


class _ReportingStream(ReportingBody, httpx.SyncByteStream):
    """A blocking ``pod_transport`` body (see :class:`~headlesslb.io.sender.ReportingBody`)."""

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except httpx.TransportError as exc:
            report_attempt(self._attempt, classify(exc).outcome)
            raise
        except BaseException:
            report_attempt(self._attempt, Outcome.CANCELLED)
            raise

    def close(self) -> None:
        self._open = False
        try:
            self._inner.close()
        finally:
            report_attempt(self._attempt, self._verdict.outcome)
