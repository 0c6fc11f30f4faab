"""``HeadlessTransport``: an httpx transport that balances requests over a headless Service's Pods.

Layering follows httpx/httpcore: the transport picks a Pod, hands httpcore a request aimed at the
Pod's ``ip:port`` (keeping the original Host header, and SNI = the Service name for https), and
reports every attempt's outcome to the pool exactly once, when the response is closed. The caller's
``httpx.Request`` is never mutated, so ``response.url`` and redirects keep the Service name.

Discovery runs in the transport's own task group, entered with the transport (``async with
httpx.AsyncClient(transport=...)`` enters it), so nothing outlives the client.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc
import httpcore
import httpx
from httpx._transports.default import AsyncResponseStream, map_httpcore_exceptions
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_random_exponential

from .balancer import Balancer
from .clock import Clock, monotonic
from .dns import DnsDiscovery, IpFamily
from .endpoint import Endpoint, EndpointStatus
from .errors import (
    ConfigurationError,
    DiscoveryError,
    NoEndpointsAvailable,
    NotStarted,
    OrdinalNotFound,
)
from .names import (
    ServiceName,
    detect_namespace,
    expand_service_name,
    load_resolv_conf,
    nameservers_from,
    parse_port,
    split_ordinal,
)
from .pickers import ConsistentHash, Ordinal, make_picker
from .pickers.base import NO_CONTEXT, HashKey, PickContext, PickerFactory
from .pool import Attempt, Outcome, OutlierPolicy, Pool, outcome_for_status
from .refresher import Refresher
from .retry import Failure, RetryBudget, RetryPolicy
from .schedule import RefreshPolicy
from .snapshot import EndpointState, Snapshot

__all__ = ["HeadlessTransport", "RequestOptions"]

log = logging.getLogger("headlesslb.transport")

EXTENSION = "headlesslb"
"""Request extension carrying :class:`RequestOptions` fields; response extension with the report."""

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Per-request routing, passed as ``extensions={"headlesslb": {...}}`` or client kwargs."""

    key: HashKey | None = None
    ordinal: int | None = None
    idempotent: bool | None = None

    @classmethod
    def from_extension(cls, value: object) -> RequestOptions:
        """Validate the ``headlesslb`` request extension (a mapping or a RequestOptions)."""
        if isinstance(value, RequestOptions):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"the {EXTENSION!r} request extension must be a mapping")
        unknown = set(value) - {"key", "ordinal", "idempotent"}
        if unknown:
            raise ConfigurationError(f"unknown {EXTENSION!r} options: {sorted(unknown)}")
        key, ordinal, idempotent = value.get("key"), value.get("ordinal"), value.get("idempotent")
        if key is not None and (isinstance(key, bool) or not isinstance(key, str | bytes | int)):
            raise ConfigurationError(f"key must be str, bytes or int, not {type(key).__name__}")
        if ordinal is not None and (
            isinstance(ordinal, bool) or not isinstance(ordinal, int) or ordinal < 0
        ):
            raise ConfigurationError(f"ordinal must be an int >= 0, not {ordinal!r}")
        if key is not None and ordinal is not None:
            raise ConfigurationError("a request takes key= or ordinal=, not both")
        if idempotent is not None and not isinstance(idempotent, bool):
            raise ConfigurationError("idempotent must be a bool")
        return cls(key, ordinal, idempotent)


@dataclass(slots=True)
class _Report:
    """What ``response.extensions["headlesslb"]`` tells: where the request went and how."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    fallback: bool = False

    def as_dict(self, endpoint: Endpoint | None) -> dict[str, Any]:
        return {
            "endpoint": endpoint.authority if endpoint else None,
            "hostname": endpoint.hostname if endpoint else None,
            "ordinal": endpoint.ordinal if endpoint else None,
            "attempts": self.attempts,
            "fallback": self.fallback,
        }


class _AttemptStream(httpx.AsyncByteStream):
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
        except httpx.TransportError:
            self._report(Outcome.RESET)
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


class _PodSender(httpx.AsyncHTTPTransport):
    """httpx's own transport, plus sending straight to a given address.

    Building the httpcore request directly skips httpx's URL rebuild, which was most of a naive
    rewriting transport's overhead (design §8).
    """

    async def send_to(
        self,
        request: httpx.Request,
        host: str,
        port: int,
        *,
        sni: str | None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> httpx.Response:
        extensions = request.extensions
        if sni is not None:
            extensions = {**extensions, "sni_hostname": sni}
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=host, port=port, target=url.raw_path),
            headers=headers if headers is not None else request.headers.raw,
            content=request.stream,
            extensions=extensions,
        )
        with map_httpcore_exceptions():
            core_response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=AsyncResponseStream(core_response.stream),  # type: ignore[arg-type]
            extensions=core_response.extensions,
        )


class _Fallback:
    """Where requests go when discovery yields nothing usable: a Service name or a URL."""

    def __init__(
        self,
        spec: str,
        *,
        namespace: str | None,
        cluster_domain: str | None,
        port: int | str,
        default_port: int,
        nameservers: Sequence[tuple[str, int]],
        ip_family: IpFamily,
        discovery_timeout: float,
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._discovery: DnsDiscovery | None = None
        self._cached: tuple[Endpoint, float] | None = None
        self._lock = anyio.Lock()
        if "://" in spec:
            url = httpx.URL(spec)
            if url.scheme not in _DEFAULT_PORTS or not url.host:
                raise ConfigurationError(f"fallback URL {spec!r} must be http(s)://host[:port]")
            self.host = url.host
            self.port = url.port or _DEFAULT_PORTS[url.scheme]
            self.name = spec
        else:
            service = expand_service_name(spec, namespace=namespace, cluster_domain=cluster_domain)
            self._discovery = DnsDiscovery(
                service,
                port=port,
                nameservers=nameservers,
                ip_family=ip_family,
                timeout=discovery_timeout,
            )
            self.host = service.host
            self.port = default_port if isinstance(port, str) else port
            self.name = service.host
        authority = self.host if self.port == default_port else f"{self.host}:{self.port}"
        self.host_header = authority.encode("ascii")

    async def address(self) -> tuple[str, int]:
        """The address to connect to: the Service's ClusterIP (cached for its TTL) or the URL's."""
        if self._discovery is None:
            return self.host, self.port
        cached = self._cached
        if cached is None or cached[1] <= self._clock():
            async with self._lock:  # one query, however many requests fall back at once
                cached = self._cached
                if cached is None or cached[1] <= self._clock():
                    resolution = await self._discovery.resolve()
                    if not resolution.endpoints:
                        raise NoEndpointsAvailable(
                            f"fallback Service {self.name} has no address in DNS"
                        )
                    ttl = max(resolution.ttl, 1.0)
                    cached = self._cached = (resolution.endpoints[0], self._clock() + ttl)
        return cached[0].ip, cached[0].port


class HeadlessTransport(httpx.AsyncBaseTransport):
    """Balances each request over the Pods behind a headless Service.

    Use it with any ``httpx.AsyncClient``; the client's ``async with`` starts discovery::

        transport = HeadlessTransport("web-hl", port="http", fallback="web-lb")
        async with httpx.AsyncClient(transport=transport, base_url="http://web-hl") as client:
            await client.get("/items/42", extensions={"headlesslb": {"key": "user-42"}})

    The URL's host is only used for the Host header: every request goes to a Pod of the Service.
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
        retry: RetryPolicy | None = None,
        discovery_timeout: float = 3.0,
        verify: ssl.SSLContext | str | bool = True,
        cert: Any = None,
        limits: httpx.Limits | None = None,
        http2: bool = False,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if scheme not in _DEFAULT_PORTS:
            raise ConfigurationError(f"scheme must be 'http' or 'https', not {scheme!r}")
        if writes_to is not None and (
            isinstance(writes_to, bool) or not isinstance(writes_to, int) or writes_to < 0
        ):
            raise ConfigurationError(f"writes_to must be an ordinal (int >= 0), not {writes_to!r}")
        resolv = load_resolv_conf(resolv_conf)
        namespace = namespace or detect_namespace(resolv)
        cluster_domain = cluster_domain or resolv.cluster_domain
        self.service: ServiceName = expand_service_name(
            service, namespace=namespace, cluster_domain=cluster_domain
        )
        self.scheme = scheme
        default_port = _DEFAULT_PORTS[scheme]
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
        self.pool = Pool(outlier, clock=clock, rng=self._rng, on_refused=self._on_refused)
        self.balancer = Balancer(
            self.pool,
            make_picker(picker, rng=self._rng, clock=clock),
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
        )
        self.fallback = (
            None
            if fallback is None
            else _Fallback(
                fallback,
                namespace=namespace,
                cluster_domain=cluster_domain,
                port=self.port,
                default_port=default_port,
                nameservers=servers,
                ip_family=ip_family,
                discovery_timeout=discovery_timeout,
                clock=clock,
            )
        )
        self._budget: RetryBudget = self.retry.budget(clock)
        self._sni = self.service.host if scheme == "https" else None
        self._sender = _PodSender(
            verify=verify,
            cert=cert,
            http2=http2,
            limits=limits
            or httpx.Limits(
                max_connections=None, max_keepalive_connections=None, keepalive_expiry=4.0
            ),
        )
        self._pinned_cache: dict[int, tuple[EndpointState, float]] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> HeadlessTransport:
        if self._task_group is not None or self._closed:
            raise NotStarted("a HeadlessTransport can be entered once; make a new one")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        await self._sender.__aenter__()
        await task_group.start(self.refresher.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop discovery and close every connection; the transport cannot be used after this."""
        if self._closed:
            return
        self._closed = True
        task_group, self._task_group = self._task_group, None
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(None, None, None)
        finally:
            with anyio.CancelScope(shield=True):
                await self._sender.aclose()

    @property
    def running(self) -> bool:
        """Whether the transport was entered and not closed."""
        return self._task_group is not None and not self._closed

    def endpoints(self) -> list[EndpointStatus]:
        """The Pods discovered now, with health and load."""
        return self.pool.statuses()

    def _on_refused(self) -> None:
        self.refresher.request_refresh()

    # -- requests --------------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to a Pod (retrying on others, falling back if none is usable)."""
        if self._task_group is None or self._closed:
            raise NotStarted(
                "HeadlessTransport is not running: use it inside 'async with httpx.AsyncClient("
                "transport=...)' or 'async with HeadlessClient(...)'"
            )
        ctx, idempotent = self._context(request)
        if not self.refresher.ready:
            await self.refresher.wait_ready()
        self._budget.deposit()
        report = _Report()
        tried: set[tuple[str, int]] = set()
        deadline = self.retry.deadline
        if deadline is None:
            return await self._send(request, ctx, idempotent, tried, report)
        try:
            with anyio.fail_after(deadline):
                return await self._send(request, ctx, idempotent, tried, report)
        except TimeoutError:
            raise httpx.TimeoutException(
                f"request deadline of {deadline:g} s exceeded"
                f" after {len(report.attempts)} attempts",
                request=request,
            ) from None

    def _context(self, request: httpx.Request) -> tuple[PickContext, bool | None]:
        raw = request.extensions.get(EXTENSION)
        options = RequestOptions() if raw is None else RequestOptions.from_extension(raw)
        ordinal = options.ordinal
        if (
            ordinal is None
            and options.key is None
            and self.writes_to is not None
            and request.method in _UNSAFE_METHODS
        ):
            ordinal = self.writes_to
        if ordinal is None and options.key is None:
            return NO_CONTEXT, options.idempotent
        return PickContext(key=options.key, ordinal=ordinal), options.idempotent

    async def _send(
        self,
        request: httpx.Request,
        ctx: PickContext,
        idempotent: bool | None,
        tried: set[tuple[str, int]],
        report: _Report,
    ) -> httpx.Response:
        # The first attempt runs outside tenacity: most requests succeed at once, and building a
        # retrying object per request would cost more than the pick itself.
        try:
            response = await self._attempt(request, ctx, tried, report)
        except httpx.TransportError as exc:
            if not self._should_retry(_failure_of_error(exc), request, idempotent):
                raise
        else:
            if response.status_code not in self.retry.retry_statuses or not self._should_retry(
                Failure.RETRYABLE_STATUS, request, idempotent
            ):
                return response
            await response.aclose()
        return await self._retry(request, ctx, idempotent, tried, report)

    def _should_retry(
        self, failure: Failure | None, request: httpx.Request, idempotent: bool | None
    ) -> bool:
        if failure is None or self.retry.max_attempts < 2:
            return False
        if not self.retry.may_retry(failure, request.method, idempotent):
            return False
        if not isinstance(request.stream, httpx.ByteStream):
            return False  # a streamed body is gone once sent: it cannot be replayed
        return self._budget.try_withdraw()

    async def _retry(
        self,
        request: httpx.Request,
        ctx: PickContext,
        idempotent: bool | None,
        tried: set[tuple[str, int]],
        report: _Report,
    ) -> httpx.Response:
        policy = self.retry

        def retry_if(state: RetryCallState) -> bool:
            outcome = state.outcome
            assert outcome is not None
            if outcome.failed:
                exc = outcome.exception()
                # Never match cancellation (BaseException): retrying would swallow it.
                if not isinstance(exc, httpx.TransportError):
                    return False
                return self._should_retry(_failure_of_error(exc), request, idempotent)
            response: httpx.Response = outcome.result()
            return response.status_code in policy.retry_statuses and self._should_retry(
                Failure.RETRYABLE_STATUS, request, idempotent
            )

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
            stop=stop_after_attempt(policy.max_attempts - 1),
            wait=wait_random_exponential(multiplier=policy.backoff_base, max=policy.backoff_max),
            retry=retry_if,
            sleep=anyio.sleep,
            before_sleep=close_response,
            retry_error_callback=last_outcome,
            reraise=True,
        )
        response: httpx.Response = await retrying(self._attempt, request, ctx, tried, report)
        return response

    async def _attempt(
        self,
        request: httpx.Request,
        ctx: PickContext,
        tried: set[tuple[str, int]],
        report: _Report,
    ) -> httpx.Response:
        state: EndpointState | None
        if ctx.ordinal is not None:
            state = await self._pinned(ctx.ordinal)  # retries go to the same Pod, never elsewhere
        else:
            state = self.balancer.pick(PickContext(ctx.key, None, tried) if tried else ctx)
            if state is None and tried and self.fallback is None:
                # Every Pod was tried: go round again rather than give up while retries remain.
                state = self.balancer.pick(ctx)
            if state is None:
                return await self._send_to_fallback(request, report)
        tried.add(state.key)
        endpoint = state.endpoint
        attempt = self.pool.begin(state)
        try:
            timeout = self.retry.per_try_timeout
            if timeout is None:
                response = await self._sender.send_to(
                    request, endpoint.ip, endpoint.port, sni=self._sni
                )
            else:
                try:
                    with anyio.fail_after(timeout):
                        response = await self._sender.send_to(
                            request, endpoint.ip, endpoint.port, sni=self._sni
                        )
                except TimeoutError:
                    raise httpx.ReadTimeout(
                        f"{endpoint} gave no response within the per-try timeout of {timeout:g} s",
                        request=request,
                    ) from None
        except httpx.TransportError as exc:
            outcome = _outcome_of_error(exc)
            attempt.done(outcome)
            report.attempts.append(
                {
                    "endpoint": endpoint.authority,
                    "hostname": endpoint.hostname,
                    "error": type(exc).__name__,
                    "outcome": outcome.value,
                }
            )
            raise
        except BaseException:
            attempt.done(Outcome.CANCELLED)
            raise
        status = response.status_code
        report.attempts.append(
            {"endpoint": endpoint.authority, "hostname": endpoint.hostname, "status": status}
        )
        response.stream = _AttemptStream(
            response.stream,  # type: ignore[arg-type]
            attempt,
            outcome_for_status(status),
        )
        response.extensions[EXTENSION] = report.as_dict(endpoint)
        return response

    async def _pinned(self, ordinal: int) -> EndpointState:
        """The Pod with this ordinal: from the pool, else by its own DNS name; never another."""
        try:
            state = self.balancer.pick(PickContext(ordinal=ordinal))
        except OrdinalNotFound as not_found:
            # SRV gave no hostnames (a numeric port, or an answer too big to carry them): ask for
            # the Pod's own name, <statefulset>-<n>.<service>, as a StatefulSet client would.
            state = await self._pod_by_name(ordinal, not_found)
        if state is None:  # only an excluded Pod gives None, and nothing is excluded here
            raise AssertionError("the ordinal picker returned no Pod")
        return state

    async def _pod_by_name(self, ordinal: int, not_found: OrdinalNotFound) -> EndpointState:
        now = self._clock()
        cached = self._pinned_cache.get(ordinal)
        if cached is not None and cached[1] > now:
            return cached[0]
        snapshot = self.pool.snapshot
        statefulset = self.discovery.statefulset or _statefulset_of(snapshot)
        port = self.port if isinstance(self.port, int) else _common_port(snapshot)
        if statefulset is None or port is None:
            not_found.add_note(
                "headlesslb: pass statefulset=<name> to look Pods up by their own DNS names"
            )
            raise not_found
        name = self.service.pod_fqdn(f"{statefulset}-{ordinal}")
        resolution = await self.discovery.resolve_name(name, port)
        if not resolution.endpoints:
            raise not_found
        found = resolution.endpoints[0]
        endpoint = Endpoint(found.ip, found.port, f"{statefulset}-{ordinal}", ordinal)
        member = next((m for m in snapshot.members if m.key == endpoint.key), None)
        state = member or EndpointState(endpoint)
        ttl = max(resolution.ttl, self.refresher.policy.min_interval)
        self._pinned_cache[ordinal] = (state, now + ttl)
        return state

    async def _send_to_fallback(self, request: httpx.Request, report: _Report) -> httpx.Response:
        snapshot = self.pool.snapshot
        if self.fallback is None:
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
        report.fallback = True
        host, port = await self.fallback.address()
        headers = [
            (name, self.fallback.host_header if name.lower() == b"host" else value)
            for name, value in request.headers.raw
        ]
        sni = self.fallback.host if self.scheme == "https" else None
        try:
            response = await self._sender.send_to(request, host, port, sni=sni, headers=headers)
        except httpx.TransportError as exc:
            report.attempts.append(
                {"endpoint": f"{host}:{port}", "fallback": True, "error": type(exc).__name__}
            )
            raise
        report.attempts.append(
            {"endpoint": f"{host}:{port}", "fallback": True, "status": response.status_code}
        )
        response.extensions[EXTENSION] = {
            **report.as_dict(None),
            "endpoint": f"{host}:{port}",
            "service": self.fallback.name,
        }
        return response


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


def _is_refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain is short; bound it anyway
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _failure_of_error(exc: httpx.TransportError) -> Failure | None:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure.NOT_SENT
    if isinstance(
        exc,
        httpx.ReadError
        | httpx.WriteError
        | httpx.RemoteProtocolError
        | httpx.ReadTimeout
        | httpx.WriteTimeout,
    ):
        return Failure.MAYBE_PROCESSED
    return None


def _outcome_of_error(exc: httpx.TransportError) -> Outcome:
    if isinstance(exc, httpx.ConnectError):
        return Outcome.REFUSED if _is_refused(exc) else Outcome.CONNECT_FAILURE
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return Outcome.CONNECT_FAILURE
    if isinstance(exc, httpx.TimeoutException):
        return Outcome.TIMEOUT
    return Outcome.RESET
