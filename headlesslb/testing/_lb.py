"""The ClusterIP/LB Service: a connection-level random TCP balancer, like kube-proxy."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from ._model import ClusterError, tcp_socket
from ._pods import Pod

_CONNECT_TIMEOUT = 2.0
_CHUNK = 65536


class LbProxy:
    """Accepts on the Service ip:port; each connection is piped to one Pod for its lifetime."""

    def __init__(self, ip: str, port: int, choose: Callable[[set[str]], Pod | None]) -> None:
        self.ip = ip
        self.port = port
        self._choose = choose
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.WriteTransport] = set()

    async def start(self) -> None:
        """Bind and accept."""
        if self._server is not None:
            return
        sock = tcp_socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.ip, self.port))
        except OSError as exc:
            sock.close()
            raise ClusterError(f"LB: cannot bind {self.ip}:{self.port}: {exc}") from exc
        sock.setblocking(False)
        self._server = await asyncio.start_server(self._handle, sock=sock)

    def stop(self) -> None:
        """Close the listener and abort every proxied connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)
        tried: set[str] = set()
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while upstream is None:
                pod = self._choose(tried)
                if pod is None:
                    # No Pod left to try: reset, as kube-proxy's REJECT does.
                    writer.transport.abort()
                    return
                tried.add(pod.name)
                try:
                    async with asyncio.timeout(_CONNECT_TIMEOUT):
                        upstream = await asyncio.open_connection(pod.ip, pod.port)
                except (OSError, TimeoutError):
                    continue
                pod.lb_connections += 1
            up_reader, up_writer = upstream
            self._transports.add(up_writer.transport)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    self._transports.discard(w.transport)
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except (OSError, RuntimeError):
        # One side reset: reset the other too, so the client sees the failure as it happened.
        with contextlib.suppress(Exception):
            writer.transport.abort()
