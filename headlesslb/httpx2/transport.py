"""``HeadlessTransport``: an httpx2 transport balancing over a headless Service.

It drives the pure call core (:mod:`headlesslb.core.call`): the core decides every step of a
request, this shell performs it and reports back; what its mode does by hand (the lifecycle,
waits, races, time limits) is behind :mod:`headlesslb.aio.host` and
:mod:`headlesslb.io.concurrency`. The caller's request is never mutated, so ``response.url``
and redirects keep the Service name.

The client's configuration decides the scheme (TLS or not) and the port: a URL that names the
Service with another scheme or port is refused before a byte leaves (:class:`InvalidRequest`).
Discovery and health checks (:class:`~headlesslb.io.runtime.Runtime`) run in the background from
the transport's start until it is closed, closable from anywhere; nothing outlives it, and nothing
is sent after close. It starts when it is entered, or else on its first request (an SDK's client
is never entered).
"""

# Generated from headlesslb/aio/transport.py by tools/unasync.py: edit that file, not this one.

from __future__ import annotations

import functools
from types import TracebackType

import httpx2
from typing_extensions import Unpack

from headlesslb.aio.host import AsyncHost
from headlesslb.clientbase import TransportBase, check_url
from headlesslb.compose import compose
from headlesslb.core.call import (
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
    Send,
    SendToFallback,
    Step,
)
from headlesslb.core.keys import derive
from headlesslb.core.options import EXTENSION, PLAIN, RequestOptions
from headlesslb.errors import DeadlineExceeded, HeadlessLBError, InvalidRequest
from headlesslb.httpx2.options import TransportOptions
from headlesslb.httpx2.sender import Answer, AsyncSender, PodSender, TransportSender
from headlesslb.io.bodies import with_headers
from headlesslb.io.concurrency import deadline_scope, forget, shielded, time_limit
from headlesslb.io.flavours.httpx2 import FAILURES, for_caller
from headlesslb.io.outcomes import classify
from headlesslb.io.tls import tls_context

__all__ = ["HeadlessTransport"]


class HeadlessTransport(TransportBase, httpx2.AsyncBaseTransport):
    """Balances each request over the Pods behind a headless Service::

        transport = HeadlessTransport("web-hl", port="http", fallback="web-lb")
        async with httpx2.AsyncClient(transport=transport, base_url="http://web-hl") as client:
            await client.get("/items/42", extensions={"headlesslb": {"key": "user-42"}})

    The client's ``async with`` starts discovery; a client that is never entered (an SDK's)
    starts it on its first request, once however many requests arrive together, and they wait
    for the first DNS answer (at most ``RefreshPolicy.first_resolution_timeout``). The client's
    ``aclose()`` closes it, from anywhere. One transport may serve many concurrent requests.

    Requests whose URL names the Service (``web-hl``, ``web-hl.ns``, ``web-hl.ns.svc``, the FQDN,
    with or without its trailing dot) go to its Pods, with that name kept in the Host header. Such
    a URL must use the transport's ``scheme``, and give no port or the Service's own numeric port:
    anything else raises :class:`~headlesslb.errors.InvalidRequest` before a byte is sent. A URL
    for any other host (a redirect elsewhere, say) is sent as plain httpx2 would send it; routing
    options on such a request raise ``InvalidRequest`` rather than vanish. The keyword arguments
    are :class:`~headlesslb.httpx2.options.TransportOptions`.
    """

    _host: AsyncHost

    def __init__(self, service: str, **options: Unpack[TransportOptions]) -> None:
        parts = self.parts = compose(service, options, pool_class=AsyncHost.pool_class)
        self.service = parts.service
        self.scheme = parts.scheme
        self.port = parts.port
        self.fallback = parts.fallback
        self.events = parts.events
        """The event stream: ``events.subscribe(observer)`` (see :mod:`headlesslb.events`)."""
        self._raw_scheme = parts.spec.raw_scheme  # read by every attempt: made once
        self._sni = parts.spec.sni
        self._retry = parts.retry
        pod_transport = parts.checked_pod_transport(httpx2.AsyncBaseTransport)
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
        self._host = AsyncHost(parts, self._sender)
        self._passthrough_transport: httpx2.AsyncHTTPTransport | None = None
        forget(self, HeadlessTransport._forget)

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> HeadlessTransport:
        self._host.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start discovery now rather than on the first request; once, however often called
        (a closed transport raises :class:`~headlesslb.errors.NotStarted`)."""
        self._host.start()

    async def aclose(self) -> None:
        """Stop discovery and close every connection; the transport cannot be used after this.

        Safe from anywhere, and twice. A request still in flight fails with a transport error and
        is not retried; one waiting for DNS or a back-off fails at once with
        :class:`~headlesslb.errors.ClientClosed`: nothing is sent after close.
        """
        if not self._host.closing():
            return
        with shielded():
            # The sender first: from here on it opens nothing, and a request that resumes
            # while the background stops finds it closed.
            await self._sender.aclose()
            await self._host.stop()
            if self._passthrough_transport is not None:
                await self._passthrough_transport.aclose()

    def _forget(self) -> None:
        """In a forked child: the pass-through connections are the parent's, left unclosed."""
        self._passthrough_transport = None

    @property
    def running(self) -> bool:
        """Whether the transport was started (entered, or by a request) and not closed."""
        return self._host.running

    # A timeout argument, as readiness probes (and redis-py's ping) take one, rather than a
    # time limit around the call: with one, the caller could not tell a timeout from a reason.
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
        host = self._host
        if not host.open:
            host.start()
        try:
            error = await host.wait(self.runtime.until_usable, limit)
            if error is not None:
                raise error
        except HeadlessLBError as exc:
            flavoured = for_caller(exc, None)
            if flavoured is exc:
                raise
            raise flavoured from exc.__cause__

    # -- requests --------------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request`` to a Pod (retrying on others, falling back if none is usable)."""
        host = self._host
        if not host.open:
            host.start()  # a client that was never entered: its first request starts it
        try:
            parts = self.parts
            raw = request.extensions.get(EXTENSION)
            options = PLAIN if raw is None else RequestOptions.from_extension(raw)
            if request.url.raw_host not in parts.urls.hosts:  # httpx2 lower-cases hosts already
                # Not this Service (say, a redirect to another site): send it as httpx2 would.
                return await self._pass_through(request, options)
            check_url(parts.urls, request)
            key_from = parts.key_from
            if key_from is not None:
                options = derive(options, key_from, request)
            runtime, router = host.runtime, host.router
            assert runtime is not None and router is not None
            if not runtime.ready:
                await host.wait(runtime.wait_ready)
            call = router.start(
                request.method,
                options,
                replayable=isinstance(request.stream, httpx2.ByteStream),
                url=request.url,
            )
            deadline = call.deadline
            if deadline is None:
                response = await self._drive(call, request)
            else:
                with deadline_scope(deadline) as scope:
                    response = await self._drive(call, request)
                if scope.cancelled_caught:
                    raise DeadlineExceeded(
                        f"request deadline of {deadline:g} s exceeded ({call.summary()})",
                        request=request,
                    )
        except HeadlessLBError as exc:
            # Raised as the flavour's own error too (httpx2's TransportError, say), so that
            # an SDK maps it to its connection or timeout error.
            flavoured = for_caller(exc, request)
            if flavoured is exc:
                raise
            raise flavoured from exc.__cause__
        response.extensions[EXTENSION] = call.report()
        return response

    async def _drive(self, call: Call, request: httpx2.Request) -> httpx2.Response:
        """Perform the call core's steps, feeding it each one's result, until it delivers a
        response or fails."""
        step: Step = call.first()
        response: httpx2.Response | None = None
        read_body = call.options.read_body
        host = self._host
        while True:
            kind = type(step)
            if kind is Send:
                assert isinstance(step, Send)
                try:
                    if step.hedge_after is None:
                        answer = await self._attempt(request, step, read_body)
                    else:
                        attempt = functools.partial(self._attempt, request, read_body=read_body)
                        answer = await host.race(call, step, attempt)
                except FAILURES as exc:
                    step = call.feed(Failed(exc, classify(exc)))
                    continue
                except BaseException:
                    call.feed(ABANDONED)
                    raise
                response, verdict = answer
                step = call.feed(Responded(response.status_code, verdict))
                if type(step) is not Deliver:
                    await response.aclose()  # a retried answer is dropped, its Pod reported
            elif kind is Deliver:
                assert response is not None
                return response
            elif kind is Backoff:
                assert isinstance(step, Backoff)
                await host.pause(step.seconds)  # a close cuts it short: the core then says so
                step = call.feed(WAITED)
            elif kind is LookupPod:
                assert isinstance(step, LookupPod)
                step = call.feed(Found(await host.wait(self.runtime.lookup_pod, step)))
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

    async def _attempt(self, request: httpx2.Request, step: Send, read_body: bool) -> Answer:
        timeout = step.timeout
        if timeout is None:
            answer = await self._send(request, step)
            if not read_body:
                return answer  # the usual case, as the sender made it
            response, verdict = answer
        else:
            try:
                # The sender caps httpcore2's own timeouts at the per-try timeout, and they fire
                # first: a Pod that silently drops SYNs gives ConnectTimeout (never sent:
                # retryable for any method), not a read timeout. This bounds the whole attempt,
                # which per-phase timeouts do not (a body trickling in).
                with time_limit(timeout * 1.05):
                    response, verdict = await self._send(request, step)
            except TimeoutError:
                raise httpx2.ReadTimeout(
                    f"{step.endpoint} gave no response within the per-try timeout of {timeout:g} s",
                    request=request,
                ) from None
        if read_body:
            try:
                await response.aread()  # the body reports a broken stream to the pool itself
            except BaseException:
                with shielded():
                    await response.aclose()  # httpx2 never gets this response: close it here
                raise
        return response, verdict

    async def _send(self, request: httpx2.Request, step: Send) -> Answer:
        """Send the attempt ``step``: to its Pod, over the client's scheme, with the headers it
        adds, within its per-try timeout; judged by the retry policy at header time."""
        endpoint = step.state.endpoint
        return await self._sender.send(
            request,
            endpoint.ip,
            endpoint.port,
            self._raw_scheme,
            self._sni,
            with_headers(request.headers.raw, step.headers) if step.headers else None,
            step.timeout,
            step.attempt,
            self._retry,
        )

    async def _to_fallback(
        self, request: httpx2.Request, step: SendToFallback
    ) -> tuple[httpx2.Response | None, FallbackResponded | FallbackFailed]:
        fallback = self.fallback
        assert fallback is not None
        try:
            host, port = await self._host.wait(fallback.address)
        except FAILURES as exc:
            return None, FallbackFailed(None, exc)
        address = f"{host}:{port}"
        try:
            response = await self._sender.send_to(
                request,
                host,
                port,
                scheme=fallback.raw_scheme,
                sni=fallback.sni,
                headers=with_headers(fallback.headers_for(request.headers.raw), step.headers),
            )
        except FAILURES as exc:
            fallback.failed(exc)
            return None, FallbackFailed(address, exc)
        return response, FallbackResponded(address, response.status_code)

    async def _pass_through(
        self, request: httpx2.Request, options: RequestOptions
    ) -> httpx2.Response:
        if options.routes:
            raise InvalidRequest(
                f"routing options apply to {self.service.host} only, not to"
                f" {request.url.host}: {options!r}",
                request=request,
            )
        if self._passthrough_transport is None:
            parts = self.parts
            self._passthrough_transport = httpx2.AsyncHTTPTransport(
                verify=tls_context(parts.verify, parts.cert, httpx2.create_ssl_context),
                http2=parts.http2,
            )
        return await self._passthrough_transport.handle_async_request(request)
