"""The hostile Pod itself behaves as scripted, seen from a plain blocking socket client."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from .raw_pod import GARBAGE, MODES, RawPod

REQUEST = b"GET /healthz HTTP/1.1\r\nhost: pod\r\n\r\n"


@pytest.fixture
def pods() -> Iterator[list[RawPod]]:
    """Pods a test starts; each is stopped afterwards, and must have had no internal error."""
    started: list[RawPod] = []
    yield started
    for pod in started:
        pod.stop()
        assert not pod.errors, pod.errors
        assert not any(t.is_alive() for t in pod.threads)


def serve(pods: list[RawPod], mode: str, **kwargs: object) -> RawPod:
    pod = RawPod(mode, **kwargs).start()  # type: ignore[arg-type]
    pods.append(pod)
    return pod


def connect(pod: RawPod) -> socket.socket:
    return socket.create_connection(pod.address, timeout=10)


def read_to_end(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one Content-Length response."""
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"EOF before the end of the headers: {bytes(data)!r}"
        data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    length = int(next(v for k, v in _headers(head) if k == b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


def _headers(head: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        pairs.append((name.strip().lower(), value.strip()))
    return pairs


def test_ok_answers_json_and_keeps_the_connection_alive(pods: list[RawPod]) -> None:
    pod = serve(pods, "ok", name="web-9")
    with connect(pod) as sock:
        for _ in range(2):
            sock.sendall(REQUEST)
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert json.loads(body) == {"pod": "web-9"}
    pod.wait_until(lambda p: p.bytes_received == 2 * len(REQUEST))
    assert (pod.connections, pod.requests) == (1, 2)


def test_ok_with_another_status_and_a_request_body(pods: list[RawPod]) -> None:
    pod = serve(pods, "ok", status=503)
    with connect(pod) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nhost: pod\r\ncontent-length: 5\r\n\r\nhello")
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 503 ")
        sock.sendall(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 503 ")
    assert pod.requests == 2


@pytest.mark.parametrize("mode", ["endless_body", "endless_length"])
def test_endless_bodies_never_end(pods: list[RawPod], mode: str) -> None:
    pod = serve(pods, mode)
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        data = bytearray()
        while len(data) < 4 << 20:  # 4 MiB and still going
            chunk = sock.recv(65536)
            assert chunk, "the endless body ended"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        expected = b"transfer-encoding: chunked" if mode == "endless_body" else b"content-length"
        assert expected in data[:200]
    # The client hung up: the Pod notices and its connection thread ends.
    pod.wait_until(lambda p: p.peer_closed == 1)


def test_trickle_sends_one_byte_at_a_time(pods: list[RawPod]) -> None:
    pod = serve(pods, "trickle", trickle_interval=0.2)
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        assert sock.recv(65536) == b"H"  # the next byte only comes 0.2 s later
        pod.wait_until(lambda p: p.bytes_sent >= 2)
    # Stopping (by the fixture) interrupts the trickle at once instead of letting it run out.


def test_trickle_eventually_delivers_a_whole_response(pods: list[RawPod]) -> None:
    pod = serve(pods, "trickle", trickle_interval=0.001, name="slow")
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        data = read_to_end(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body) == {"pod": "slow"}
    assert pod.bytes_sent == len(data)


def test_garbage_is_not_http(pods: list[RawPod]) -> None:
    pod = serve(pods, "garbage")
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        data = read_to_end(sock)
    assert data == GARBAGE and not data.startswith(b"HTTP/")


def test_huge_headers(pods: list[RawPod]) -> None:
    pod = serve(pods, "huge_headers")
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        data = read_to_end(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\nx-huge: aaaa")
    assert len(head) > 1 << 20 and body == b"ok"


def test_close_mid_headers(pods: list[RawPod]) -> None:
    pod = serve(pods, "close_mid_headers")
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        assert read_to_end(sock) == b"HTTP/1.1 200 OK\r\ncontent-ty"  # then a clean EOF


def test_reset_sends_rst(pods: list[RawPod]) -> None:
    pod = serve(pods, "reset")
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        with pytest.raises(ConnectionResetError):
            read_to_end(sock)
    assert pod.requests == 1


def test_silent_never_answers_until_stopped(pods: list[RawPod]) -> None:
    pod = serve(pods, "silent")
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        pod.wait_until(lambda p: p.requests == 1)
        pod.stop()
        assert read_to_end(sock) == b""  # not one byte, then the Pod's close


def test_mode_can_change_between_requests(pods: list[RawPod]) -> None:
    pod = serve(pods, "ok")
    with connect(pod) as sock:
        sock.sendall(REQUEST)
        read_response(sock)
        pod.mode = "close_mid_headers"
        sock.sendall(REQUEST)
        assert read_to_end(sock) == b"HTTP/1.1 200 OK\r\ncontent-ty"
    with pytest.raises(ValueError, match="mode"):
        pod.mode = "bogus"  # type: ignore[assignment]


def test_stop_ends_every_thread_even_mid_answer() -> None:
    before = set(threading.enumerate())
    pod = RawPod("endless_body", name="busy").start()
    clients = []
    for mode in ("endless_body", "silent", "trickle", "endless_length"):  # all still answering
        pod.mode = mode  # type: ignore[assignment]
        sock = connect(pod)
        sock.sendall(REQUEST)
        clients.append(sock)
        expected = len(clients)
        pod.wait_until(lambda p: p.requests == expected)  # noqa: B023  # waited for right here
    try:
        assert len([t for t in pod.threads if t.is_alive()]) == 5  # acceptor + 4 connections
        pod.stop()
        pod.stop()  # idempotent
        assert not any(t.is_alive() for t in pod.threads)
        assert set(threading.enumerate()) <= before
        assert not pod.errors
        with pytest.raises(OSError):
            socket.create_connection(pod.address, timeout=5).close()  # refused: listener gone
    finally:
        for sock in clients:
            sock.close()


def test_binds_loopback_only_on_an_ephemeral_port() -> None:
    for host in ("0.0.0.0", "10.1.2.3", "::", "localhost", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            RawPod(host=host)
    with RawPod(host="127.77.3.4") as pod:
        assert pod.ip == "127.77.3.4" and pod.port > 0
        assert pod.url("/x") == f"http://127.77.3.4:{pod.port}/x"
        with RawPod(host="127.77.3.4") as other:
            assert other.port != pod.port


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        pod = RawPod(host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with pod, socket.create_connection(pod.address, timeout=10) as sock:
        sock.sendall(REQUEST)
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and pod.url() == f"http://[::1]:{pod.port}"


def test_every_mode_is_covered() -> None:
    assert set(MODES) == {
        "ok",
        "endless_body",
        "endless_length",
        "trickle",
        "garbage",
        "huge_headers",
        "close_mid_headers",
        "reset",
        "silent",
    }
