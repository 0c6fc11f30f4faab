"""RawPod: a hostile "Pod", a real TCP server on loopback scripted at the byte level.

It runs on plain non-blocking sockets in background threads, so it works whatever the async
backend of the test (asyncio, trio) and whatever the client (httpx, a raw socket). Every
connection reads one request head and then behaves according to the Pod's current ``mode``:

``ok``
    A normal, small ``HTTP/1.1 200`` (``status`` if set) with ``{"pod": name}`` as JSON;
    keep-alive is honoured, so one connection may carry many requests.
``endless_body``
    Valid ``200`` headers, then a chunked body that never ends (16 KiB chunks).
``endless_length``
    Valid ``200`` headers with ``Content-Length: 10**12``, then bytes that never end.
``trickle``
    A valid small ``200`` response, one byte every ``trickle_interval`` seconds (0.2 s).
``garbage``
    Bytes that are not HTTP at all, then close.
``huge_headers``
    A status line, then one header of ``header_size`` bytes (1 MiB), then a tiny body.
``close_mid_headers``
    Half a status line and header block, then a clean close (FIN).
``reset``
    Read the request, then reset the connection (RST, via ``SO_LINGER`` 0).
``silent``
    Read the request and never answer (until the client gives up or the Pod stops).

It binds loopback addresses only (``127.0.0.0/8`` or ``::1``; by default 127.77.0.1 on an
ephemeral port), counts connections, requests and bytes, and stops cleanly: :meth:`stop` (or
leaving the ``with`` block) wakes every thread at once, closes every socket and joins every
thread, raising if one failed to end.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import select
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Literal, get_args

__all__ = ["MODES", "Mode", "RawPod"]

Mode = Literal[
    "ok",
    "endless_body",
    "endless_length",
    "trickle",
    "garbage",
    "huge_headers",
    "close_mid_headers",
    "reset",
    "silent",
]
MODES: tuple[str, ...] = get_args(Mode)

_MAX_REQUEST_HEAD = 64 * 1024
_CHUNK = 16 * 1024
GARBAGE = b"\x16\x03\x01\x00\xa5\x00\xffSSH-2.0-not-http\r\n\x00\x01\x02\r\n\r\n"


class _Stop(Exception):
    """The Pod is stopping: unwind the connection's thread."""


class _PeerGone(Exception):
    """The client closed or reset the connection."""


class RawPod:
    """A hostile Pod on a loopback address; see the module docstring for the modes."""

    def __init__(
        self,
        mode: Mode = "ok",
        *,
        host: str = "127.77.0.1",
        port: int = 0,
        name: str = "hostile",
        status: int = 200,
        trickle_interval: float = 0.2,
        header_size: int = 1 << 20,
    ) -> None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"RawPod host must be a loopback IP address, not {host!r}") from None
        if not address.is_loopback:
            raise ValueError(f"RawPod binds loopback addresses only, not {host!r}")
        if mode not in MODES:
            raise ValueError(f"RawPod mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.host = str(address)
        self.name = name
        self.status = status
        self.trickle_interval = trickle_interval
        self.header_size = header_size
        self._mode: Mode = mode
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self._requested_port = port
        self._port: int | None = None
        self._listener: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = threading.Event()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self.connections = 0
        """Connections accepted."""
        self.requests = 0
        """Request heads read."""
        self.bytes_received = 0
        self.bytes_sent = 0
        self.peer_closed = 0
        """Connections the client closed or reset while the Pod still had something to say."""
        self.errors: list[BaseException] = []
        """Unexpected exceptions in the Pod's threads (a test can assert there were none)."""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> RawPod:
        """Bind and start serving; returns self."""
        if self._listener is not None:
            raise RuntimeError("RawPod already started")
        listener = socket.socket(self._family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self._requested_port))
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._spawn(self._accept_loop, f"raw-pod-{self.name}-accept")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Wake every thread, close every socket, join every thread. Idempotent."""
        if self._listener is None or self._stopping.is_set():
            return
        self._stopping.set()
        assert self._wake_w is not None
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")  # never drained: every select() sees it from now on
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        with self._cond:
            threads = list(self._threads)  # the acceptor may have started one more meanwhile
            leftovers = list(self._open)
        for thread in threads:
            thread.join(timeout)
        for sock in leftovers:
            sock.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"RawPod {self.name}: threads did not stop: {alive}")

    def __enter__(self) -> RawPod:
        return self if self._listener is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def threads(self) -> list[threading.Thread]:
        """Every thread this Pod started (for leak checks)."""
        with self._cond:
            return list(self._threads)

    # -- addresses and controls --------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port (ephemeral unless one was asked for)."""
        if self._port is None:
            raise RuntimeError("RawPod not started")
        return self._port

    @property
    def ip(self) -> str:
        """The loopback address it listens on."""
        return self.host

    @property
    def address(self) -> tuple[str, int]:
        """``(ip, port)``."""
        return (self.host, self.port)

    def url(self, path: str = "") -> str:
        """``http://ip:port`` plus ``path``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    @property
    def mode(self) -> Mode:
        """How the next request is answered (changing it leaves running answers alone)."""
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"RawPod mode must be one of {', '.join(MODES)}, not {mode!r}")
        self._mode = mode

    def wait_until(self, predicate: Callable[[RawPod], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate(self)`` holds (re-checked on every counter change)."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"RawPod {self.name}: condition not met within {timeout} s")

    # -- threads -----------------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._cond:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _count(self, **deltas: int) -> None:
        with self._cond:
            for key, delta in deltas.items():
                setattr(self, key, getattr(self, key) + delta)
            self._cond.notify_all()

    def _accept_loop(self) -> None:
        listener, wake = self._listener, self._wake_r
        assert listener is not None and wake is not None
        serial = 0
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(wake, select.POLLIN)
        while not self._stopping.is_set():
            events = dict(poller.poll())
            if wake.fileno() in events:
                return
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if not self._stopping.is_set():
                    self.errors.append(exc)
                return
            conn.setblocking(False)
            with self._cond:
                if self._stopping.is_set():
                    conn.close()
                    return
                self._open.add(conn)
            serial += 1
            self._count(connections=1)
            self._spawn(self._handle, f"raw-pod-{self.name}-conn-{serial}", conn)

    def _handle(self, conn: socket.socket) -> None:
        try:
            self._serve(conn)
        except _Stop:
            pass
        except _PeerGone:
            self._count(peer_closed=1)
        except Exception as exc:  # a bug in the Pod itself: keep it for the test to see
            self.errors.append(exc)
        finally:
            with self._cond:
                self._open.discard(conn)
            conn.close()

    # -- byte-level I/O that a stop interrupts at once ----------------------------------------
    def _wait(self, conn: socket.socket, *, write: bool) -> None:
        # poll(), not select(): a test process may well hold file descriptors above 1024.
        wake = self._wake_r
        assert wake is not None
        poller = select.poll()
        poller.register(wake, select.POLLIN)
        poller.register(conn, select.POLLOUT if write else select.POLLIN)
        events = dict(poller.poll())
        if wake.fileno() in events:
            raise _Stop

    def _recv(self, conn: socket.socket) -> bytes:
        while True:
            self._wait(conn, write=False)
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                raise _PeerGone from None
            if not data:
                raise _PeerGone
            self._count(bytes_received=len(data))
            return data

    def _send(self, conn: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._wait(conn, write=True)
            try:
                sent = conn.send(view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                raise _PeerGone from None
            self._count(bytes_sent=sent)
            view = view[sent:]

    def _pause(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stop

    # -- HTTP, just enough --------------------------------------------------------------------
    def _read_request(self, conn: socket.socket, buffer: bytearray) -> tuple[bytes, bool]:
        """Read one request (head and body) from ``conn``; returns (head, keep_alive)."""
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > _MAX_REQUEST_HEAD:
                raise _PeerGone  # not a client we want to talk to
            buffer += self._recv(conn)
        end = buffer.index(b"\r\n\r\n") + 4
        head = bytes(buffer[:end])
        del buffer[:end]
        self._count(requests=1)
        headers = _headers(head)
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while not buffer.endswith(b"0\r\n\r\n"):
                buffer += self._recv(conn)
            buffer.clear()
        else:
            length = int(headers.get(b"content-length", b"0") or b"0")
            while len(buffer) < length:
                buffer += self._recv(conn)
            del buffer[:length]
        keep_alive = headers.get(b"connection", b"").lower() != b"close"
        return head, keep_alive

    def _ok_response(self, keep_alive: bool) -> bytes:
        body = json.dumps({"pod": self.name}).encode()
        return (
            f"HTTP/1.1 {self.status} {'OK' if self.status == 200 else 'Status'}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        ).encode() + body

    def _serve(self, conn: socket.socket) -> None:
        buffer = bytearray()
        while True:
            _, keep_alive = self._read_request(conn, buffer)
            mode = self._mode
            if mode == "ok":
                self._send(conn, self._ok_response(keep_alive))
                if keep_alive:
                    continue
                return
            if mode == "endless_body":
                self._send(conn, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (_CHUNK, b"x" * _CHUNK)
                while True:
                    self._send(conn, chunk)
            if mode == "endless_length":
                self._send(conn, b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\n")
                block = b"x" * _CHUNK
                while True:
                    self._send(conn, block)
            if mode == "trickle":
                for byte in self._ok_response(keep_alive=False):
                    self._send(conn, bytes([byte]))
                    self._pause(self.trickle_interval)
                return
            if mode == "garbage":
                self._send(conn, GARBAGE)
                return
            if mode == "huge_headers":
                self._send(conn, b"HTTP/1.1 200 OK\r\nx-huge: ")
                block = b"a" * _CHUNK
                for _ in range(self.header_size // _CHUNK):
                    self._send(conn, block)
                self._send(conn, b"a" * (self.header_size % _CHUNK))
                self._send(conn, b"\r\ncontent-length: 2\r\n\r\nok")
                return
            if mode == "close_mid_headers":
                self._send(conn, b"HTTP/1.1 200 OK\r\ncontent-ty")
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
                return
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return  # closing with linger 0 sends RST
            if mode == "silent":
                while True:  # until the client hangs up (PeerGone) or the Pod stops
                    buffer += self._recv(conn)
            raise AssertionError(f"unhandled mode {mode!r}")


def _headers(head: bytes) -> dict[bytes, bytes]:
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers
