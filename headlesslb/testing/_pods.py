"""HTTP Pods: one uvicorn server (h11) per Pod IP, all on the child's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from ._apps import UserApp
from ._behaviour import PodBehaviour, Verdict
from ._model import ClusterError, PodInfo, tcp_socket

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# uvicorn's own dictConfig would be re-run for every Pod; configure its loggers once instead.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


@dataclass
class Pod:
    """The child's live record of one Pod."""

    name: str
    workload: str
    namespace: str
    ip: str
    port: int
    hostname: str | None
    ordinal: int | None
    serve: bool
    tls: tuple[str, str] | None = None
    ready: bool = True
    alive: bool = True
    slow: float = 0.0
    fail_status: int | None = None
    reset: bool = False
    served: int = 0
    health_served: int = 0
    lb_connections: int = 0
    rejected: int = 0
    """Requests turned away by the Pod's rate limit (counted in ``served`` too)."""
    behaviour: PodBehaviour = field(default_factory=PodBehaviour, repr=False)
    server: PodServer | None = field(default=None, repr=False)
    app: UserApp | None = field(default=None, repr=False)
    """The user's app this Pod serves instead of the echo app (``add_*(app=...)``)."""

    def info(self) -> PodInfo:
        """A picklable snapshot for the parent."""
        return PodInfo(
            name=self.name,
            ip=self.ip,
            port=self.port,
            hostname=self.hostname,
            ordinal=self.ordinal,
            alive=self.alive,
            ready=self.ready,
            workload=self.workload,
            namespace=self.namespace,
            serving=self.serve,
            scheme="https" if self.tls else "http",
        )


class PodServer:
    """A uvicorn server bound to the Pod's own ip:port that can be killed and restarted."""

    def __init__(self, pod: Pod) -> None:
        self.pod = pod
        self._server: Any = None
        self._killed = asyncio.Event()

    @property
    def running(self) -> bool:
        """True while the listening socket is open."""
        return self._server is not None

    async def start(self) -> None:
        """Bind the Pod's ip:port and accept connections."""
        if self._server is not None:
            return
        sock = tcp_socket()
        try:
            # Restarting on the same ip:port must not trip over TIME_WAIT from the last run.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.pod.ip, self.pod.port))
        except OSError as exc:
            sock.close()
            raise ClusterError(
                f"pod {self.pod.name}: cannot bind {self.pod.ip}:{self.pod.port}: {exc}"
            ) from exc
        sock.setblocking(False)
        certfile, keyfile = self.pod.tls or (None, None)
        config = uvicorn.Config(
            self._app if self.pod.app is None else self._user_app,
            http="h11",
            ws="none",
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        config.load()
        server = uvicorn.Server(config)
        # Server.serve() would install signal handlers and poll every 0.1 s; startup() alone
        # gives a listening server we stop ourselves.
        server.lifespan = config.lifespan_class(config)
        self._killed = asyncio.Event()
        if self.pod.app is not None:
            try:
                await self.pod.app.started(self.pod.name)
            except BaseException:
                sock.close()
                raise
        await server.startup(sockets=[sock])
        self._server = server

    def kill(self) -> None:
        """Close the listening socket and abort every open connection (RST, no goodbye)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._killed.set()
        if self.pod.app is not None:
            self.pod.app.stop()
        for listener in server.servers:
            listener.close()
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()

    async def _sleep(self, seconds: float) -> None:
        # A killed Pod must not answer later: wake up early and let the (aborted) send no-op.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._killed.wait(), seconds)

    async def sleep_unless_killed(self, seconds: float) -> None:
        """Sleep, waking early if the Pod is killed (for apps other than the echo app)."""
        await self._sleep(seconds)

    def transport_for(self, client: Any) -> asyncio.Transport | None:
        """The transport of one connection, by the ASGI scope's ``client``."""
        return self._transport_for(client)

    async def _user_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.pod.app is not None
        await self.pod.app.serve(self, scope, receive, send)

    def _transport_for(self, client: Any) -> asyncio.Transport | None:
        if self._server is None:
            return None
        for connection in self._server.server_state.connections:
            if getattr(connection, "client", None) == client:
                transport: asyncio.Transport = connection.transport
                return transport
        return None

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        pod = self.pod
        body_len = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body_len += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        path: str = scope["path"]
        health = path == "/healthz"
        if health:
            pod.health_served += 1
        else:
            pod.served += 1
        delay = pod.slow
        if not health and pod.behaviour.active:
            verdict = pod.behaviour.decide(asyncio.get_running_loop().time(), delay)
            if verdict.reject is not None:
                pod.rejected += 1
                await _reject(send, verdict, pod.name)
                return
            delay = verdict.delay
        if delay > 0:
            await self._sleep(delay)
        headers = dict(scope["headers"])
        status = pod.fail_status or 200
        if health:
            body = b"ok" if status < 400 else b"failing"
            content_type = b"text/plain"
        else:
            body = json.dumps(
                {
                    "pod": pod.name,
                    "method": scope["method"],
                    "path": path,
                    "host": headers.get(b"host", b"").decode("latin-1"),
                    "traceparent": headers.get(b"traceparent", b"").decode("latin-1") or None,
                    "body_len": body_len,
                    "status": status,
                }
            ).encode()
            content_type = b"application/json"
        if path == "/stream" and status < 400:
            await self._stream(scope, receive, send)
            return
        if pod.reset:
            await self._reset_mid_response(scope, receive, send, body)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-pod", pod.name.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/stream?chunks=N&interval=S&reset_after=K``: server-sent events, one ``data:``
        line of JSON (``{"pod": ..., "chunk": i}``) every ``interval`` seconds (default 10
        chunks, 0.1 s apart), no Content-Length; ``reset_after=K`` (or the Pod's ``reset``
        control: half the chunks) resets the connection after K chunks. It stops when the client
        goes away or the Pod is killed."""
        pod = self.pod
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        chunks = int(query.get("chunks", ["10"])[0])
        interval = float(query.get("interval", ["0.1"])[0])
        reset_after = int(query["reset_after"][0]) if "reset_after" in query else None
        if reset_after is None and pod.reset:
            reset_after = chunks // 2
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-pod", pod.name.encode()),
                ],
            }
        )
        for chunk in range(chunks):
            if chunk == reset_after:
                await self._abort(scope, receive)
                return
            if chunk:
                await self._sleep(interval)
            transport = self._transport_for(scope.get("client"))
            if transport is None or transport.is_closing():
                return  # the client went away, or the Pod was killed: nobody reads on
            event = json.dumps({"pod": pod.name, "chunk": chunk})
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {event}\n\n".encode(),
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b""})

    async def _reset_mid_response(
        self, scope: Scope, receive: Receive, send: Send, body: bytes
    ) -> None:
        # Promise more bytes than we send, then RST: the client has the headers and half a
        # body, exactly what a Pod crashing mid-response looks like.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body) + 1024).encode()),
                    (b"x-pod", self.pod.name.encode()),
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        await self._abort(scope, receive)

    async def _abort(self, scope: Scope, receive: Receive) -> None:
        """Reset the request's connection (RST) and wait until uvicorn sees it go."""
        transport = self._transport_for(scope.get("client"))
        if transport is None:
            return
        transport.abort()
        # Returning before uvicorn sees the disconnect would make it log "ASGI callable
        # returned without completing response"; wait for connection_lost first.
        try:
            async with asyncio.timeout(1.0):
                while (await receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            pass


async def _reject(send: Send, verdict: Verdict, pod: str) -> None:
    """Answer at once with the rate limit's status and Retry-After (no latency: a real limiter
    rejects before the app does any work)."""
    body = b'{"error": "rate limited"}'
    await send(
        {
            "type": "http.response.start",
            "status": verdict.reject,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(verdict.retry_after).encode()),
                (b"x-pod", pod.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
