"""``HeadlessTransport``: an httpx transport that balances requests over a headless Service's Pods.

Layering follows httpx/httpcore: the transport picks a Pod, hands httpcore a request aimed at the
Pod's ``ip:port`` (keeping the original Host header, and SNI = the Service name for https), and
reports every attempt's outcome to the pool exactly once, when the response is closed. The caller's
``httpx.Request`` is never mutated, so ``response.url`` and redirects keep the Service name.

The client's configuration decides the scheme (TLS or not) and the port: a URL that names the
Service with another scheme or port is refused before a byte leaves (:class:`InvalidRequest`).

Discovery (and health checking, when asked for) runs in the background from the transport's entry
(``async with httpx.AsyncClient(transport=...)`` enters it) until it is closed, from any task
(:mod:`headlesslb.background`); nothing outlives it, and nothing is sent after close.
"""

from __future__ import annotations

import logging
import os
import random
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio
import httpx
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_random_exponential

from . import validate
from .background import Background
from .balancer import Balancer
from .cache import LookupCache
from .clock import Clock, monotonic
from .dns import DnsDiscovery, IpFamily
from .endpoint import Endpoint, EndpointStatus
from .errors import (
    ClientClosed,
    ConfigurationError,
    DiscoveryError,
    InvalidRequest,
    NoEndpointsAvailable,
    NotStarted,
    OrdinalNotFound,
)
from .fallback import DEFAULT_PORTS, Fallback
from .health import HealthCheck, HealthChecker, probe_once
from .names import (
    ORDINAL_MAX,
    ServiceName,
    detect_namespace,
    expand_service_name,
    load_resolv_conf,
    nameservers_from,
    parse_port,
    split_ordinal,
    validate_label,
    validate_statefulset,
)
from .pickers import ConsistentHash, Ordinal, make_picker
from .pickers.base import NO_CONTEXT, HashKey, PickContext, PickerFactory
from .pool import Outcome, OutlierPolicy, Pool, outcome_for_status
from .refresher import Refresher
from .retry import Failure, RetryBudget, RetryPolicy
from .schedule import RefreshPolicy
from .sender import AttemptStream, PodSender, classify
from .snapshot import EndpointState, Snapshot

__all__ = ["EXTENSION", "HeadlessTransport", "RequestOptions"]

log = logging.getLogger("headlesslb.transport")

EXTENSION = "headlesslb"
"""Request extension carrying :class:`RequestOptions`; response extension with the report."""

_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OPTION_NAMES = frozenset({"key", "ordinal", "idempotent", "read_body"})


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Per-request options, passed as ``extensions={"headlesslb": {...}}`` or client kwargs.

    Validated on construction, whichever way they come: a malformed option raises
    :class:`~headlesslb.errors.InvalidRequest` naming it, before anything is sent.
    """

    key: HashKey | None = None
    """Shard by this key: the same key goes to the same Pod while it is healthy. ``str`` (any
    text UTF-8 can encode), ``bytes``, or ``int`` (up to 4,300 decimal digits, Python's limit on
    int-to-text conversion: the key is hashed as its decimal text)."""
    ordinal: int | None = None
    """Pin to the StatefulSet Pod with this ordinal (0 … 2**31 − 1, Kubernetes' int32); never
    another Pod, never the fallback."""
    idempotent: bool | None = None
    """Allow retrying after the request may have reached a Pod (default: by method)."""
    read_body: bool = False
    """Read the body inside the transport, so a connection lost mid-body is retried like any
    other failure. ``HeadlessClient`` sets it for every non-streaming request."""

    def __post_init__(self) -> None:
        key, ordinal = self.key, self.ordinal
        if key is not None:
            _check_key(key)
        if ordinal is not None and (
            isinstance(ordinal, bool)
            or not isinstance(ordinal, int)
            or not 0 <= ordinal <= ORDINAL_MAX
        ):
            raise InvalidRequest(
                f"ordinal must be an int from 0 to {ORDINAL_MAX} (a StatefulSet ordinal),"
                f" not {ordinal!r}"
            )
        if key is not None and ordinal is not None:
            raise InvalidRequest("a request takes key= or ordinal=, not both")
        if self.idempotent is not None and not isinstance(self.idempotent, bool):
            raise InvalidRequest(f"idempotent must be a bool or None, not {self.idempotent!r}")
        if not isinstance(self.read_body, bool):
            raise InvalidRequest(f"read_body must be a bool, not {self.read_body!r}")

    @property
    def routes(self) -> bool:
        """Whether any option asks for something only the Service's Pods can honour."""
        return self.key is not None or self.ordinal is not None or self.idempotent is not None

    @classmethod
    def from_extension(cls, value: object) -> RequestOptions:
        """Validate the ``headlesslb`` request extension (a mapping or a RequestOptions)."""
        if isinstance(value, RequestOptions):
            return value
        if not isinstance(value, Mapping):
            raise InvalidRequest(
                f"the {EXTENSION!r} request extension must be a mapping or RequestOptions,"
                f" not {type(value).__name__}"
            )
        unknown = set(value) - _OPTION_NAMES
        if unknown:
            raise InvalidRequest(
                f"unknown {EXTENSION!r} options {sorted(map(str, unknown))};"
                f" known: {sorted(_OPTION_NAMES)}"
            )
        return cls(**value)


def _check_key(key: object) -> None:
    if isinstance(key, bool) or not isinstance(key, str | bytes | int):
        raise InvalidRequest(f"key must be str, bytes or int, not {type(key).__name__}")
    if isinstance(key, str):
        try:
            key.encode()
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"key {key!r} cannot be encoded as UTF-8: {exc.reason}") from None
    elif isinstance(key, int):
        try:
            b"%d" % key
        except ValueError:
            raise InvalidRequest(
                f"an int key of {key.bit_length()} bits is longer than the 4,300 decimal digits"
                " it can be hashed as; pass it as bytes"
            ) from None


_PLAIN = RequestOptions()
_NOT_SENT_OUTCOMES = frozenset({Outcome.REFUSED.value, Outcome.CONNECT_FAILURE.value})
_PINNED_CACHE_SIZE = 1024
"""Pods looked up by their own name (``ordinal=`` without SRV hostnames) kept at once."""


@dataclass(slots=True, eq=False)
class _Call:
    """One request's journey: its routing, the Pods it tried, and the report users get."""

    request: httpx.Request
    ctx: PickContext
    options: RequestOptions
    tried: set[tuple[str, int]] = field(default_factory=set)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    endpoint: Endpoint | None = None
    """The Pod of the latest attempt."""
    fallback: str | None = None
    """``ip:port`` of the fallback Service, once it was used."""
    fallback_service: str | None = None
    budget_exhausted: bool = False
    """A retry was called for but the retry budget was empty."""
    discovery_error: str | None = None
    """Why discovery had nothing, when the fallback served (a wrong port name, DNS down...)."""

    @property
    def never_sent(self) -> bool:
        """Every attempt failed before the request could leave (connect-phase failures)."""
        return all(a.get("outcome") in _NOT_SENT_OUTCOMES for a in self.attempts)

    @property
    def all_refused(self) -> bool:
        """Every attempt found nothing listening (not a TLS or timeout failure)."""
        return all(a.get("outcome") == Outcome.REFUSED.value for a in self.attempts)

    def summary(self) -> str:
        """One line for error notes: each attempt's endpoint and result."""
        parts = [f"{a['endpoint']} → {a.get('status') or a.get('error')}" for a in self.attempts]
        budget = "; retry budget exhausted" if self.budget_exhausted else ""
        return f"{len(parts)} attempt(s): {', '.join(parts)}{budget}"

    def report(self) -> dict[str, Any]:
        """What ``response.extensions["headlesslb"]`` holds."""
        endpoint = None if self.fallback else self.endpoint
        report: dict[str, Any] = {
            "endpoint": endpoint.authority if endpoint else self.fallback,
            "hostname": endpoint.hostname if endpoint else None,
            "ordinal": endpoint.ordinal if endpoint else None,
            "attempts": self.attempts,
            "fallback": self.fallback is not None,
            "retry_budget_exhausted": self.budget_exhausted,
        }
        if self.fallback:
            report["service"] = self.fallback_service
            report["discovery_error"] = self.discovery_error
        return report


class HeadlessTransport(httpx.AsyncBaseTransport):
    """Balances each request over the Pods behind a headless Service.

    Use it with any ``httpx.AsyncClient``; the client's ``async with`` starts discovery::

        transport = HeadlessTransport("web-hl", port="http", fallback="web-lb")
        async with httpx.AsyncClient(transport=transport, base_url="http://web-hl") as client:
            await client.get("/items/42", extensions={"headlesslb": {"key": "user-42"}})

    Requests whose URL names the Service (``web-hl``, ``web-hl.ns``, ``web-hl.ns.svc``, the FQDN,
    with or without its trailing dot) go to its Pods, with that name kept in the Host header. Such
    a URL must use the transport's ``scheme``, and give no port or the Service's own numeric port:
    anything else raises :class:`~headlesslb.errors.InvalidRequest` before a byte is sent. A URL
    for any other host (a redirect elsewhere, say) is sent as plain httpx would send it; routing
    options on such a request raise ``InvalidRequest`` rather than vanish.
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
        discovery_timeout: float = 3.0,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        limits: httpx.Limits | None = None,
        http2: bool = False,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(scheme, str) or scheme not in DEFAULT_PORTS:
            raise ConfigurationError(f"scheme must be 'http' or 'https', not {scheme!r}")
        validate.count("writes_to", writes_to, max=ORDINAL_MAX, allow_none=True)
        validate.number("discovery_timeout", discovery_timeout, min=0, exclusive_min=True)
        for name, value, kind in (
            ("refresh", refresh, RefreshPolicy),
            ("outlier", outlier, OutlierPolicy),
            ("health", health, HealthCheck),
            ("retry", retry, RetryPolicy),
            ("limits", limits, httpx.Limits),
            ("rng", rng, random.Random),
        ):
            validate.instance(name, value, kind, allow_none=True)
        if sharding is not None and not isinstance(sharding, PickerFactory):
            raise ConfigurationError(
                "sharding must be a PickerFactory such as ConsistentHash(), not"
                f" {type(sharding).__name__}"
            )
        if not isinstance(resolv_conf, str | os.PathLike):
            raise ConfigurationError(f"resolv_conf must be a path, not {resolv_conf!r}")
        for name, text in (("namespace", namespace), ("cluster_domain", cluster_domain)):
            if text is not None and not isinstance(text, str):
                raise ConfigurationError(f"{name} must be a str or None, not {text!r}")
        if namespace is not None:
            validate_label("namespace", namespace)
        if statefulset is not None:
            validate_statefulset("statefulset", statefulset)
        if not isinstance(verify, ssl.SSLContext | str | bool):
            raise ConfigurationError(
                f"verify must be an ssl.SSLContext, a CA bundle path or a bool, not {verify!r}"
            )
        validate.flag("http2", http2)
        if not callable(clock):
            raise ConfigurationError(f"clock must be a callable returning seconds, not {clock!r}")
        resolv = load_resolv_conf(resolv_conf)
        namespace = namespace or detect_namespace(resolv)
        cluster_domain = cluster_domain or resolv.cluster_domain
        self.service: ServiceName = expand_service_name(
            service, namespace=namespace, cluster_domain=cluster_domain
        )
        self.scheme = scheme
        self._raw_scheme = scheme.encode("ascii")
        default_port = DEFAULT_PORTS[scheme]
        parsed_port = parse_port(port)
        self.port: int | str = default_port if parsed_port is None else parsed_port
        servers = nameservers_from(
            nameservers
            if nameservers is not None
            else resolv.nameservers or _no_nameservers(resolv_conf)
        )
        self.retry = retry or RetryPolicy()
        self.writes_to = writes_to
        self._clock = clock
        self._rng = rng or random.Random()
        self.discovery = DnsDiscovery(
            self.service,
            port=self.port,
            nameservers=servers,
            ip_family=ip_family,
            timeout=discovery_timeout,
            statefulset=statefulset,
        )
        self.pool = Pool(
            outlier,
            clock=clock,
            rng=self._rng,
            on_refused=self._on_refused,
            new_endpoints_healthy=health is None or not health.start_unhealthy,
        )
        self.health = None if health is None else HealthChecker(health, self.pool, self._probe)
        self.balancer = Balancer(
            self.pool,
            make_picker(
                picker, rng=self._rng, clock=clock, latency_decay=self.pool.outlier.latency_decay
            ),
            sharding=sharding or ConsistentHash(),
            ordinal=Ordinal(),
        )
        self.refresher = Refresher(
            self.discovery,
            self.pool,
            refresh,
            clock=clock,
            rng=self._rng,
            prepare=self.balancer.prepare,
            on_change=self._membership_changed,
        )
        self.fallback = (
            None
            if fallback is None
            else Fallback(
                fallback,
                scheme=scheme,
                namespace=namespace,
                cluster_domain=cluster_domain,
                port=self.port,
                nameservers=servers,
                ip_family=ip_family,
                discovery_timeout=discovery_timeout,
                refresh=self.refresher.policy,
                clock=clock,
            )
        )
        self._budget: RetryBudget = self.retry.budget(clock)
        self._sni = self.service.host if scheme == "https" else None
        self._base_url = f"{scheme}://{self.service.host}"
        self._sender = PodSender(verify=verify, cert=cert, http2=http2, limits=limits)
        self._pinned: LookupCache[int, Endpoint] = LookupCache(
            self.refresher.policy, clock, max_entries=_PINNED_CACHE_SIZE
        )
        self._hosts = _service_hosts(self.service, namespace)
        # A URL may leave the port out (the Service's port); an explicit one must be the Service's.
        self._url_port = self.port if isinstance(self.port, int) else None
        self._passthrough_options: dict[str, Any] = {"verify": verify, "cert": cert, "http2": http2}
        self._passthrough_transport: httpx.AsyncHTTPTransport | None = None
        self._background = Background()
        self._state: Literal["new", "open", "closed"] = "new"

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> HeadlessTransport:
        if self._state != "new":
            raise NotStarted("a HeadlessTransport can be entered once; make a new one")
        self._state = "open"
        self._background.spawn("discovery", self.refresher.run)
        if self.health is not None:
            self._background.spawn("health checks", self.health.run)
        return self

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
        with anyio.CancelScope(shield=True):
            await self._background.aclose()
            await self._sender.aclose()
            if self._passthrough_transport is not None:
                await self._passthrough_transport.aclose()

    def _passthrough(self) -> httpx.AsyncHTTPTransport:
        if self._passthrough_transport is None:
            self._passthrough_transport = httpx.AsyncHTTPTransport(**self._passthrough_options)
        return self._passthrough_transport

    @property
    def running(self) -> bool:
        """Whether the transport was entered and not closed."""
        return self._state == "open"

    def endpoints(self) -> list[EndpointStatus]:
        """The Pods discovered now, with health and load."""
        return self.pool.statuses()

    async def _membership_changed(self, snapshot: Snapshot) -> None:
        if self.health is not None:
            self.health.wake()  # probe new Pods now, not an interval from now
        # Connections to Pods that left DNS close once their last request is done.
        keep = {m.key for m in snapshot.members}
        if self.fallback is not None and self.fallback.cached is not None:
            keep.add(self.fallback.cached)
        await self._sender.retire(keep)

    def _on_refused(self) -> None:
        self.refresher.request_refresh()

    async def _probe(self, endpoint: Endpoint) -> bool:
        assert self.health is not None
        return await probe_once(
            self._send_probe, endpoint, self.health.check, base_url=self._base_url
        )

    async def _send_probe(self, endpoint: Endpoint, request: httpx.Request) -> httpx.Response:
        return await self._sender.send_to(
            request, endpoint.ip, endpoint.port, scheme=self._raw_scheme, sni=self._sni
        )

    # -- requests --------------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to a Pod (retrying on others, falling back if none is usable)."""
        if self._state != "open":
            raise NotStarted(
                "HeadlessTransport is not running: use it inside 'async with httpx.AsyncClient("
                "transport=...)' or 'async with HeadlessClient(...)'"
            )
        if request.url.raw_host not in self._hosts:  # httpx lower-cases hosts already
            # Not this Service (say, a redirect to another site): send it as httpx would.
            raw = request.extensions.get(EXTENSION)
            if raw is not None and RequestOptions.from_extension(raw).routes:
                raise InvalidRequest(
                    f"routing options apply to {self.service.host} only, not to"
                    f" {request.url.host}: {raw!r}",
                    request=request,
                )
            return await self._passthrough().handle_async_request(request)
        call = self._call(request)
        if not self._ready:
            await self._wait_ready()
        self._budget.deposit()
        deadline = self.retry.deadline
        if deadline is None:
            response = await self._send(call)
        else:
            with anyio.move_on_after(deadline) as scope:
                response = await self._send(call)
            if scope.cancelled_caught:
                raise httpx.TimeoutException(
                    f"request deadline of {deadline:g} s exceeded ({call.summary()})",
                    request=request,
                )
        response.extensions[EXTENSION] = call.report()
        return response

    @property
    def _ready(self) -> bool:
        health = self.health
        if health is not None and health.check.start_unhealthy and not health.probed.is_set():
            return False
        return self.refresher.ready

    async def _wait_ready(self) -> None:
        """The first requests wait for the first DNS answer and, when Pods start unhealthy, for
        the first probes of them: at most ``RefreshPolicy.first_resolution_timeout`` in all."""
        with anyio.move_on_after(self.refresher.policy.first_resolution_timeout):
            await self.refresher.wait_ready()
            health = self.health
            if health is not None and health.check.start_unhealthy and self.pool.snapshot.members:
                await health.probed.wait()

    def _call(self, request: httpx.Request) -> _Call:
        url = request.url
        if url.scheme != self.scheme:
            raise InvalidRequest(
                f"{url.scheme}://{url.host} names the Service, but this client talks to it over"
                f" {self.scheme} (scheme={self.scheme!r}): the client's configuration decides TLS,"
                " never the URL; nothing was sent",
                request=request,
            )
        if url.port is not None and url.port != self._url_port:
            expected = (
                f"its port {self._url_port}"
                if self._url_port is not None
                else f"no port (the named port {self.port!r} comes from SRV per Pod)"
            )
            raise InvalidRequest(
                f"{url.host}:{url.port} names the Service with another port: give {expected};"
                " nothing was sent",
                request=request,
            )
        raw = request.extensions.get(EXTENSION)
        options = _PLAIN if raw is None else RequestOptions.from_extension(raw)
        key, ordinal = options.key, options.ordinal
        if ordinal is None and self.writes_to is not None and request.method in _UNSAFE_METHODS:
            # writes_to wins over key= for writes: only that Pod takes writes (a leader).
            key, ordinal = None, self.writes_to
        if ordinal is None and key is None:
            return _Call(request, NO_CONTEXT, options)
        return _Call(request, PickContext(key=key, ordinal=ordinal), options)

    async def _send(self, call: _Call) -> httpx.Response:
        try:
            return await self._send_to_pods(call)
        except httpx.TransportError as exc:
            if self._state == "closed":
                exc.add_note("headlesslb: the client was closed while this request was in flight")
                raise
            if call.attempts and call.ctx.ordinal is None and call.never_sent:
                # No Pod took the connection, so the request never left: the fallback Service
                # may serve it whatever the method, and without one the honest error is that no
                # endpoint was available.
                if self.fallback is not None:
                    return await self._send_to_fallback(call)
                if call.all_refused and not self._untried(call):
                    raise NoEndpointsAvailable(
                        f"no Pod of {self.service.host} accepted a connection"
                        f" ({call.summary()}) and no fallback is configured",
                        request=call.request,
                    ) from exc
            exc.add_note(f"headlesslb: {call.summary()}")
            raise

    def _untried(self, call: _Call) -> bool:
        return self.balancer.pick(PickContext(exclude=frozenset(call.tried))) is not None

    async def _send_to_pods(self, call: _Call) -> httpx.Response:
        # The first attempt runs outside tenacity: most requests succeed at once, and building a
        # retrying object per request would cost more than the pick itself.
        try:
            response = await self._attempt(call)
        except httpx.TransportError as exc:
            if not self._should_retry(call, classify(exc)[0]):
                raise
        else:
            if not self._retry_response(call, response):
                return response
            await response.aclose()
        return await self._retry(call)

    def _retry_response(self, call: _Call, response: httpx.Response) -> bool:
        return response.status_code in self.retry.retry_statuses and self._should_retry(
            call, Failure.RETRYABLE_STATUS
        )

    def _should_retry(self, call: _Call, failure: Failure | None) -> bool:
        request = call.request
        if failure is None or len(call.attempts) >= self.retry.max_attempts:
            return False
        if self._state == "closed":
            return False  # nothing is sent after close
        if not self.retry.may_retry(failure, request.method, call.options.idempotent):
            return False
        if failure is not Failure.NOT_SENT and not isinstance(request.stream, httpx.ByteStream):
            return False  # a streamed body is gone once sent (a failed connect sent none of it)
        if not self._budget.try_withdraw():
            call.budget_exhausted = True
            return False
        return True

    async def _retry(self, call: _Call) -> httpx.Response:
        policy = self.retry

        def retry_if(state: RetryCallState) -> bool:
            outcome = state.outcome
            assert outcome is not None
            if outcome.failed:
                exc = outcome.exception()
                # Never match cancellation (a BaseException): retrying would swallow it.
                return isinstance(exc, httpx.TransportError) and self._should_retry(
                    call, classify(exc)[0]
                )
            return self._retry_response(call, outcome.result())

        async def close_response(state: RetryCallState) -> None:
            if state.outcome is not None and not state.outcome.failed:
                await state.outcome.result().aclose()

        def last_outcome(state: RetryCallState) -> httpx.Response:
            # tenacity raises RetryError for an exhausted result-based retry even with
            # reraise=True: hand back the last response (or raise its error) ourselves.
            assert state.outcome is not None
            result: httpx.Response = state.outcome.result()
            return result

        await anyio.sleep(self._rng.uniform(0, policy.backoff_base))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),  # _should_retry counts them too
            wait=wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_max),
            retry=retry_if,
            sleep=anyio.sleep,
            before_sleep=close_response,
            retry_error_callback=last_outcome,
            reraise=True,
        )
        response: httpx.Response = await retrying(self._attempt, call)
        return response

    async def _attempt(self, call: _Call) -> httpx.Response:
        """One attempt on one Pod (or on the fallback, once no Pod is left to try)."""
        if self._state == "closed":
            raise ClientClosed(
                "the client was closed while this request was in flight", request=call.request
            )
        ctx = call.ctx
        state: EndpointState | None
        if ctx.ordinal is not None:
            # Retries go to the same Pod, never elsewhere.
            state = await self._pinned_pod(ctx.ordinal)
        else:
            state = self.balancer.pick(
                PickContext(ctx.key, None, call.tried) if call.tried else ctx
            )
            if state is None and call.tried and self.fallback is None:
                # Every Pod was tried: go round again rather than give up while retries remain.
                state = self.balancer.pick(ctx)
            if state is None:
                return await self._send_to_fallback(call)
        call.tried.add(state.key)
        endpoint = call.endpoint = state.endpoint
        attempt = self.pool.begin(state)
        try:
            response = await self._send_timed(call.request, endpoint)
        except httpx.TransportError as exc:
            outcome = classify(exc)[1]
            attempt.done(outcome)
            call.attempts.append(_attempt_record(endpoint, error=exc, outcome=outcome))
            if outcome is Outcome.REFUSED and ctx.ordinal is not None:
                self._pinned.invalidate(ctx.ordinal)  # the Pod found by name is gone
            raise
        except BaseException:
            attempt.done(Outcome.CANCELLED)
            raise
        response.stream = AttemptStream(
            response.stream,  # type: ignore[arg-type]
            attempt,
            outcome_for_status(response.status_code),
        )
        if call.options.read_body:
            try:
                await response.aread()  # the stream reports a broken body to the pool itself
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await response.aclose()  # httpx never gets this response: close it here
                if isinstance(exc, httpx.TransportError):
                    outcome = classify(exc)[1]
                    call.attempts.append(_attempt_record(endpoint, error=exc, outcome=outcome))
                raise
        call.attempts.append(_attempt_record(endpoint, status=response.status_code))
        return response

    async def _send_timed(self, request: httpx.Request, endpoint: Endpoint) -> httpx.Response:
        timeout = self.retry.per_try_timeout
        send = self._sender.send_to
        if timeout is None:
            return await send(
                request, endpoint.ip, endpoint.port, scheme=self._raw_scheme, sni=self._sni
            )
        try:
            # httpcore's own connect timeout fires first when connecting eats the whole budget,
            # so a Pod that silently drops SYNs gives ConnectTimeout (never sent: retryable for
            # any method), not a read timeout.
            with anyio.fail_after(timeout * 1.05):
                return await send(
                    request,
                    endpoint.ip,
                    endpoint.port,
                    scheme=self._raw_scheme,
                    sni=self._sni,
                    connect_timeout=timeout,
                )
        except TimeoutError:
            raise httpx.ReadTimeout(
                f"{endpoint} gave no response within the per-try timeout of {timeout:g} s",
                request=request,
            ) from None

    async def _pinned_pod(self, ordinal: int) -> EndpointState:
        """The Pod with this ordinal: from the pool, else by its own DNS name; never another."""
        try:
            state = self.balancer.pick(PickContext(ordinal=ordinal))
        except OrdinalNotFound as not_found:
            # SRV gave no hostnames (a numeric port, or an answer too big to carry them): ask for
            # the Pod's own name, <statefulset>-<n>.<service>, as a StatefulSet client would.
            state = await self._pod_by_name(ordinal, not_found)
        if state is None:  # only an excluded Pod gives None, and nothing is excluded here
            raise AssertionError("the ordinal picker returned no Pod")
        if not state.admitted:
            raise NoEndpointsAvailable(
                f"{state.endpoint} has not passed a health check yet (start_unhealthy=True):"
                " a pinned request never goes to another Pod"
            )
        return state

    async def _pod_by_name(self, ordinal: int, not_found: OrdinalNotFound) -> EndpointState:
        snapshot = self.pool.snapshot
        if snapshot.members and len(snapshot.by_ordinal) == len(snapshot.members):
            raise not_found  # SRV named every Pod: this ordinal really is absent
        statefulset = self.discovery.statefulset or _statefulset_of(snapshot)
        port = self.port if isinstance(self.port, int) else _common_port(snapshot)
        if statefulset is None or port is None:
            not_found.add_note(
                "headlesslb: pass statefulset=<name> to look Pods up by their own DNS names"
            )
            raise not_found
        hostname = f"{statefulset}-{ordinal}"

        async def lookup() -> tuple[Endpoint | None, float]:
            resolution = await self.discovery.resolve_name(self.service.pod_fqdn(hostname), port)
            if not resolution.endpoints:
                return None, resolution.ttl
            found = resolution.endpoints[0]
            return Endpoint(found.ip, found.port, hostname, ordinal), resolution.ttl

        endpoint = await self._pinned.get(ordinal, lookup)
        if endpoint is None:
            raise not_found
        # The Pod is normally a member already (an A record of the Service): share its stats.
        return self.pool.member(endpoint.key) or EndpointState(endpoint)

    async def _send_to_fallback(self, call: _Call) -> httpx.Response:
        request = call.request
        fallback = self.fallback
        if fallback is None:
            snapshot = self.pool.snapshot
            error = self.refresher.last_error
            if not snapshot.members and error is not None:
                raise DiscoveryError(
                    f"cannot discover {self.service.host}: {error}", request=request
                ) from error
            raise NoEndpointsAvailable(
                f"no usable endpoint for {self.service.host} ({len(snapshot.members)} in DNS)"
                " and no fallback configured",
                request=request,
            )
        host, port = await fallback.address()
        address = f"{host}:{port}"
        call.fallback, call.fallback_service = address, fallback.name
        error = self.refresher.last_error
        call.discovery_error = None if error is None else f"{type(error).__name__}: {error}"
        headers = [
            (name, fallback.host_header if name.lower() == b"host" else value)
            for name, value in request.headers.raw
        ]
        try:
            response = await self._sender.send_to(
                request, host, port, scheme=fallback.raw_scheme, sni=fallback.sni, headers=headers
            )
        except httpx.TransportError as exc:
            if classify(exc)[1] is Outcome.REFUSED:
                fallback.invalidate()  # the address it had resolved is gone: look it up again
            call.attempts.append({"endpoint": address, "fallback": True, "error": _name(exc)})
            raise
        call.attempts.append(
            {"endpoint": address, "fallback": True, "status": response.status_code}
        )
        return response


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def _attempt_record(
    endpoint: Endpoint,
    *,
    status: int | None = None,
    error: BaseException | None = None,
    outcome: Outcome | None = None,
) -> dict[str, Any]:
    record: dict[str, Any] = {"endpoint": endpoint.authority, "hostname": endpoint.hostname}
    if status is not None:
        record["status"] = status
    if error is not None:
        record["error"] = _name(error)
    if outcome is not None:
        record["outcome"] = outcome.value
    return record


def _service_hosts(service: ServiceName, own_namespace: str | None) -> frozenset[bytes]:
    """Every spelling of the Service's name a URL may use: web-hl, web-hl.ns, ..., the FQDN with
    or without its trailing dot.

    The bare ``web-hl`` counts only in the client's own namespace, where DNS would resolve it.
    """
    labels = service.host.split(".")
    names = {service.host, service.fqdn}
    if service.namespace is not None:
        names.update(".".join(labels[:n]) for n in (2, 3))
        if service.namespace == own_namespace:
            names.add(labels[0])
    return frozenset(name.encode("ascii") for name in names)


def _statefulset_of(snapshot: Snapshot) -> str | None:
    for member in snapshot.members:
        hostname = member.endpoint.hostname
        parsed = split_ordinal(hostname) if hostname else None
        if parsed is not None and member.endpoint.ordinal is not None:
            return parsed[0]
    return None


def _common_port(snapshot: Snapshot) -> int | None:
    ports = {m.endpoint.port for m in snapshot.members}
    return ports.pop() if len(ports) == 1 else None


def _no_nameservers(resolv_conf: str) -> list[str]:
    raise ConfigurationError(
        f"{resolv_conf} lists no nameserver: pass nameservers=['ip:port', ...]"
    )
