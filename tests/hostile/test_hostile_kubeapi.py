"""EndpointSlice discovery against a hostile "Kubernetes API": what the real one never sends.

The kubeapi bed (tests/kubeapi) validates what it stores, so malformed JSON, endless or
trickling watches and oversized events come from this small scripted server instead (plain
HTTP on loopback, one thread per connection). Each case: the client says it once, keeps the
last good endpoints, carries on (a watch resumed, a list retried) and never hangs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

import headlesslb.sync
from headlesslb import (
    DiscoveryError,
    EndpointSlices,
    HeadlessClient,
    KubeAPIConfig,
    RefreshPolicy,
)
from headlesslb.core.names import expand_service_name
from headlesslb.io.kube import MAX_EVENT_BYTES, EndpointSliceDiscovery

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: what these tests exercise is the client's reading, not the loop."""
    return "asyncio"


Script = Callable[["Handler", dict[str, str]], None]


def slice_json(name: str, ips: list[str], version: str = "5") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": version},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def good_list(handler: Handler, params: dict[str, str]) -> None:
    handler.reply(
        200, {"metadata": {"resourceVersion": "5"}, "items": [slice_json("a", ["10.0.0.1"])]}
    )


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        watch = params.get("watch") == "1"
        with self.server.lock:
            self.server.requests.append(("watch" if watch else "list", params))
        script = self.server.watch if watch else self.server.list
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            script(self, params)

    def reply(self, code: int, body: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self) -> None:
        """Headers of a watch: a body until the connection closes."""
        self.protocol_version = "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()

    def send_line(self, data: bytes | dict[str, Any]) -> None:
        line = data if isinstance(data, bytes) else json.dumps(data).encode() + b"\n"
        self.wfile.write(line)
        self.wfile.flush()

    def hold(self, seconds: float) -> None:
        self.server.stopping.wait(seconds)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, list_script: Script, watch_script: Script) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.list = list_script
        self.watch = watch_script
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stopping = threading.Event()

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for k, _ in self.requests if k == kind)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def serve() -> Iterator[Callable[[Script, Script], Server]]:
    servers: list[tuple[Server, threading.Thread]] = []

    def start(list_script: Script, watch_script: Script) -> Server:
        server = Server(list_script, watch_script)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def source(server: Server, **settings: Any) -> EndpointSliceDiscovery:
    name = expand_service_name("web", namespace="ns", cluster_domain="cluster.local")
    api = KubeAPIConfig(server.url, token="t")
    return EndpointSliceDiscovery(
        name,
        EndpointSlices(api=api, **settings),
        port="http",
        refresh=RefreshPolicy(error_backoff=0.05, max_error_backoff=0.2),
    )


async def run_until(
    discovery: EndpointSliceDiscovery, predicate: Callable[[], bool], timeout: float = 10.0
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(discovery.watch, lambda: None)
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()


async def ips(discovery: EndpointSliceDiscovery) -> list[str]:
    return [e.ip for e in (await discovery.resolve()).endpoints]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_malformed_watch_events_keep_the_last_state(
    serve: Callable[[Script, Script], Server], caplog: pytest.LogCaptureFixture
) -> None:
    def watch(handler: Handler, params: dict[str, str]) -> None:
        handler.stream()
        handler.send_line({"type": "ADDED", "object": slice_json("b", ["10.0.0.2"], "6")})
        handler.send_line(b'{"type": "MODIFIED", "object": {\n')  # cut short: not JSON
        handler.send_line({"type": "MODIFIED", "object": slice_json("b", ["10.0.0.3"], "7")})

    server = serve(good_list, watch)
    discovery = source(server)
    await run_until(discovery, lambda: server.count("watch") >= 4)
    assert await ips(discovery) == ["10.0.0.1", "10.0.0.2"]  # nothing after the broken line
    assert discovery.resource_version == "6"  # each watch resumes after the last good event
    assert all(p.get("resourceVersion") in ("5", "6") for k, p in server.requests if k == "watch")
    said = [m for m in warnings(caplog) if "not JSON" in m]
    assert len(said) == 1, warnings(caplog)


async def test_an_event_longer_than_the_cap_is_cut(
    serve: Callable[[Script, Script], Server], caplog: pytest.LogCaptureFixture
) -> None:
    def watch(handler: Handler, params: dict[str, str]) -> None:
        handler.stream()
        chunk = b"x" * 65536
        for _ in range(MAX_EVENT_BYTES // len(chunk) + 2):
            handler.wfile.write(chunk)
        handler.hold(30)

    server = serve(good_list, watch)
    discovery = source(server)
    await run_until(discovery, lambda: server.count("watch") >= 2)
    assert await ips(discovery) == ["10.0.0.1"]
    assert any("longer than" in m for m in warnings(caplog))


@pytest.mark.parametrize("how", ["trickle", "endless_bookmarks", "silent"])
async def test_a_watch_that_never_ends_is_cut_and_resumed(
    serve: Callable[[Script, Script], Server], how: str
) -> None:
    def watch(handler: Handler, params: dict[str, str]) -> None:
        handler.stream()
        began = time.monotonic()
        while not handler.server.stopping.is_set() and time.monotonic() - began < 30:
            if how == "trickle":
                handler.wfile.write(b" ")  # never a whole line
            elif how == "endless_bookmarks":  # past its timeoutSeconds, forever
                handler.send_line(
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}
                )
            handler.wfile.flush()
            handler.hold(0.1)

    server = serve(good_list, watch)
    discovery = source(server, watch_timeout=1, grace=1)
    began = time.monotonic()
    await run_until(discovery, lambda: server.count("watch") >= 2)
    # Cut at about timeoutSeconds + grace (2 s), not left hanging.
    assert time.monotonic() - began < 8
    assert await ips(discovery) == ["10.0.0.1"]
    last = [p for k, p in server.requests if k == "watch"][-1]
    assert last["resourceVersion"] == ("9" if how == "endless_bookmarks" else "5")


@pytest.mark.parametrize(
    "answer",
    [b"{not json", b"[]", b'{"items": 3, "metadata": {}}', b'{"items": [], "metadata": {}}'],
)
async def test_a_malformed_first_list_is_an_error_not_a_crash(
    serve: Callable[[Script, Script], Server], answer: bytes
) -> None:
    server = serve(lambda h, p: h.reply(200, None, raw=answer), lambda h, p: None)
    discovery = source(server)
    await run_until(discovery, lambda: server.count("list") >= 3)
    with pytest.raises(DiscoveryError, match="could not be listed"):
        await discovery.resolve()
    assert not discovery.synced


async def test_server_errors_on_the_watch_keep_the_state_and_back_off(
    serve: Callable[[Script, Script], Server], caplog: pytest.LogCaptureFixture
) -> None:
    def watch(handler: Handler, params: dict[str, str]) -> None:
        if params.get("resourceVersion") == "5":
            handler.stream()
            handler.send_line(
                {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "boom"}}
            )
        else:
            handler.reply(503, {"kind": "Status", "code": 503})

    server = serve(good_list, watch)
    discovery = source(server)
    await run_until(discovery, lambda: server.count("watch") >= 5)
    assert await ips(discovery) == ["10.0.0.1"]
    said = [m for m in warnings(caplog) if "boom" in m]
    assert len(said) == 1


async def test_a_relist_keeps_the_last_good_version_of_a_broken_slice(
    serve: Callable[[Script, Script], Server],
) -> None:
    def lists(handler: Handler, params: dict[str, str]) -> None:
        if handler.server.count("list") == 1:
            good_list(handler, params)
            return
        broken = slice_json("a", ["10.0.0.9"], "8") | {"endpoints": "not a list"}
        fresh = slice_json("b", ["10.0.0.2"], "8")
        handler.reply(200, {"metadata": {"resourceVersion": "8"}, "items": [broken, fresh]})

    def watch(handler: Handler, params: dict[str, str]) -> None:
        handler.stream()
        if params.get("resourceVersion") == "5":
            gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
            handler.send_line({"type": "ERROR", "object": gone})
        else:
            handler.hold(30)

    server = serve(lists, watch)
    discovery = source(server)
    await run_until(discovery, lambda: discovery.lists >= 2)
    assert discovery.relists_gone == 1
    assert await ips(discovery) == ["10.0.0.1", "10.0.0.2"]  # a as it was, b new


async def test_a_ca_file_that_cannot_be_read_is_an_error_not_a_hang(tmp_path: Any) -> None:
    name = expand_service_name("web", namespace="ns", cluster_domain="cluster.local")
    api = KubeAPIConfig("https://127.0.0.1:9", token="t", ca_file=str(tmp_path / "missing.crt"))
    discovery = EndpointSliceDiscovery(name, EndpointSlices(api=api), port="http")
    async with anyio.create_task_group() as tg:
        tg.start_soon(discovery.watch, lambda: None)
        with anyio.fail_after(5), pytest.raises(DiscoveryError, match="CA bundle"):
            await discovery.resolve()
        tg.cancel_scope.cancel()


async def test_an_event_split_across_chunks_is_read_whole(
    serve: Callable[[Script, Script], Server],
) -> None:
    def watch(handler: Handler, params: dict[str, str]) -> None:
        handler.stream()
        first = json.dumps({"type": "ADDED", "object": slice_json("b", ["10.0.0.2"], "6")})
        second = json.dumps({"type": "ADDED", "object": slice_json("c", ["10.0.0.3"], "7")})
        data = f"{first}\n{second}\n".encode()
        for piece in (data[:10], data[10 : len(first) + 5], data[len(first) + 5 :]):
            handler.wfile.write(piece)
            handler.wfile.flush()
            handler.hold(0.05)
        handler.hold(30)

    server = serve(good_list, watch)
    discovery = source(server)
    await run_until(discovery, lambda: discovery.events >= 2)
    assert await ips(discovery) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert discovery.resource_version == "7" and discovery.last_error is None


def bookmarks_until_closed(closed: threading.Event) -> Script:
    """A watch that sends a bookmark every 50 ms until its connection is closed (then sets
    ``closed``): the client's side going away is seen within one write."""

    def watch(handler: Handler, params: dict[str, str]) -> None:
        handler.stream()
        try:
            while not handler.server.stopping.is_set():
                handler.send_line(
                    {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "5"}}}
                )
                handler.hold(0.05)
        except OSError:
            closed.set()
            raise

    return watch


async def test_the_watch_ends_with_the_async_client(
    serve: Callable[[Script, Script], Server],
) -> None:
    closed = threading.Event()
    server = serve(good_list, bookmarks_until_closed(closed))
    slices = EndpointSlices(api=KubeAPIConfig(server.url, token="t"))
    async with HeadlessClient("web", namespace="ns", port=8080, discovery=slices) as client:
        with anyio.fail_after(5):
            # The list's Pods come first; the watch is asked for once they are in.
            while [e.ip for e in client.endpoints()] != ["10.0.0.1"] or not server.count("watch"):
                await anyio.sleep(0.01)
        assert server.count("watch") == 1 and not closed.is_set()
    with anyio.fail_after(5):
        while not closed.is_set():
            await anyio.sleep(0.01)


def test_the_watch_ends_with_the_sync_client(
    serve: Callable[[Script, Script], Server],
) -> None:
    closed = threading.Event()
    server = serve(good_list, bookmarks_until_closed(closed))
    slices = EndpointSlices(api=KubeAPIConfig(server.url, token="t"))
    client = headlesslb.sync.HeadlessClient("web", namespace="ns", port=8080, discovery=slices)
    with client:
        client.wait_ready(timeout=5)
        assert [e.ip for e in client.endpoints()] == ["10.0.0.1"]
    assert closed.wait(5)
