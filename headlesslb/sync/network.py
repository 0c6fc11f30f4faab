"""The sync sender's network backend: sockets another thread can shut down.

A thread blocked reading a socket is not woken when another thread closes it (Linux): a blocking
request in flight when the client closed would wait for the Pod's answer, however late, and a
hedge's loser would run on to its own. ``shutdown(SHUT_RDWR)`` wakes it at once. :class:`Network`
is httpcore's blocking backend remembering the streams it opens, so that:

- :meth:`Network.shutdown` (the client closes) shuts every socket down and opens nothing more;
- a :class:`CancelToken` stops the one attempt of the thread it was set in
  (:func:`cancellable`): the loser of a hedged race. Its read, write or connect fails at once.

An HTTP/2 connection is shared by requests of other threads, so its socket is never shut for one
of them (that attempt runs on to its answer or its timeout).

One class serves httpcore and httpcore2 alike: :class:`Network` is made for the module it
wraps (``Network(httpcore)``), whose blocking backend it uses and whose errors it raises, and
the pools take it as duck-typed backends (they only call its methods).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, Protocol

from ..core import forksafe

__all__ = ["CancelToken", "Network", "cancellable"]


class CancelToken:
    """Cancels one blocking attempt from another thread: :meth:`cancel` shuts down the socket
    the attempt's thread is reading or writing now, and its next read, write or connect fails
    at once. Only sends made under :func:`cancellable` with this token are affected."""

    __slots__ = ("_cancelled", "_lock", "_sock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._sock: socket.socket | None = None

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the attempt now; safe from any thread, and twice."""
        with self._lock:
            self._cancelled = True
            sock, self._sock = self._sock, None
        if sock is not None:
            _shut(sock)

    def _enter(self, sock: socket.socket | None, error: type[Exception]) -> None:
        with self._lock:
            if self._cancelled:
                raise error("the attempt was cancelled (a hedge won)")
            self._sock = sock

    def _leave(self) -> None:
        with self._lock:
            self._sock = None


class _Inner(Protocol):
    """The library's own blocking stream (httpcore's or httpcore2's), as wrapped here."""

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes: ...

    def write(self, buffer: bytes, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> Any: ...

    def get_extra_info(self, info: str) -> Any: ...


_local = threading.local()
_armed = [0]
"""How many threads are inside :func:`cancellable` now. While none is (no hedge in flight: the
usual case), a stream's read or write skips the thread-local lookup of its token. Only a
thread's own token stops it, and it counts itself in before setting it, so a zero seen by
another thread never hides a token that thread would have found."""
_armed_lock = forksafe.lock(sys.modules[__name__], "_armed_lock")


def _none_armed() -> None:
    _armed[0] = 0  # a forked child: the parent's hedge workers are not here


forksafe.after_fork(_none_armed)


@contextlib.contextmanager
def cancellable(token: CancelToken) -> Iterator[None]:
    """Sends in this thread, while inside, are stopped by ``token.cancel()``."""
    with _armed_lock:
        _armed[0] += 1
    previous = getattr(_local, "token", None)
    _local.token = token
    try:
        yield
    finally:
        _local.token = previous
        with _armed_lock:
            _armed[0] -= 1


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        # The plain socket's shutdown, also for an SSLSocket: its own would drop the SSL
        # object under the reading thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Stream:
    """httpcore's stream, with reads and writes stoppable by the calling thread's
    :class:`CancelToken`. While no thread of the process is inside :func:`cancellable` (no
    hedge in flight) the cost is one list read per call, else one thread-local lookup. An
    HTTP/2 connection is shared by requests of other threads, so its socket is never shut for
    one of them (its attempt runs on, as before)."""

    __slots__ = ("__weakref__", "_inner", "_network", "_shared", "_sock", "close", "get_extra_info")

    close: Callable[[], None]
    get_extra_info: Callable[[str], Any]

    def __init__(self, network: Network, inner: _Inner) -> None:
        self._network = network
        self._inner = inner
        # The inner stream's own methods, not wrappers: httpcore asks every pooled connection
        # whether it is readable before reusing it, a Python frame saved per request.
        self.close = inner.close
        self.get_extra_info = inner.get_extra_info
        sock = inner.get_extra_info("socket")
        self._sock = sock if isinstance(sock, socket.socket) else None
        ssl_object = inner.get_extra_info("ssl_object")
        self._shared = ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2"

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        token: CancelToken | None = getattr(_local, "token", None) if _armed[0] else None
        if token is None or self._shared:
            return self._inner.read(max_bytes, timeout)
        token._enter(self._sock, self._network.errors.ReadError)
        try:
            return self._inner.read(max_bytes, timeout)
        finally:
            token._leave()

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return None  # h11 hands over empty writes (a GET's body, its end): no I/O to stop
        token: CancelToken | None = getattr(_local, "token", None) if _armed[0] else None
        if token is None or self._shared:
            return self._inner.write(buffer, timeout)
        token._enter(self._sock, self._network.errors.WriteError)
        try:
            return self._inner.write(buffer, timeout)
        finally:
            token._leave()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> _Stream:
        # TLS replaces the socket object: note the new stream too.
        return self._network._note(self._inner.start_tls(ssl_context, server_hostname, timeout))


class Network:
    """httpcore's blocking backend, remembering the streams it opens so that :meth:`shutdown`
    can wake the threads blocked on them. Closing a socket does not wake a thread blocked
    reading it (Linux): a request in flight when the client was closed waited for the Pod's
    answer, however late, then failed on a closed fd. ``shutdown(SHUT_RDWR)`` wakes it now.
    Once shut, no connection is opened (one that finishes connecting is closed at once).

    Its streams (:class:`_Stream`) also let a :class:`CancelToken` stop the one attempt of the
    thread it was set in: the loser of a hedged race.
    """

    def __init__(self, core: ModuleType) -> None:
        self.errors = core
        """The wrapped library (httpcore or httpcore2), whose errors a cancelled attempt raises."""
        self._backend = core.SyncBackend()
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[_Stream] = weakref.WeakSet()
        self._shut = False

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _Stream:
        token: CancelToken | None = getattr(_local, "token", None) if _armed[0] else None
        if self._shut or (token is not None and token.cancelled):
            raise self.errors.ConnectError("the client was closed or the attempt cancelled")
        stream = self._note(
            self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        )
        if token is not None and token.cancelled:  # cancelled while connecting
            stream.close()
            raise self.errors.ConnectError("the attempt was cancelled (a hedge won)")
        return stream

    def _note(self, inner: Any) -> _Stream:
        stream = _Stream(self, inner)
        with self._lock:
            if not self._shut:
                self._streams.add(stream)
                return stream
        inner.close()
        raise self.errors.ConnectError("the client was closed: no new connection is opened")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)

    def shutdown(self) -> None:
        """Shut every stream's socket down (both ways) and open nothing more."""
        with self._lock:
            self._shut = True
            streams = list(self._streams)
        for stream in streams:
            if stream._sock is not None:
                _shut(stream._sock)
