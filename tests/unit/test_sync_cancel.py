"""Stopping one blocking attempt from another thread (:class:`headlesslb.sync.network.CancelToken`,
the losing side of a sync hedged race), on a loopback socket: the cancelled thread wakes at once,
another thread's reads on the same backend are untouched, and nothing more is sent or opened."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpcore
import pytest

from headlesslb.sync.network import CancelToken, Network, cancellable


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def test_cancel_wakes_the_thread_blocked_reading_and_only_it(listener: socket.socket) -> None:
    network = Network(httpcore)
    port = listener.getsockname()[1]
    loser = network.connect_tcp("127.0.0.1", port)
    loser_peer, _ = listener.accept()
    bystander = network.connect_tcp("127.0.0.1", port)
    peer, _ = listener.accept()
    token = CancelToken()
    reading = threading.Event()
    got: list[bytes | BaseException] = []

    def read() -> None:
        with cancellable(token):
            reading.set()
            try:
                got.append(loser.read(100, timeout=5))
            except BaseException as exc:
                got.append(exc)
            for then in (lambda: loser.write(b"x"), lambda: network.connect_tcp("127.0.0.1", port)):
                try:
                    then()
                except BaseException as exc:
                    got.append(exc)

    worker = threading.Thread(target=read)
    worker.start()
    assert reading.wait(5)
    token.cancel()
    token.cancel()  # twice is fine
    worker.join(5)  # a bound for a broken build only: the thread wakes at once
    assert not worker.is_alive()
    woken, wrote, connected = got
    assert woken == b"" or isinstance(woken, OSError | httpcore.ReadError)
    # Cancelled: nothing more is written, no new connection is opened, in that thread.
    assert isinstance(wrote, httpcore.WriteError) and isinstance(connected, httpcore.ConnectError)
    peer.sendall(b"still here")
    assert bystander.read(100, timeout=5) == b"still here"  # no token in this thread: untouched
    for stream in (loser, bystander):
        stream.close()
    for each in (loser_peer, peer):
        each.close()
