"""What only the blocking shell does: the twin of :mod:`headlesslb.aio.host`, under the same
names, which ``tools/unasync.py`` maps the generated shells to.

Discovery and health checks are the async client's own (:class:`~headlesslb.io.runtime.Runtime`),
run on a private event loop in one background thread: once the first resolution is in, no
request ever waits for DNS (a refresh-on-request design would make one request per TTL pay for a
whole DNS round). A transport leases its runtime on its first use: transports whose runtime specs
are equal in one process (``share_discovery=True``) share one on one background thread
(:data:`_RUNTIMES`): one refresher, pool and health checker for all of them. It is counted by its
transports, closable from any thread, and the last one to close stops the thread.

Fork-safe: a transport created, or even used, before ``fork()`` (gunicorn ``--preload``,
multiprocessing) works in the child. The child drops the parent's connections without touching
their sockets, its locks are new, its registry of shared runtimes is empty, and its background
thread is started again on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Future
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import anyio.from_thread

from ..compose import Parts
from ..core import forksafe
from ..core.call import Call, Router, Send
from ..core.pool import Pool
from ..errors import ClientClosed, NotStarted
from ..io import pauses
from ..io.bodies import Address
from ..io.runtime import Runtime
from ..io.shared import Lease, Registry
from .hedging import HedgeRunner
from .pool import LockedPool

__all__ = ["SyncHost"]

T = TypeVar("T")
A = TypeVar("A", bound=tuple[Any, Any])


class _Sender(Protocol):
    def retire(self, keep: set[Address]) -> None: ...

    def reap_on(self, call_soon: Callable[[Callable[[], object]], object]) -> None: ...


_RUNTIMES: Registry[object, _Shared] = Registry()
"""The runtimes sync transports share, by :class:`~headlesslb.io.runtime.RuntimeSpec`, each on
its own thread."""


class SyncHost:
    """A blocking transport's lifecycle and waits: its runtime on a background thread, started
    on ``with`` or on the first request, shared safely by many threads, closable from any."""

    pool_class: type[Pool] = LockedPool
    """The pool a runtime of the blocking shell uses: request threads and the discovery thread
    change it, under one lock."""

    def __init__(self, parts: Parts, sender: _Sender) -> None:
        self._parts = parts
        self._sender = sender
        self._lock = forksafe.lock(self)
        self.state: Literal["new", "open", "closed"] = "new"
        self.open = False
        """Started in this process and not closed: the one check a request makes."""
        self.runtime: Runtime | None = None
        self.router: Router | None = None
        self._closing = threading.Event()
        """Set by :meth:`closing`: wakes every request thread waiting out a back-off."""
        self._waits: set[Future[Any]] = set()
        """What request threads wait for on the discovery thread now (first answer, lookups):
        :meth:`closing` cancels them, so they fail at once rather than when DNS answers."""
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._lease: Lease[_Shared] | None = None
        self._hedging = HedgeRunner()
        self._finalizer: weakref.finalize[..., SyncHost] = weakref.finalize(
            self, _stop_portal, None, None
        )
        forksafe.forget(self, SyncHost._forget)

    @property
    def running(self) -> bool:
        """Whether the background thread runs (started, in this process, not closed)."""
        return self.open

    def enter(self) -> None:
        """``with transport``: starts it (again after ``fork()``) unless it runs already."""
        self.start()

    def start(self) -> None:
        """Lease the runtime and start its thread, once however many threads call it."""
        forksafe.check()
        if self.open:
            return
        with self._lock:
            if self.state == "closed":
                raise NotStarted("this HeadlessTransport was closed: make a new one")
            if self._portal is not None:
                return
            parts, sender = self._parts, self._sender
            spec = parts.spec

            async def retire(keep: set[Address]) -> None:
                sender.retire(keep)  # closing idle sockets: quick, and thread-safe

            if spec.shareable:
                lease, made = _RUNTIMES.acquire(spec, lambda: _Shared(Runtime(spec)), _Shared.alive)
            else:
                lease, made = Lease(_Shared(Runtime(spec))), True
            runtime = lease.value.runtime
            # The sender, not this host: a runtime outliving a transport dropped unclosed must
            # not keep it alive (its finalizer leaves the runtime).
            detach = runtime.attach(parts.events, retire, parts.fallback)
            sender.reap_on(lease.value.cm.call_soon)  # bodies dropped unclosed: released there
            if made:
                lease.value.start()  # once its first client is attached: it misses no event
            self.router = parts.router(runtime)
            self.runtime, self._lease, self._portal = runtime, lease, lease.value.portal
            self._finalizer.detach()
            self._finalizer = weakref.finalize(self, _leave, lease, detach)
            self.state, self.open = "open", True

    def wait(self, func: Callable[..., Awaitable[T]], *args: object) -> T:
        """``func(*args)`` run on the discovery thread, waited for here; :meth:`closing` wakes
        the wait at once with :class:`ClientClosed`."""
        portal = self._portal
        if portal is None:
            raise ClientClosed("the client was closed while this request waited: nothing was sent")
        future = portal.start_task_soon(func, *args)
        with self._lock:
            closed = self.state == "closed"
            if not closed:
                self._waits.add(future)
        try:
            if closed:
                future.cancel()
            return future.result()
        except CancelledError:
            raise ClientClosed(
                "the client was closed while this request waited for DNS: nothing was sent"
            ) from None
        finally:
            with self._lock:
                self._waits.discard(future)

    def pause(self, seconds: float) -> None:
        """A back-off, cut short by a close (the call core then says what follows)."""
        self._closing.wait(seconds)

    def race(self, call: Call, step: Send, send: Callable[[Send], A]) -> A:
        """``send(step)``, and a hedge if the core sends one when ``step.hedge_after`` passes,
        on the hedging threads (:class:`~headlesslb.sync.hedging.HedgeRunner`)."""
        return self._hedging.race(call, step, send)

    def closing(self) -> bool:
        """Begin closing: calls in flight send nothing more, waits fail at once. False when it
        was closed already (nothing to do)."""
        forksafe.check()  # a child's close() must never stop its parent's thread
        with self._lock:
            if self.state == "closed":
                return False
            self.state, self.open = "closed", False
            if self.router is not None:
                self.router.close()
            self._closing.set()
            waits, self._waits = self._waits, set()
            self._portal = self._lease = None
        for future in waits:
            future.cancel()  # the waiting thread wakes now; the task on the loop is cancelled
        return True

    def stop(self) -> None:
        """Stop the hedging threads and leave the runtime (once the sender is closed, so that
        blocked reads have woken); the last transport stops its thread."""
        self._hedging.close()
        self._finalizer()

    def _forget(self) -> None:
        """In a forked child: the parent's runtime and thread, its waits and connections are not
        the child's (the sender, pool, hedging threads and caches forget their own part). The
        first use leases a runtime afresh from the child's empty registry."""
        self._waits = set()  # the parent's threads' waits: nobody waits for them here
        closing, self._closing = self._closing, threading.Event()  # its lock may be held
        if closing.is_set():
            self._closing.set()
        self._portal = self._lease = None
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop_portal, None, None)
        self.open = False
        if self.state == "open":
            self.state = "new"  # started again on the first request


class _PortalThread(AbstractContextManager[anyio.from_thread.BlockingPortal]):
    """The background thread: a private event loop running a ``BlockingPortal``.

    Not anyio's ``start_blocking_portal()``: that is a generator-based context manager, and a
    forked child drops the parent's (its thread does not exist there). A suspended generator
    that is dropped runs its ``finally``, ``portal.call(portal.stop)`` to a loop no thread runs,
    which blocked the child for ever inside the fork hook (every gunicorn ``--preload`` worker
    hung before serving). Dropping this object runs nothing; only ``__exit__`` stops the loop.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> anyio.from_thread.BlockingPortal:
        started: Future[anyio.from_thread.BlockingPortal] = Future()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            async with anyio.from_thread.BlockingPortal() as portal:
                started.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            pauses.shares_gil_with_request_threads()
            try:
                anyio.run(serve)
            except BaseException as exc:
                if not started.done():
                    started.set_exception(exc)

        thread = self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        self._portal = started.result()
        return self._portal

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop soon, from any thread, without waiting for the loop
        (a no-op once it has stopped)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(callback)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        portal, thread = self._portal, self._thread
        self._portal = self._thread = None
        if portal is not None:
            with contextlib.suppress(RuntimeError):  # its loop has stopped already
                portal.call(portal.stop, True)  # cancel what is left: nothing waits on close
        if thread is not None:
            thread.join()


class _Shared:
    """A runtime and the background thread running it: what a transport leases (one it shares,
    or its own). The thread starts at once, so a transport joining it has its loop at once;
    the runtime runs from :meth:`start`."""

    __slots__ = ("cm", "portal", "runtime", "task")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.cm = _PortalThread("headlesslb discovery")
        self.portal = self.cm.__enter__()
        self.task: Future[None] | None = None
        # A refused connection asks for an early DNS round. The pool calls this under its lock,
        # which the discovery thread may be waiting for: hand the wake-up to the loop without
        # waiting for it (portal.start_task_soon waits, and deadlocked both).
        runtime.pool.on_refused = functools.partial(self.cm.call_soon, runtime.refused)

    def start(self) -> None:
        """Run the runtime on the thread (by the transport that made it, once attached)."""
        self.task = self.portal.start_task_soon(self.runtime.run)

    def alive(self) -> bool:
        """Whether its task still runs (one that failed was logged: it is not handed out)."""
        return self.task is None or not self.task.done()


def _leave(lease: Lease[_Shared], detach: Callable[[], None]) -> None:
    """A transport leaves its runtime; the last one (the only one, if private) stops its thread."""
    detach()
    if lease.release():
        _stop_portal(lease.value.cm, lease.value.task)


def _stop_portal(
    cm: AbstractContextManager[anyio.from_thread.BlockingPortal] | None,
    task: Future[None] | None,
) -> None:
    """Cancel the background task and stop its thread (waits for it to end)."""
    if task is not None:
        task.cancel()
    if cm is not None:
        cm.__exit__(None, None, None)
