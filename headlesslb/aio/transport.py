"""``HeadlessTransport``: the async shell, an httpx transport balancing over a headless Service.

It drives the pure call core (:mod:`headlesslb.core.call`): the core decides every step of a
request, this shell performs it with anyio and httpcore and reports back. The caller's
``httpx.Request`` is never mutated, so ``response.url`` and redirects keep the Service name.

The client's configuration decides the scheme (TLS or not) and the port: a URL that names the
Service with another scheme or port is refused before a byte leaves (:class:`InvalidRequest`).
Discovery and health checks (:class:`~headlesslb.io.runtime.Runtime`) run in the background from
the transport's start until it is closed, from any task (:mod:`headlesslb.io.tasks`); nothing
outlives it, and nothing is sent after close. It starts when it is entered, or else on its first
request (an SDK's client is never entered): it leases its runtime then, and transports whose
runtime specs are equal on one event loop share one (``share_discovery=True``,
:data:`_RUNTIMES`), which belongs to the loop, not to the first transport's task; the last
transport to close stops it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal, TypeVar

import anyio
import httpx
from typing_extensions import Unpack

from ..clientbase import TransportBase, check_url
from ..compose import compose
from ..core.call import (
    ABANDONED,
    HEDGE_DUE,
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
    Settled,
    Step,
)
from ..core.options import EXTENSION, PLAIN, RequestOptions
from ..errors import ClientClosed, DeadlineExceeded, InvalidRequest, NotStarted
from ..io.outcomes import classify
from ..io.runtime import Runtime, RuntimeSpec
from ..io.sender import Answer, AsyncSender, PodSender, TransportSender, with_headers
from ..io.shared import Lease, Registry, loop_identity
from ..io.tasks import Background
from ..io.tls import tls_context
from ..options import TransportOptions

__all__ = ["HeadlessTransport"]

T = TypeVar("T")

_RUNTIMES: Registry[tuple[object, RuntimeSpec], _Running] = Registry()
"""The runtimes async transports share, by (event loop, :class:`RuntimeSpec`)."""


class HeadlessTransport(TransportBase, httpx.AsyncBaseTransport):
    """Balances each request over the Pods behind a headless Service.

    Use it with any ``httpx.AsyncClient``; the client's ``async with`` starts discovery::

        transport = HeadlessTransport("web-hl", port="http", fallback="web-lb")
        async with httpx.AsyncClient(transport=transport, base_url="http://web-hl") as client:
            await client.get("/items/42", extensions={"headlesslb": {"key": "user-42"}})

    A client that is never entered (an SDK's) starts it on its first request, once however many
    requests arrive together; they wait for the first DNS answer (at most
    ``RefreshPolicy.first_resolution_timeout``). The client's ``aclose()`` closes it.

    Requests whose URL names the Service (``web-hl``, ``web-hl.ns``, ``web-hl.ns.svc``, the FQDN,
    with or without its trailing dot) go to its Pods, with that name kept in the Host header. Such
    a URL must use the transport's ``scheme``, and give no port or the Service's own numeric port:
    anything else raises :class:`~headlesslb.errors.InvalidRequest` before a byte is sent. A URL
    for any other host (a redirect elsewhere, say) is sent as plain httpx would send it; routing
    options on such a request raise ``InvalidRequest`` rather than vanish. The keyword arguments
    are :class:`~headlesslb.options.TransportOptions`.
    """

    def __init__(self, service: str, **options: Unpack[TransportOptions]) -> None:
        parts = self.parts = compose(service, options)
        self.service = parts.service
        self.scheme = parts.scheme
        self.port = parts.port
        self.fallback = parts.fallback
        self.events = parts.events
        """The event stream: ``events.subscribe(observer)`` (see :mod:`headlesslb.events`)."""
        pod_transport = parts.checked_pod_transport(httpx.AsyncBaseTransport)
        self._sender: AsyncSender = (
            TransportSender(pod_transport, parts.events)
            if pod_transport is not None
            else PodSender(
                verify=parts.verify,
                cert=parts.cert,
                http2=parts.http2,
                limits=parts.limits,
                events=parts.events,
            )
        )
        self._passthrough_transport: httpx.AsyncHTTPTransport | None = None
        self._lease: Lease[_Running] | None = None
        self._runtime: Runtime | None = None
        self._router: Router | None = None
        self._detach: Callable[[], None] | None = None
        self._state: Literal["new", "open", "closed"] = "new"
        self._entered = False
        self._waiters: set[anyio.CancelScope] = set()
        """Requests waiting now for DNS (first answer, lookups) or a back-off: :meth:`aclose`
        cancels them, so they fail at once rather than when the wait would have ended."""

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> HeadlessTransport:
        if self._entered or self._state == "closed":
            raise NotStarted("a HeadlessTransport can be entered once; make a new one")
        self._entered = True
        if self._state == "new":  # not started by a request already
            self._start()
        return self

    def _start(self) -> None:
        """Lease the runtime and start it on the running loop. Nothing here awaits, so of the
        requests arriving together at a new transport exactly one starts it."""
        self._state = "open"
        parts = self.parts
        spec = parts.spec
        if spec.shareable:
            lease, made = _RUNTIMES.acquire(
                (loop_identity(), spec), lambda: _Running(Runtime(spec)), _Running.alive
            )
        else:
            lease, made = Lease(_Running(Runtime(spec))), True
        self._lease = lease
        runtime = self._runtime = lease.value.runtime
        self._router = parts.router(runtime)
        self._detach = runtime.attach(parts.events, self._sender.retire, parts.fallback)
        if made:
            # The loop's task, not this one's: closing this transport leaves the others working.
            lease.value.background.spawn("discovery and health checks", runtime.run)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop discovery and close every connection; the transport cannot be used after this.

        Safe from any task, not only the one that entered it. A request still in flight fails
        with a transport error and is not retried: nothing is sent after close.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        if self._router is not None:
            self._router.close()  # calls in flight send nothing more
        for scope in self._waiters:
            scope.cancel()  # each raises ClientClosed in its own task
        with anyio.CancelScope(shield=True):
            # The sender first: from here on it opens nothing, and a request that resumes
            # while the background stops finds it closed.
            await self._sender.aclose()
            lease, self._lease = self._lease, None
            if lease is not None:
                if self._detach is not None:
                    self._detach()
                if lease.release():  # the last transport of the runtime stops it
                    await lease.value.background.aclose()
            if self._passthrough_transport is not None:
                await self._passthrough_transport.aclose()

    @property
    def running(self) -> bool:
        """Whether the transport was started (entered, or by a request) and not closed."""
        return self._state == "open"

    # A timeout argument, as readiness probes (and redis-py's ping) take one: ASYNC109's
    # cancel-scope advice would leave the caller no way to tell a timeout from a reason.
    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once some Pod may take requests, or raise why none may (a readiness probe).

        Waits, at most ``timeout`` seconds (None: ``RefreshPolicy.first_resolution_timeout``),
        for the first DNS answer and, with ``HealthCheck(start_unhealthy=True)``, the first
        health checks of its Pods; then says what it found at once, without waiting for later
        rounds: :class:`~headlesslb.errors.ServiceNotFound` (NXDOMAIN),
        :class:`~headlesslb.errors.EmptyAnswer`, :class:`~headlesslb.errors.DnsUnreachable`,
        :class:`~headlesslb.errors.NoHealthyPods` or
        :class:`~headlesslb.errors.NotReadyInTime`, all :class:`~headlesslb.errors.NotReady`.
        Starts a transport not started yet, as a first request would; a close meanwhile raises
        :class:`~headlesslb.errors.ClientClosed`.
        """
        limit = self._ready_timeout(timeout)
        if self._state != "open":
            if self._state == "closed":
                raise NotStarted("this HeadlessTransport was closed: make a new one")
            self._start()
        runtime = self.runtime
        error = await self._until_closed(runtime.until_usable(limit))
        if error is not None:
            raise error

    # -- requests --------------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to a Pod (retrying on others, falling back if none is usable)."""
        if self._state != "open":
            if self._state == "closed":
                raise NotStarted("this HeadlessTransport was closed: make a new one")
            self._start()  # a client that was never entered: its first request starts it
        parts = self.parts
        raw = request.extensions.get(EXTENSION)
        options = PLAIN if raw is None else RequestOptions.from_extension(raw)
        if request.url.raw_host not in parts.urls.hosts:  # httpx lower-cases hosts already
            # Not this Service (say, a redirect to another site): send it as httpx would.
            return await self._pass_through(request, options)
        check_url(parts.urls, request)
        runtime, router = self._runtime, self._router
        assert runtime is not None and router is not None
        if not runtime.ready:
            await self._until_closed(runtime.wait_ready())
        call = router.start(
            request.method,
            options,
            replayable=isinstance(request.stream, httpx.ByteStream),
            url=request.url,
        )
        deadline = call.deadline
        if deadline is None:
            response = await self._drive(call, request)
        else:
            with anyio.move_on_after(deadline) as scope:
                response = await self._drive(call, request)
            if scope.cancelled_caught:
                raise DeadlineExceeded(
                    f"request deadline of {deadline:g} s exceeded ({call.summary()})",
                    request=request,
                )
        response.extensions[EXTENSION] = call.report()
        return response

    async def _drive(self, call: Call, request: httpx.Request) -> httpx.Response:
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
                        response, verdict = await self._attempt(request, step, read_body)
                    else:
                        response, verdict = await self._race(call, request, step, read_body)
                except httpx.TransportError as exc:
                    step = call.feed(Failed(exc, classify(exc)))
                    continue
                except BaseException:
                    call.feed(ABANDONED)
                    raise
                step = call.feed(Responded(response.status_code, verdict))
                if type(step) is not Deliver:
                    await response.aclose()  # a retried answer is dropped, its Pod reported
            elif kind is Deliver:
                assert response is not None
                return response
            elif kind is Backoff:
                assert isinstance(step, Backoff)
                # A close cuts the back-off short; the core then says what follows (a close:
                # nothing is sent), as in the sync shell.
                with contextlib.suppress(ClientClosed):
                    await self._until_closed(anyio.sleep(step.seconds))
                step = call.feed(WAITED)
            elif kind is LookupPod:
                assert isinstance(step, LookupPod)
                step = call.feed(Found(await self._until_closed(self.runtime.lookup_pod(step))))
            elif kind is SendToFallback:
                assert isinstance(step, SendToFallback)
                try:
                    response, sent = await self._to_fallback(request, step)
                except BaseException:
                    call.feed(ABANDONED)  # cancelled: the core closes the attempt's record
                    raise
                step = call.feed(sent)
            else:
                assert isinstance(step, Fail)
                raise step.error

    async def _until_closed(self, wait: Awaitable[T]) -> T:
        """``await wait``, unless :meth:`aclose` ends it first: then :class:`ClientClosed`."""
        scope = anyio.CancelScope()
        self._waiters.add(scope)
        try:
            with scope:
                if self._state == "closed":
                    scope.cancel()
                return await wait
        finally:
            self._waiters.discard(scope)
        raise ClientClosed("the client was closed while this request waited: nothing was sent")

    async def _race(
        self, call: Call, request: httpx.Request, step: Send, read_body: bool
    ) -> Answer:
        """``step``, and a hedge to another Pod if the core sends one when ``hedge_after``
        passes (``HEDGE_DUE``): the first to finish wins, the other is cancelled (httpcore
        closes a connection whose exchange was cancelled, so it is never reused half-read) and
        the core records it (``Settled``)."""
        assert step.hedge_after is not None
        first: list[tuple[Send, Answer | Exception]] = []
        hedge: Send | None = None  # stays None when the first finishes within the delay

        async def run(attempt: Send) -> None:
            try:
                result: Answer | Exception = await self._attempt(request, attempt, read_body)
            except Exception as exc:  # raised as itself below, never as an ExceptionGroup
                result = exc
            if first:  # both finished at once: this one lost, its answer is dropped
                if not isinstance(result, Exception):
                    response, _ = result
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                return
            first.append((attempt, result))
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(run, step)
            await anyio.sleep(step.hedge_after)
            hedge = None if first else call.feed(HEDGE_DUE)
            if hedge is not None:
                group.start_soon(run, hedge)
            await anyio.sleep_forever()  # until the first to finish cancels the group
        winner, result = first[0]
        if hedge is not None:
            call.feed(Settled(winner))
        if isinstance(result, Exception):
            raise result
        return result

    async def _attempt(self, request: httpx.Request, step: Send, read_body: bool) -> Answer:
        timeout = step.timeout
        send = self._sender.send_attempt
        headers = with_headers(request.headers.raw, step.headers) if step.headers else None
        policy, spec = self.parts.retry, self.parts.spec
        if timeout is None:
            response, verdict = await send(
                request, step, policy, scheme=spec.raw_scheme, sni=spec.sni, headers=headers
            )
        else:
            try:
                # httpcore's own connect timeout fires first when connecting eats the whole
                # budget, so a Pod that silently drops SYNs gives ConnectTimeout (never sent:
                # retryable for any method), not a read timeout.
                with anyio.fail_after(timeout * 1.05):
                    response, verdict = await send(
                        request,
                        step,
                        policy,
                        scheme=spec.raw_scheme,
                        sni=spec.sni,
                        headers=headers,
                    )
            except TimeoutError:
                raise httpx.ReadTimeout(
                    f"{step.endpoint} gave no response within the per-try timeout of {timeout:g} s",
                    request=request,
                ) from None
        if read_body:
            try:
                await response.aread()  # the body reports a broken stream to the pool itself
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await response.aclose()  # httpx never gets this response: close it here
                raise
        return response, verdict

    async def _to_fallback(
        self, request: httpx.Request, step: SendToFallback
    ) -> tuple[httpx.Response | None, FallbackResponded | FallbackFailed]:
        fallback = self.fallback
        assert fallback is not None
        try:
            host, port = await self._until_closed(fallback.address())
        except httpx.TransportError as exc:
            return None, FallbackFailed(None, exc)
        address = f"{host}:{port}"
        try:
            response = await self._sender.send_to(
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

    async def _pass_through(
        self, request: httpx.Request, options: RequestOptions
    ) -> httpx.Response:
        if options.routes:
            raise InvalidRequest(
                f"routing options apply to {self.service.host} only, not to"
                f" {request.url.host}: {options!r}",
                request=request,
            )
        if self._passthrough_transport is None:
            parts = self.parts
            self._passthrough_transport = httpx.AsyncHTTPTransport(
                verify=tls_context(parts.verify, parts.cert), http2=parts.http2
            )
        return await self._passthrough_transport.handle_async_request(request)


class _Running:
    """A runtime and the loop's background task running it: what a transport leases."""

    __slots__ = ("background", "runtime")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.background = Background()

    def alive(self) -> bool:
        """Whether its task still runs (one that failed was logged: it is not handed out)."""
        return self.background.running > 0
