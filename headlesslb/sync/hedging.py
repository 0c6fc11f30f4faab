"""The sync shell's half of hedging: run a request's attempts on a small client-owned pool of
threads, take the first to finish, drop the other.

Each attempt runs under its own :class:`~headlesslb.sync.network.CancelToken`. Once the winner is
known, the call core records the loser (its pool ``Attempt`` ends once, as a timeout for a
beaten first attempt and as cancelled for a beaten hedge; the Pod's in-flight count drops at
once), then the loser's token is cancelled: the sender shuts down the socket its worker is
blocked on, so the worker returns at once with a transport error that is dropped here (never
the caller's), and httpcore closes that connection rather than returning it half-read to the
pool. A response the loser got in time is closed unread, which closes its
connection too. Two cases still run on until their answer or per-try timeout: an attempt on an
HTTP/2 connection (shared with other requests, so never shut for one) and one sent through a
``pod_transport=`` (no socket of ours).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..core import forksafe
from ..core.call import HEDGE_DUE, Call, Send, Settled
from ..errors import ClientClosed
from .network import CancelToken, cancellable

__all__ = ["HedgeRunner"]

_WORKERS = 32
"""Attempts racing at once across the client; more wait for a worker."""

A = TypeVar("A", bound=tuple[Any, Any])
"""An attempt's answer: a response (closed unread when it loses) and its verdict."""


class HedgeRunner:
    """A client's hedging threads: started on first use, shut down on close, new after fork."""

    def __init__(self) -> None:
        self._lock = forksafe.lock(self)
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        forksafe.forget(self, HedgeRunner._forget)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise ClientClosed("the client was closed: nothing more is sent")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(_WORKERS, "headlesslb-hedge")
            return self._executor

    def race(self, call: Call, step: Send, send: Callable[[Send], A]) -> A:
        """``step``, and a hedge if the core sends one when ``step.hedge_after`` passes
        (``HEDGE_DUE``); the first to finish wins (its response and verdict, or its transport
        error raised), and the core, told which (``Settled``), records the other."""
        assert step.hedge_after is not None
        executor = self._pool()
        results: queue.SimpleQueue[tuple[Send, A | BaseException]] = queue.SimpleQueue()
        lock = threading.Lock()
        settled = False
        tokens: list[tuple[Send, CancelToken]] = []

        def run(attempt: Send, token: CancelToken) -> None:
            try:
                with cancellable(token):
                    result: A | BaseException = send(attempt)
            except BaseException as exc:  # handed to the waiting thread, never lost
                result = exc
            with lock:
                if not settled:
                    results.put((attempt, result))
                    return
            _drop(result)

        def submit(attempt: Send) -> None:
            token = CancelToken()
            tokens.append((attempt, token))
            executor.submit(run, attempt, token)

        submit(step)
        hedge: Send | None = None
        try:
            try:
                winner, result = results.get(timeout=step.hedge_after)
            except queue.Empty:
                hedge = call.feed(HEDGE_DUE)
                if hedge is not None:
                    # Closed meanwhile (the executor refuses): the first attempt fails at once.
                    with contextlib.suppress(RuntimeError):
                        submit(hedge)
                winner, result = results.get()
        finally:
            with lock:
                settled = True
            while not results.empty():  # both finished at once: the later one is dropped
                _drop(results.get_nowait()[1])
        if hedge is not None:
            call.feed(Settled(winner))  # the loser is recorded before it is stopped
        for attempt, token in tokens:
            if attempt is not winner:
                token.cancel()
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        """Stop taking attempts; workers finish what they run (the sender is closed too: its
        sockets are shut down, so that is quick) and exit."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def _forget(self) -> None:
        """In a forked child: the parent's threads do not exist here; start afresh."""
        self._executor = None


def _drop(result: tuple[Any, Any] | BaseException) -> None:
    if not isinstance(result, BaseException):
        response, _ = result
        response.close()  # unread: its connection is closed, not reused half-read
