"""DNS over TCP against deliberately awkward servers on loopback: a reply in fragments, a server
that hangs up mid-reply, a port nobody listens on."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import anyio
import pytest

from headlesslb.io.dns import _tcp_exchange

Serve = Callable[[socket.socket], None]


@pytest.fixture
def tcp_server() -> Iterator[Callable[[Serve], tuple[str, int]]]:
    """Start a one-connection TCP server on 127.0.0.1 running ``serve(conn)``; its address."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def start(serve: Serve) -> tuple[str, int]:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                serve(conn)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        host, port = listener.getsockname()[:2]
        return host, port

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(timeout=10)


def _read_query(conn: socket.socket) -> bytes:
    size = int.from_bytes(conn.recv(2, socket.MSG_WAITALL), "big")
    return conn.recv(size, socket.MSG_WAITALL)


def test_a_reply_in_fragments_is_put_together(
    tcp_server: Callable[[Serve], tuple[str, int]],
) -> None:
    reply = bytes(range(256)) * 100  # 25,600 bytes

    def serve(conn: socket.socket) -> None:
        query = _read_query(conn)
        assert query == b"the query"
        framed = len(reply).to_bytes(2, "big") + reply
        conn.sendall(framed[:1])  # the length prefix split across two segments
        conn.sendall(framed[1:7000])
        conn.sendall(framed[7000:] + b"trailing bytes of another reply")

    server = tcp_server(serve)
    assert anyio.run(_tcp_exchange, server, b"the query") == reply


def test_a_server_hanging_up_mid_reply_is_an_incomplete_read(
    tcp_server: Callable[[Serve], tuple[str, int]],
) -> None:
    def serve(conn: socket.socket) -> None:
        _read_query(conn)
        conn.sendall((1000).to_bytes(2, "big") + b"only part of it")

    server = tcp_server(serve)
    with pytest.raises(anyio.IncompleteRead):
        anyio.run(_tcp_exchange, server, b"q")


def test_a_refused_connection_is_an_os_error_saying_so() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError, match="connecting: Connection refused"):
        anyio.run(_tcp_exchange, ("127.0.0.1", port), b"q")


def test_trio_runs_the_same_exchange(tcp_server: Callable[[Serve], tuple[str, int]]) -> None:
    def serve(conn: socket.socket) -> None:
        _read_query(conn)
        conn.sendall((3).to_bytes(2, "big") + b"abc")

    server = tcp_server(serve)
    assert anyio.run(_tcp_exchange, server, b"q", backend="trio") == b"abc"
