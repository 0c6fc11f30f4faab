"""``headlesslb.sync.HeadlessTransport``: the blocking shell, an ``httpx.BaseTransport``.

It drives the same pure call core as the async transport (:mod:`headlesslb.core.call`), with
blocking sends on httpcore's sync connection pools, shared by every thread. Discovery and health
checks are the async client's own (:class:`~headlesslb.io.runtime.Runtime`), run on a private
event loop in one background thread: once the first resolution is in, no request ever waits for
DNS (a refresh-on-request design would make one request per TTL pay for a whole DNS round).

The transport leases its runtime on its first use: transports whose runtime specs are equal in
one process (``share_discovery=True``) share one on one background thread (:data:`_RUNTIMES`):
one refresher, pool and health checker for all of them. It is counted by its transports,
closable from any thread, and the last one to close stops the thread.

Fork-safe: a transport created, or even used, before ``fork()`` (gunicorn ``--preload``,
multiprocessing) works in the child. The child drops the parent's connections without touching
their sockets, its locks are new, its registry of shared runtimes is empty, and its background
thread is started again on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Future
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio.from_thread
import httpx
from typing_extensions import Unpack

from ..clientbase import TransportBase, check_url
from ..compose import compose
from ..core import forksafe
from ..core.call import (
    ABANDONED,
    WAITED,
    Backoff,
    Call,
    Deliver,
    Fail,
    Failed,
    FallbackFailed,
    FallbackResponded,
    Found,
    LookupPod,
    Responded,
    Router,
    Send,
    SendToFallback,
    Step,
)
from ..core.options import EXTENSION, PLAIN, RequestOptions
from ..errors import ClientClosed, InvalidRequest, NotStarted
from ..io import pauses
from ..io.outcomes import classify
from ..io.runtime import Runtime, RuntimeSpec
from ..io.sender import Answer, with_headers
from ..io.shared import Lease, Registry
from ..io.tls import tls_context
from ..options import TransportOptions
from .hedging import HedgeRunner
from .pool import LockedPool
from .sender import SyncPodSender, SyncSender, SyncTransportSender

__all__ = ["HeadlessTransport"]

T = TypeVar("T")

_RUNTIMES: Registry[RuntimeSpec, _Shared] = Registry()
"""The runtimes sync transports share, by :class:`RuntimeSpec`, each on its own thread."""


class HeadlessTransport(TransportBase, httpx.BaseTransport):
    """Balances each request over the Pods behind a headless Service, for ``httpx.Client``::

        from headlesslb.sync import HeadlessTransport

        with httpx.Client(transport=HeadlessTransport("web-hl", port="http"),
                          base_url="http://web-hl") as client:
            client.get("/items/42", extensions={"headlesslb": {"key": "user-42"}})

    The same arguments (:class:`~headlesslb.options.TransportOptions`), routing, failure
    handling, health checks, fallback and report as :class:`headlesslb.HeadlessTransport`. One
    transport is shared safely by many threads; it starts on ``with`` or on its first request,
    and can be closed from any thread.
    """

    def __init__(self, service: str, **options: Unpack[TransportOptions]) -> None:
        parts = self.parts = compose(service, options, pool_class=LockedPool)
        self.service = parts.service
        self.scheme = parts.scheme
        self.port = parts.port
        self.fallback = parts.fallback
        self.events = parts.events
        """The event stream: ``events.subscribe(observer)`` (see :mod:`headlesslb.events`)."""
        self._raw_scheme = parts.spec.raw_scheme  # read by every attempt: made once
        self._sni = parts.spec.sni
        pod_transport = parts.checked_pod_transport(httpx.BaseTransport)
        self._sender: SyncSender = (
            SyncTransportSender(pod_transport, parts.events)
            if pod_transport is not None
            else SyncPodSender(
                verify=parts.verify,
                cert=parts.cert,
                http2=parts.http2,
                limits=parts.limits,
                events=parts.events,
            )
        )
        self._lock = forksafe.lock(self)
        self._state: Literal["new", "open", "closed"] = "new"
        self._closing = threading.Event()
        """Set by :meth:`close`: wakes every request thread waiting out a back-off."""
        self._waits: set[Future[Any]] = set()
        """What request threads wait for on the discovery thread now (first answer, lookups):
        :meth:`close` cancels them, so they fail at once rather than when DNS answers."""
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._lease: Lease[_Shared] | None = None
        self._runtime: Runtime | None = None
        self._router: Router | None = None
        self._ready = False
        """Whether :attr:`runtime` was found ready (it stays so): checked once, not per request."""
        self._passthrough_transport: httpx.HTTPTransport | None = None
        self._hedging = HedgeRunner()
        self._finalizer: weakref.finalize[..., HeadlessTransport] = weakref.finalize(
            self, _stop_portal, None, None
        )
        forksafe.forget(self, HeadlessTransport._forget)

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> HeadlessTransport:
        self._start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """Whether the background thread runs (started, in this process, not closed)."""
        return self._state == "open" and self._portal is not None

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once some Pod may take requests, or raise why none may (a readiness probe):
        :meth:`headlesslb.HeadlessTransport.wait_ready`, blocking. Starts a transport not
        started yet; a :meth:`close` from another thread meanwhile raises
        :class:`~headlesslb.errors.ClientClosed`."""
        limit = self._ready_timeout(timeout)
        portal = self._portal
        if portal is None or self._state != "open":
            self._start()
            portal = self._portal
            assert portal is not None
        error = self._on_portal(portal, self.runtime.until_usable, limit)
        if error is not None:
            raise error

    def _start(self) -> None:
        forksafe.check()
        if self._state == "open" and self._portal is not None:
            return
        with self._lock:
            if self._state == "closed":
                raise NotStarted("this HeadlessTransport was closed: make a new one")
            if self._portal is not None:
                return
            parts, sender = self.parts, self._sender
            spec = parts.spec

            async def retire(keep: set[tuple[str, int]]) -> None:
                sender.retire(keep)  # closing idle sockets: quick, and thread-safe

            if spec.shareable:
                lease, made = _RUNTIMES.acquire(spec, lambda: _Shared(Runtime(spec)), _Shared.alive)
            else:
                lease, made = Lease(_Shared(Runtime(spec))), True
            runtime = lease.value.runtime
            # The sender, not this transport: a runtime outliving a transport dropped unclosed
            # must not keep it alive (its finalizer leaves the runtime).
            detach = runtime.attach(parts.events, retire, parts.fallback)
            sender.reap_on(lease.value.cm.call_soon)  # bodies dropped unclosed: released there
            if made:
                lease.value.start()  # once its first client is attached: it misses no event
            self._router = parts.router(runtime)
            self._runtime, self._lease, self._portal = runtime, lease, lease.value.portal
            self._ready = False
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _leave, lease, detach)
            self._state = "open"

    def close(self) -> None:
        """Stop discovery and close every connection; safe from any thread, and twice.

        A request in flight in another thread fails with a transport error and is not retried;
        one waiting for DNS or a back-off fails at once with :class:`ClientClosed`.
        """
        forksafe.check()  # a child's close() must never stop its parent's thread
        with self._lock:
            if self._state == "closed":
                return
            self._state = "closed"
            if self._router is not None:
                self._router.close()  # calls in flight send nothing more
            self._closing.set()
            waits, self._waits = self._waits, set()
            self._portal = self._lease = None
        for future in waits:
            future.cancel()  # the waiting thread wakes now; the task on the loop is cancelled
        # The sender first: from here on it opens nothing, and blocked reads wake. Stopping the
        # thread may take a moment, and a request resuming meanwhile must find it closed.
        self._sender.close()
        self._hedging.close()
        self._finalizer()  # stops the thread, or leaves the shared one (the last stops it)
        if self._passthrough_transport is not None:
            self._passthrough_transport.close()

    def _forget(self) -> None:
        """In a forked child: the parent's runtime and thread, its waits and connections are not
        the child's (the sender, pool, hedging threads and caches forget their own part). The
        first use leases a runtime afresh from the child's empty registry."""
        self._waits = set()  # the parent's threads' waits: nobody waits for them here
        closing, self._closing = self._closing, threading.Event()  # its lock may be held
        if closing.is_set():
            self._closing.set()
        self._portal = self._lease = None
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop_portal, None, None)
        self._passthrough_transport = None  # its connections are the parent's, left unclosed
        self._ready = False
        if self._state == "open":
            self._state = "new"  # started again on the first request

    # -- requests --------------------------------------------------------------------------------
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to a Pod (retrying on others, falling back if none is usable)."""
        portal = self._portal
        if portal is None or self._state != "open":  # after fork() the hook cleared it
            self._start()
            portal = self._portal
            assert portal is not None
        parts = self.parts
        raw = request.extensions.get(EXTENSION)
        options = PLAIN if raw is None else RequestOptions.from_extension(raw)
        if request.url.raw_host not in parts.urls.hosts:
            return self._pass_through(request, options)
        check_url(parts.urls, request)
        runtime, router = self._runtime, self._router  # set before the portal is
        assert runtime is not None and router is not None
        if not self._ready:
            if not runtime.ready:
                self._on_portal(portal, runtime.wait_ready)
            self._ready = runtime.ready
        call = router.start(
            request.method,
            options,
            replayable=isinstance(request.stream, httpx.ByteStream),
            url=request.url,
        )
        response = self._drive(call, request, portal, runtime)
        response.extensions[EXTENSION] = call.report()
        return response

    def _drive(
        self,
        call: Call,
        request: httpx.Request,
        portal: anyio.from_thread.BlockingPortal,
        runtime: Runtime,
    ) -> httpx.Response:
        """Perform the call core's steps, feeding it each one's result, until it delivers a
        response or fails."""
        step: Step = call.first()
        response: httpx.Response | None = None
        read_body = call.options.read_body
        while True:
            kind = type(step)
            if kind is Send:
                assert isinstance(step, Send)
                try:
                    if step.hedge_after is None:
                        response, verdict = self._attempt(request, step, read_body)
                    else:
                        response, verdict = self._hedging.race(
                            call, step, lambda send: self._attempt(request, send, read_body)
                        )
                except httpx.TransportError as exc:
                    step = call.feed(Failed(exc, classify(exc)))
                    continue
                except BaseException:
                    call.feed(ABANDONED)
                    raise
                step = call.feed(Responded(response.status_code, verdict))
                if type(step) is not Deliver:
                    response.close()  # a retried answer is dropped, its Pod reported
            elif kind is Deliver:
                assert response is not None
                return response
            elif kind is Backoff:
                assert isinstance(step, Backoff)
                self._closing.wait(step.seconds)  # close() ends it: the core then says so
                step = call.feed(WAITED)
            elif kind is LookupPod:
                assert isinstance(step, LookupPod)
                step = call.feed(Found(self._on_portal(portal, runtime.lookup_pod, step)))
            elif kind is SendToFallback:
                assert isinstance(step, SendToFallback)
                try:
                    response, sent = self._to_fallback(request, portal, step)
                except BaseException:
                    call.feed(ABANDONED)  # interrupted: the core closes the attempt's record
                    raise
                step = call.feed(sent)
            else:
                assert isinstance(step, Fail)
                raise step.error

    def _on_portal(
        self,
        portal: anyio.from_thread.BlockingPortal,
        func: Callable[..., Awaitable[T]],
        *args: object,
    ) -> T:
        """``func(*args)`` run on the discovery thread, waited for here; :meth:`close` wakes
        the wait at once with :class:`ClientClosed`."""
        future = portal.start_task_soon(func, *args)
        with self._lock:
            closed = self._state == "closed"
            if not closed:
                self._waits.add(future)
        try:
            if closed:
                future.cancel()
            return future.result()
        except CancelledError:
            raise ClientClosed(
                "the client was closed while this request waited for DNS: nothing was sent"
            ) from None
        finally:
            with self._lock:
                self._waits.discard(future)

    def _attempt(self, request: httpx.Request, step: Send, read_body: bool) -> Answer:
        response, verdict = self._sender.send_attempt(
            request,
            step,
            self.parts.retry,
            scheme=self._raw_scheme,
            sni=self._sni,
            headers=with_headers(request.headers.raw, step.headers) if step.headers else None,
        )
        if read_body:
            try:
                response.read()  # the body reports a broken stream to the pool itself
            except BaseException:
                response.close()  # httpx never gets this response: close it here
                raise
        return response, verdict

    def _to_fallback(
        self,
        request: httpx.Request,
        portal: anyio.from_thread.BlockingPortal,
        step: SendToFallback,
    ) -> tuple[httpx.Response | None, FallbackResponded | FallbackFailed]:
        fallback = self.fallback
        assert fallback is not None
        try:
            host, port = self._on_portal(portal, fallback.address)
        except httpx.TransportError as exc:
            return None, FallbackFailed(None, exc)
        address = f"{host}:{port}"
        try:
            response = self._sender.send_to(
                request,
                host,
                port,
                scheme=fallback.raw_scheme,
                sni=fallback.sni,
                headers=with_headers(fallback.headers_for(request), step.headers),
            )
        except httpx.TransportError as exc:
            fallback.failed(exc)
            return None, FallbackFailed(address, exc)
        return response, FallbackResponded(address, response.status_code)

    def _pass_through(self, request: httpx.Request, options: RequestOptions) -> httpx.Response:
        if options.routes:
            raise InvalidRequest(
                f"routing options apply to {self.service.host} only, not to"
                f" {request.url.host}: {options!r}",
                request=request,
            )
        if self._passthrough_transport is None:
            parts = self.parts
            self._passthrough_transport = httpx.HTTPTransport(
                verify=tls_context(parts.verify, parts.cert), http2=parts.http2
            )
        return self._passthrough_transport.handle_request(request)


class _PortalThread(AbstractContextManager[anyio.from_thread.BlockingPortal]):
    """The background thread: a private event loop running a ``BlockingPortal``.

    Not anyio's ``start_blocking_portal()``: that is a generator-based context manager, and a
    forked child drops the parent's (its thread does not exist there). A suspended generator
    that is dropped runs its ``finally``, ``portal.call(portal.stop)`` to a loop no thread runs,
    which blocked the child for ever inside the fork hook (every gunicorn ``--preload`` worker
    hung before serving). Dropping this object runs nothing; only ``__exit__`` stops the loop.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> anyio.from_thread.BlockingPortal:
        started: Future[anyio.from_thread.BlockingPortal] = Future()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            async with anyio.from_thread.BlockingPortal() as portal:
                started.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            pauses.shares_gil_with_request_threads()
            try:
                anyio.run(serve)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)

        thread = self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        self._portal = started.result()
        return self._portal

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop soon, from any thread, without waiting for the loop
        (a no-op once it has stopped)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(callback)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        portal, thread = self._portal, self._thread
        self._portal = self._thread = None
        if portal is not None:
            with contextlib.suppress(RuntimeError):  # its loop has stopped already
                portal.call(portal.stop, True)  # cancel what is left: nothing waits on close
        if thread is not None:
            thread.join()


class _Shared:
    """A runtime and the background thread running it: what a transport leases (one it shares,
    or its own). The thread starts at once, so a transport joining it has its loop at once;
    the runtime runs from :meth:`start`."""

    __slots__ = ("cm", "portal", "runtime", "task")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.cm = _PortalThread("headlesslb discovery")
        self.portal = self.cm.__enter__()
        self.task: Future[None] | None = None
        # A refused connection asks for an early DNS round. The pool calls this under its lock,
        # which the discovery thread may be waiting for: hand the wake-up to the loop without
        # waiting for it (portal.start_task_soon waits, and deadlocked both).
        runtime.pool.on_refused = functools.partial(self.cm.call_soon, runtime.refused)

    def start(self) -> None:
        """Run the runtime on the thread (by the transport that made it, once attached)."""
        self.task = self.portal.start_task_soon(self.runtime.run)

    def alive(self) -> bool:
        """Whether its task still runs (one that failed was logged: it is not handed out)."""
        return self.task is None or not self.task.done()


def _leave(lease: Lease[_Shared], detach: Callable[[], None]) -> None:
    """A transport leaves its runtime; the last one (the only one, if private) stops its thread."""
    detach()
    if lease.release():
        _stop_portal(lease.value.cm, lease.value.task)


def _stop_portal(
    cm: AbstractContextManager[anyio.from_thread.BlockingPortal] | None,
    task: Future[None] | None,
) -> None:
    """Cancel the background task and stop its thread (waits for it to end)."""
    if task is not None:
        task.cancel()
    if cm is not None:
        cm.__exit__(None, None, None)
