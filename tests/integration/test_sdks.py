"""headlesslb inside the real OpenAI and Anthropic SDKs, in front of inference Pods.

The SDKs (``openai`` 3.x, ``anthropic`` 2.x) take an httpx2 client, so these drive them through
headlesslb's httpx2 flavour: ``httpx2.Client(transport=headlesslb.httpx2.sync.HeadlessTransport
(...))`` and ``httpx2.AsyncClient(transport=headlesslb.httpx2.HeadlessTransport(...))``, never
entered (an SDK never enters its client: the async transport starts on its first request). The
Pods serve ``headlesslb.testing.inference_app``, which names the serving Pod in every answer.

Every row: ``OpenAI``, ``AsyncOpenAI``, ``Anthropic``, ``AsyncAnthropic``; the async ones on
asyncio, and for streams on trio too. A blocking SDK's calls run in a worker thread (the test
itself is async, as the rest of the integration suite), so one body serves every row.

The SDKs get ``max_retries=0`` except where their retries are the subject: an SDK retry would
hide what headlesslb did (a killed Pod "costing no request" must be headlesslb's retry on
another Pod, not the SDK's second call), and would add its back-off (0.5 s and up) to every
failure the tests provoke. docs/sdks.md says how the two layers' retries combine.
"""

from __future__ import annotations

import collections
import functools
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import anyio
import anyio.to_thread
import httpx2
import openai
import pytest

import headlesslb.httpx2
import headlesslb.httpx2.sync
from headlesslb import RetryPolicy
from headlesslb.core.retry import IDEMPOTENT_METHODS
from headlesslb.errors import DeadlineExceeded, HeadlessLBError, NoEndpointsAvailable
from headlesslb.testing import LocalCluster

from .helpers import eventually

APP = "headlesslb.testing:inference_app"
MODEL = "headlesslb-echo"
PODS = ("llm-0", "llm-1", "llm-2")
PROMPT = "say hello"
POST_RETRIED = RetryPolicy(idempotent_methods=IDEMPOTENT_METHODS | {"POST"})
"""Generation has no side effect: an inference client may declare POST safe to repeat."""
LONG = {"tokens": 400, "token_delay": 0.05}
"""A stream of 20 s: longer than any test keeps it open."""


@dataclass(frozen=True)
class Row:
    """One SDK client of the matrix."""

    vendor: str
    """``"openai"`` or ``"anthropic"``."""
    sync: bool
    backend: str
    """The event loop the (async) test runs on."""

    @property
    def id(self) -> str:
        flavour = "sync" if self.sync else f"async-{self.backend}"
        return f"{self.vendor}-{flavour}"


# A blocking SDK does not care which loop the test runs on: its rows run on asyncio alone.
ALL_ROWS = [
    Row(vendor, sync, backend)
    for vendor in ("openai", "anthropic")
    for sync, backend in ((True, "asyncio"), (False, "asyncio"), (False, "trio"))
]
ROWS = [row for row in ALL_ROWS if row.backend == "asyncio"]
"""Most tests: trio adds little where only the request path's outcome is checked."""
ON_EVERY_LOOP = pytest.mark.parametrize(
    "row", ALL_ROWS, ids=[row.id for row in ALL_ROWS], indirect=True
)
"""Streams on trio too: how a dropped stream is finalized and released differs by loop."""


@pytest.fixture(params=ROWS, ids=[row.id for row in ROWS])
def row(request: pytest.FixtureRequest) -> Row:
    """The SDK client this test drives."""
    value: Row = request.param
    return value


@pytest.fixture
def anyio_backend(row: Row) -> str:
    """The row decides the loop (instead of every test on both, as elsewhere)."""
    return row.backend


@pytest.fixture
def llm() -> Iterator[LocalCluster]:
    """StatefulSet ``llm`` ×3 serving the inference app, behind headless ``llm-hl``; TTL 1 s."""
    with LocalCluster(ttl=1) as cluster:
        cluster.add_statefulset("llm", replicas=3, app=APP, factory=True)
        yield cluster


def _expected(pod: str, tokens: int) -> str:
    """The inference app's deterministic answer to PROMPT."""
    words = PROMPT.split()
    return f"{pod}:" + "".join(f" {words[i % len(words)]}" for i in range(tokens - 1))


def _pod_of(text: str) -> str:
    return text.partition(":")[0]


class Sdk:
    """One SDK client over a headlesslb httpx2 transport, driven the same way whichever SDK and
    flavour: each method is one SDK call (a blocking one runs in a worker thread)."""

    def __init__(
        self, row: Row, cluster: LocalCluster, max_retries: int = 0, **options: Any
    ) -> None:
        self.row = row
        options = {"port": "http", "picker": "round_robin", **cluster.client_kwargs(), **options}
        # The URL names the Service: the transport sends it to the Service's Pods.
        base = "http://llm-hl"
        self.transport: Any
        self.http: httpx2.Client | httpx2.AsyncClient
        self.client: Any
        if row.sync:
            self.transport = headlesslb.httpx2.sync.HeadlessTransport("llm-hl", **options)
            self.http = httpx2.Client(transport=self.transport)
            if row.vendor == "openai":
                self.client = openai.OpenAI(
                    base_url=f"{base}/v1",
                    api_key="-",
                    http_client=self.http,
                    max_retries=max_retries,
                )
            else:
                self.client = anthropic.Anthropic(
                    base_url=base, api_key="-", http_client=self.http, max_retries=max_retries
                )
        else:
            self.transport = headlesslb.httpx2.HeadlessTransport("llm-hl", **options)
            self.http = httpx2.AsyncClient(transport=self.transport)
            if row.vendor == "openai":
                self.client = openai.AsyncOpenAI(
                    base_url=f"{base}/v1",
                    api_key="-",
                    http_client=self.http,
                    max_retries=max_retries,
                )
            else:
                self.client = anthropic.AsyncAnthropic(
                    base_url=base, api_key="-", http_client=self.http, max_retries=max_retries
                )

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an SDK method: awaited if async, in a worker thread if blocking."""
        if self.row.sync:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
        return await fn(*args, **kwargs)

    def _create(
        self, stream: bool, extra: dict[str, Any]
    ) -> tuple[Callable[..., Any], dict[str, Any]]:
        messages = [{"role": "user", "content": PROMPT}]
        kwargs: dict[str, Any] = {"model": MODEL, "messages": messages, "stream": stream}
        if self.row.vendor == "openai":
            kwargs["extra_body"] = extra
            return self.client.chat.completions.create, kwargs
        # Anthropic requires max_tokens: the inference app stops at it, as a model does.
        kwargs["max_tokens"] = extra.get("tokens", 16)
        kwargs["extra_body"] = extra
        return self.client.messages.create, kwargs

    async def ask(self, **extra: Any) -> str:
        """One completion (not streamed): its text."""
        create, kwargs = self._create(False, extra)
        answer = await self._call(create, **kwargs)
        if self.row.vendor == "openai":
            text: str = answer.choices[0].message.content
        else:
            text = answer.content[0].text
        return text

    async def open_stream(self, read: int, **extra: Any) -> tuple[Any, Any]:
        """A stream, with ``read`` events read: ``(the SDK's stream, its iterator)``."""
        create, kwargs = self._create(True, extra)
        stream = await self._call(create, **kwargs)
        if self.row.sync:
            events = iter(stream)
            for _ in range(read):
                await anyio.to_thread.run_sync(next, events)
        else:
            events = stream.__aiter__()
            for _ in range(read):
                await events.__anext__()
        return stream, events

    async def stream(self, **extra: Any) -> str:
        """One streamed completion, read to its end: its text, from the deltas."""
        stream, _ = await self.open_stream(0, **extra)
        if self.row.sync:
            return str(await anyio.to_thread.run_sync(self._text_of, stream))
        parts = [self._delta(event) async for event in stream]
        return "".join(parts)

    def _text_of(self, stream: Any) -> str:
        return "".join(self._delta(event) for event in stream)

    def _delta(self, event: Any) -> str:
        if self.row.vendor == "openai":
            return (event.choices[0].delta.content or "") if event.choices else ""
        if event.type == "content_block_delta":
            return str(event.delta.text)
        return ""

    async def close_stream(self, stream: Any) -> None:
        await self._call(stream.close)

    def in_flight(self) -> dict[str | None, int]:
        return {s.hostname: s.in_flight for s in self.transport.endpoints()}

    async def aclose(self) -> None:
        await self._call(self.client.close)


@pytest.fixture
async def sdk_factory(
    row: Row, llm: LocalCluster, anyio_backend: str
) -> AsyncIterator[Callable[..., Sdk]]:
    """Builds the row's SDK client over headlesslb; each is closed at the test's end, on the
    test's own loop (the SDK client closes the httpx2 client, which closes the transport)."""
    made: list[Sdk] = []

    def make(max_retries: int = 0, **options: Any) -> Sdk:
        sdk = Sdk(row, llm, max_retries, **options)
        made.append(sdk)
        return sdk

    yield make
    for sdk in made:
        await sdk.aclose()
        assert not sdk.transport.running  # the SDK's close reached the transport


pytestmark = pytest.mark.anyio


async def test_requests_are_balanced_over_the_pods(sdk_factory: Callable[..., Sdk]) -> None:
    sdk = sdk_factory()
    assert not sdk.transport.running  # an SDK never enters its client: the first request starts it
    served = collections.Counter()
    for _ in range(30):
        text = await sdk.ask(tokens=3)
        assert text == _expected(_pod_of(text), 3)
        served[_pod_of(text)] += 1
    assert served == {pod: 10 for pod in PODS}  # round-robin: each Pod a third


async def test_a_killed_pod_costs_no_request(
    sdk_factory: Callable[..., Sdk], llm: LocalCluster
) -> None:
    sdk = sdk_factory()
    for _ in range(6):  # a pooled connection to every Pod
        await sdk.ask(tokens=1)
    llm.kill("llm-1")
    served_before = llm.requests_served("llm-1")
    served = collections.Counter()
    for _ in range(30):
        # max_retries=0: had headlesslb let one request fail, the SDK would raise here.
        served[_pod_of(await sdk.ask(tokens=1))] += 1
    assert sum(served.values()) == 30 and served["llm-1"] == 0
    assert llm.requests_served("llm-1") == served_before


async def test_no_endpoints_is_the_sdk_s_connection_error(
    sdk_factory: Callable[..., Sdk], llm: LocalCluster
) -> None:
    sdk = sdk_factory()
    await sdk.ask(tokens=1)  # started: discovery runs
    llm.scale("llm", 0)
    await eventually(lambda: not sdk.transport.endpoints(), within=10)
    error = (
        openai.APIConnectionError if sdk.row.vendor == "openai" else anthropic.APIConnectionError
    )
    with pytest.raises(error) as caught:
        await sdk.ask(tokens=1)
    cause = caught.value.__cause__
    # headlesslb's own type, and httpx2's: what lets the SDK map it.
    assert isinstance(cause, NoEndpointsAvailable) and isinstance(cause, httpx2.TransportError)
    assert not isinstance(caught.value, openai.APITimeoutError | anthropic.APITimeoutError)


async def test_a_deadline_is_the_sdk_s_timeout_error(sdk_factory: Callable[..., Sdk]) -> None:
    sdk = sdk_factory(retry=RetryPolicy(deadline=0.5))
    error = openai.APITimeoutError if sdk.row.vendor == "openai" else anthropic.APITimeoutError
    with pytest.raises(error) as caught:
        # 10 s of generation before the answer's headers: far past the deadline.
        await sdk.ask(tokens=20, token_delay=0.5)
    cause = caught.value.__cause__
    assert isinstance(cause, httpx2.TimeoutException)  # what the SDK maps
    assert isinstance(cause, DeadlineExceeded) and isinstance(cause, HeadlessLBError)
    assert sdk.in_flight() == {pod: 0 for pod in PODS}


@ON_EVERY_LOOP
async def test_streams_complete_and_are_balanced_while_open(
    sdk_factory: Callable[..., Sdk],
) -> None:
    sdk = sdk_factory(picker="least_request")
    for _ in range(3):
        text = await sdk.stream(tokens=40, token_delay=0.001)
        assert text == _expected(_pod_of(text), 40)
    assert sdk.in_flight() == {pod: 0 for pod in PODS}
    # An open stream counts as in flight: least-request (the better of two Pods drawn) sends
    # the next one to another Pod.
    opened = [await sdk.open_stream(2, **LONG) for _ in range(2)]
    assert sorted(sdk.in_flight().values()) == [0, 1, 1]
    for stream, _ in opened:
        await sdk.close_stream(stream)
    assert sdk.in_flight() == {pod: 0 for pod in PODS}


@ON_EVERY_LOOP
@pytest.mark.parametrize("read", [0, 2], ids=["unread", "half-read"])
async def test_an_abandoned_stream_releases_its_pod(
    sdk_factory: Callable[..., Sdk], read: int
) -> None:
    sdk = sdk_factory()
    stream, events = await sdk.open_stream(read, **LONG)
    assert sum(sdk.in_flight().values()) == 1
    del stream, events  # never closed, never read to its end

    def released() -> bool:
        # A half-read async stream is closed by its generator's finalizer, which a
        # collection runs (it sits in cyclic garbage with the response).
        gc.collect()
        return not any(sdk.in_flight().values())

    await eventually(released, within=10)
    # And the Pods still serve: nothing was left half-open in the pool.
    assert _pod_of(await sdk.ask(tokens=1)) in PODS


def _status_error(row: Row) -> type[Exception]:
    return openai.APIStatusError if row.vendor == "openai" else anthropic.APIStatusError


async def test_a_failing_pod_costs_no_request_once_posts_may_be_retried(
    sdk_factory: Callable[..., Sdk], llm: LocalCluster
) -> None:
    llm.fail("llm-0", 503)
    # By default a POST that reached a Pod is not repeated (it may have done something): with
    # the SDK's retries off, the Pod's 503 reaches the caller.
    plain = sdk_factory()
    failures = 0
    for _ in range(9):
        try:
            await plain.ask(tokens=1)
        except _status_error(plain.row) as exc:
            assert getattr(exc, "status_code", None) == 503
            failures += 1
    assert failures >= 1
    # Declared safe to repeat, it is retried on another Pod at once.
    retried = sdk_factory(retry=POST_RETRIED)
    served_before = llm.requests_served("llm-0")
    pods = collections.Counter([_pod_of(await retried.ask(tokens=1)) for _ in range(9)])
    assert sum(pods.values()) == 9 and pods["llm-0"] == 0
    assert llm.requests_served("llm-0") > served_before  # tried, failed, retried elsewhere


@pytest.mark.parametrize(
    ("posts_retried", "max_retries", "pod_requests"),
    [(False, 1, 2), (True, 0, 3), (True, 1, 6)],
)
async def test_sdk_retries_multiply_headlesslb_s_attempts(
    sdk_factory: Callable[..., Sdk],
    llm: LocalCluster,
    posts_retried: bool,
    max_retries: int,
    pod_requests: int,
) -> None:
    """Every Pod answers 503: each SDK attempt is a new headlesslb request, which makes up to
    ``max_attempts`` (3) attempts of its own when it may repeat a POST."""
    for pod in PODS:
        llm.fail(pod, 503)
    policy = POST_RETRIED if posts_retried else RetryPolicy()
    sdk = sdk_factory(max_retries=max_retries, retry=policy)
    llm.reset_stats()
    with pytest.raises(_status_error(sdk.row)):
        await sdk.ask(tokens=1)
    assert sum(llm.stats()["pods"].values()) == pod_requests
