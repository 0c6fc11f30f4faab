"""Sending one attempt to one address, for the shell of this module's flavour (its mode's own
primitives come from :mod:`headlesslb.sync.concurrency`).

:class:`PodSender` sends straight to an ``ip:port`` while the request keeps its Host header, with
one httpcore connection pool per address; it counts the requests in flight per address, so the
connections of a Pod that left DNS close as soon as its last request ends, however long that took.
An attempt's response is judged once, at header time (:func:`~headlesslb.io.bodies.answered`):
the sender hands the verdict to the shell, for the call core, and its body reports the
verdict's outcome to the pool exactly once, when it ends (:mod:`headlesslb.io.bodies`).
:class:`TransportSender` sends through a user's httpx transport instead (``pod_transport=``:
``httpx.MockTransport``, respx), for tests with no sockets behind the balancer.
"""

# Generated from headlesslb/io/sender.py by tools/unasync.py: edit that file, not this one.

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeAlias

import httpcore
import httpx

from headlesslb.core.events import EventHub
from headlesslb.core.limits import DEFAULT_LIMITS, ConnectionLimits
from headlesslb.core.pool import Attempt, Outcome
from headlesslb.core.retry import ANSWERED, RetryPolicy, Verdict
from headlesslb.errors import ClientClosed
from headlesslb.io.bodies import (
    Abandoned,
    Address,
    Reaper,
    answered,
    attempt_extensions,
    report_attempt,
)
from headlesslb.io.outcomes import classify, httpx_error
from headlesslb.io.tls import tls_context
from headlesslb.sync.concurrency import (
    forget,
    new_lock,
    new_network,
    release_later,
    shut_network,
)

__all__ = ["Answer", "PodSender", "SyncSender", "TransportSender"]

Answer: TypeAlias = tuple[httpx.Response, Verdict]
"""An attempt's response and its verdict, made by the sender at header time."""


class SyncSender(Protocol):
    """What the shell sends attempts with (both senders derive from it: :meth:`send_to` is
    written here once, over their :meth:`send`)."""

    def send(
        self,
        request: httpx.Request,
        host: str,
        port: int,
        scheme: bytes,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None,
        limit: float | None,
        attempt: Attempt | None,
        policy: RetryPolicy | None,
    ) -> Answer:
        """Send ``request`` to ``host:port`` over ``scheme`` (``sni``: the name TLS verifies),
        with ``headers`` instead of its own when given, each timeout capped at ``limit``.

        With a pool ``attempt`` (an attempt's :class:`~headlesslb.core.call.Send`), the
        response is judged by ``policy`` at header time, and its body reports the verdict's
        outcome to the attempt when it ends (a failed send is the caller's to report). Without
        one (health probes, the fallback) the verdict is ``ANSWERED`` and nothing is reported.
        Positional: the shell calls it once per attempt."""
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
        """Send ``request`` to ``host:port`` with no attempt to report (health probes, the
        fallback); ``sni`` is the name TLS verifies (https only); ``connect_timeout`` caps every
        timeout of the request."""
        response, _ = self.send(
            request, host, port, scheme, sni, headers, connect_timeout, None, None
        )
        return response

    def retire(self, keep: set[Address]) -> None:
        """Close connections to addresses not in ``keep`` once they are idle."""
        ...

    def reap_on(self, call_soon: Callable[[Callable[[], object]], object]) -> None:
        """Release bodies dropped unclosed where ``call_soon`` runs callbacks (the shell's
        loop, or its runtime's thread): ``call_soon`` must be safe from any thread and from the
        garbage collector."""
        ...

    def close(self) -> None:
        """Close everything; nothing is sent afterwards."""
        ...


def transport_request(
    request: httpx.Request,
    host: str,
    port: int,
    scheme: bytes,
    sni: str | None,
    headers: list[tuple[bytes, bytes]] | None,
    timeout: float | None,
) -> httpx.Request:
    """The httpx request a ``pod_transport`` gets for one attempt: ``scheme://host:port`` with
    the request's path, its Host header naming the Service."""
    return httpx.Request(
        request.method,
        httpx.URL(scheme=scheme.decode(), host=host, port=port, path="/").copy_with(
            raw_path=request.url.raw_path
        ),
        headers=headers if headers is not None else request.headers.raw,
        stream=request.stream,
        extensions=attempt_extensions(request.extensions, sni, timeout),
    )


class PodSender(SyncSender):
    """Sends requests straight to ``ip:port`` addresses, one httpcore connection pool per address.

    A pool per Pod, rather than one shared pool, keeps httpcore's per-request pool bookkeeping
    proportional to one Pod's connections instead of all of them (it walks every connection,
    twice per request). After ``fork()`` a child forgets the parent's pools and bodies without
    touching their sockets (closing them would shut the parent's connections down, TLS
    included).
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        http2: bool = False,
        limits: ConnectionLimits | None = None,
        events: EventHub | None = None,
    ) -> None:
        self._ssl_context = tls_context(verify, cert, httpx.create_ssl_context)
        self._http2 = http2
        self._limits = limits or DEFAULT_LIMITS
        self._reaper = Reaper(events)
        """Bodies dropped unclosed, released by the shell's owner (:meth:`reap_on`)."""
        self._lock = new_lock(self)
        self._network = new_network(httpcore)
        self._pools: dict[Address, httpcore.ConnectionPool] = {}
        self._active: dict[Address, int] = {}
        """Requests in flight per address, from the send until the response is closed."""
        self._departed: set[Address] = set()
        """Addresses whose pool closes as soon as nothing is in flight there."""
        self._closed = False
        forget(self, PodSender._forget)

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

    def send(
        self,
        request: httpx.Request,
        host: str,
        port: int,
        scheme: bytes,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None,
        limit: float | None,
        attempt: Attempt | None,
        policy: RetryPolicy | None,
    ) -> Answer:
        """Send ``request`` to ``host:port``, one httpcore pool per address (see
        :meth:`SyncSender.send`)."""
        # The httpcore request, aimed at host:port over the client's scheme (never the URL's),
        # Host header and path kept: built directly, it skips httpx's URL rebuild, most of a
        # naive rewriting transport's overhead.
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=scheme, host=host, port=port, target=request.url.raw_path),
            headers=headers if headers is not None else request.headers.raw,
            content=request.stream,
            extensions=(
                request.extensions  # the usual case (plain http, no time limit): no call
                if sni is None and limit is None
                else attempt_extensions(request.extensions, sni, limit)
            ),
        )
        address = (host, port)
        with self._lock:  # counted in until the body closes (_release)
            pool = self._pools.get(address)
            if pool is None:
                pool = self._new_pool(address)
            active = self._active
            active[address] = active.get(address, 0) + 1
        # Errors are mapped in except clauses, free until one is raised: a with block would
        # cost two calls per use, and every request sends once and reads and closes one body.
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
        if attempt is None or policy is None:
            return response, ANSWERED
        body.verdict = verdict = answered(response, attempt, policy)
        return response, verdict

    def _release(self, address: Address) -> None:
        pool = self._leave(address)
        if pool is not None:
            _close(pool)

    def _leave(self, address: Address) -> httpcore.ConnectionPool | None:
        """Count a request out of ``address``: the pool to close now, when it was the last one
        there and the address has departed (taken out at once: nothing new goes to it)."""
        with self._lock:
            left = self._active.get(address, 1) - 1
            if left > 0:
                self._active[address] = left
                return None
            self._active.pop(address, None)
            if address not in self._departed:
                return None
            self._departed.discard(address)
            return self._pools.pop(address, None)

    def reap_on(self, call_soon: Callable[[Callable[[], object]], object]) -> None:
        """Release bodies dropped unclosed where ``call_soon`` runs callbacks (the shell's
        loop, or its runtime's thread)."""
        self._reaper.wake = functools.partial(call_soon, self._reap)

    def _reap(self) -> None:
        self._reaper.reap(self._release_abandoned)

    def _release_abandoned(self, record: Abandoned) -> None:
        # Here, where the owner runs callbacks, not in the garbage collector's context: closing
        # takes httpcore's pool lock (not reentrant) and the count ours. The count drops now
        # (least-request sees it at once, and a departed pool is taken out of use now); the
        # closing follows (on a loop, a task: it awaits). httpcore closes a connection whose
        # response was not read to the end: it never goes back to the pool half-read.
        assert record.address is not None
        pool = self._leave(record.address)
        release_later(functools.partial(_discard, record.inner, pool))

    def retire(self, keep: set[Address]) -> None:
        """Close the connections of every address not in ``keep``: now if nothing is in flight
        there, else as soon as its last response is closed. Addresses in ``keep`` stay."""
        with self._lock:
            departed = {a for a in self._pools if a not in keep}
            idle = [self._pools.pop(a) for a in departed if a not in self._active]
            self._departed = {a for a in departed if a in self._pools}
        for pool in idle:
            _close(pool)

    @property
    def addresses(self) -> set[Address]:
        """Addresses with an open connection pool (diagnostics and tests)."""
        with self._lock:
            return set(self._pools)

    def _forget(self) -> None:
        """In a forked child: drop the parent's pools unclosed (closing would shut the parent's
        connections down, TLS included), start afresh."""
        self._network = new_network(httpcore)  # the parent's streams are never shut from here
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
        shut_network(self._network)
        for pool in pools:
            _close(pool)


def _close(closable: Any) -> None:
    with contextlib.suppress(Exception):  # a socket that fails to close is closed anyway
        closable.close()


def _discard(inner: Any, pool: httpcore.ConnectionPool | None) -> None:
    """Close an abandoned body's stream (httpcore closes a connection whose response was not
    read to the end: it is never reused) and, when that was its departed Pod's last request,
    the Pod's pool."""
    _close(inner)
    if pool is not None:
        _close(pool)


class _PodStream(httpx.SyncByteStream):
    """A response body from httpcore: errors mapped to httpx's, the request counted until close,
    and the attempt's outcome (its verdict's) reported exactly once, when the body ends (or,
    dropped unclosed, as cancelled once the garbage collector finds it:
    :class:`~headlesslb.io.bodies.Reaper`)."""

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
        sender: PodSender,
        address: Address,
        inner: Any,
        attempt: Attempt | None,
        request: httpx.Request,
    ) -> None:
        self._sender = sender
        self._reaper = sender._reaper  # its own, not a forked child's (PodSender._forget)
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
            self._reaper.abandoned(self._inner, self._attempt, self._request, self._address)

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


class TransportSender(SyncSender):
    """Sends each attempt through an httpx transport (``pod_transport=``), as a request for
    ``http(s)://<ip>:<port>/<path>`` carrying the Service's Host header: mock the Pods behind the
    balancer with ``httpx.MockTransport`` or respx, no sockets involved."""

    def __init__(self, transport: httpx.BaseTransport, events: EventHub | None = None) -> None:
        self._transport = transport
        self._closed = False
        self._reaper = Reaper(events)

    def send(
        self,
        request: httpx.Request,
        host: str,
        port: int,
        scheme: bytes,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None,
        limit: float | None,
        attempt: Attempt | None,
        policy: RetryPolicy | None,
    ) -> Answer:
        """Send through the transport (see :meth:`SyncSender.send`); a body read already,
        built with ``content=``/``json=``, reports its attempt's outcome now."""
        if self._closed:
            raise ClientClosed("the client was closed: nothing more is sent")
        outgoing = transport_request(request, host, port, scheme, sni, headers, limit)
        response = self._transport.handle_request(outgoing)
        if attempt is None or policy is None:
            return response, ANSWERED
        verdict = answered(response, attempt, policy)
        if response.is_closed:
            report_attempt(attempt, verdict.outcome)
        else:
            response.stream = _ReportingStream(
                response.stream, attempt, verdict, reaper=self._reaper, request=request
            )
        return response, verdict

    def retire(self, keep: set[Address]) -> None:
        """Nothing to close: the transport owns its connections."""

    def reap_on(self, call_soon: Callable[[Callable[[], object]], object]) -> None:
        """Release bodies dropped unclosed where ``call_soon`` runs callbacks."""
        self._reaper.wake = functools.partial(call_soon, self._reap)

    def _reap(self) -> None:
        self._reaper.reap(_discard_later)

    def close(self) -> None:
        """Close the transport; nothing is sent afterwards."""
        self._closed = True
        self._transport.close()


def _discard_later(record: Abandoned) -> None:
    release_later(functools.partial(_discard, record.inner, None))


class _ReportingStream(httpx.SyncByteStream):
    """A body from a user's transport (``pod_transport=``) that reports its attempt's verdict
    when it ends, or, dropped unclosed, is handed to ``reaper`` when the garbage collector finds
    it (reported as cancelled, closed by the sender's owner)."""

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
