"""What only the async shell does, behind the interface the generated shells call.

The request path (:mod:`headlesslb.aio.transport`, :mod:`headlesslb.io.sender`) is written once,
async, and rewritten for the blocking shell by ``tools/unasync.py``. What cannot be rewritten
token by token lives here, with a blocking twin of the same names in :mod:`headlesslb.sync.host`:

- :class:`AsyncHost`: the transport's lifecycle (its runtime leased on its event loop, started
  on entry or on the first request), the waits that :meth:`AsyncHost.closing` cuts short, and
  hedged races (a task group; the blocking twin runs threads);
- and, in :mod:`headlesslb.io.concurrency`, the primitives the sender and the request path
  use: time limits, shields, a sender's lock and network backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar

import anyio

from ..compose import Parts
from ..core.call import HEDGE_DUE, Call, Router, Send, Settled
from ..core.pool import Pool
from ..errors import ClientClosed, NotStarted
from ..io.bodies import Address
from ..io.runtime import Runtime
from ..io.shared import Lease, Registry, loop_identity
from ..io.tasks import Background, scheduler

__all__ = ["AsyncHost"]

T = TypeVar("T")
A = TypeVar("A", bound=tuple[Any, Any])
"""An attempt's answer: a response (closed when it loses a race) and its verdict."""


class _Sender(Protocol):
    async def retire(self, keep: set[Address]) -> None: ...

    def reap_on(self, call_soon: Callable[[Callable[[], object]], object]) -> None: ...


_RUNTIMES: Registry[tuple[object, object], _Running] = Registry()
"""The runtimes async transports share, by (event loop, :class:`~headlesslb.io.runtime.
RuntimeSpec`)."""


class AsyncHost:
    """An async transport's lifecycle and waits. It starts when the transport is entered, or
    else on its first request (an SDK's client is never entered): it leases its runtime then,
    and transports whose runtime specs are equal on one event loop share one
    (``share_discovery=True``), which belongs to the loop, not to the first transport's task;
    the last transport to close stops it."""

    pool_class: type[Pool] = Pool
    """The pool an async runtime uses: one event loop changes it, so no lock."""

    def __init__(self, parts: Parts, sender: _Sender) -> None:
        self._parts = parts
        self._sender = sender
        self.state: Literal["new", "open", "closed"] = "new"
        self.open = False
        """Started and not closed: the one check a request makes."""
        self.runtime: Runtime | None = None
        self.router: Router | None = None
        self._entered = False
        self._lease: Lease[_Running] | None = None
        self._detach: Callable[[], None] | None = None
        self._waiters: set[anyio.CancelScope] = set()
        """Requests waiting now for DNS (first answer, lookups) or a back-off: :meth:`closing`
        cancels them, so they fail at once rather than when the wait would have ended."""

    @property
    def running(self) -> bool:
        """Whether the transport was started (entered, or by a request) and not closed."""
        return self.open

    def enter(self) -> None:
        """``async with transport``: once, and not after close; starts it unless a request did."""
        if self._entered or self.state == "closed":
            raise NotStarted("a HeadlessTransport can be entered once; make a new one")
        self._entered = True
        if self.state == "new":
            self.start()

    def start(self) -> None:
        """Lease the runtime and start it on the running loop. Nothing here awaits, so of the
        requests arriving together at a new transport exactly one starts it."""
        if self.state == "closed":
            raise NotStarted("this HeadlessTransport was closed: make a new one")
        if self.open:
            return
        parts = self._parts
        spec = parts.spec
        if spec.shareable:
            lease, made = _RUNTIMES.acquire(
                (loop_identity(), spec), lambda: _Running(Runtime(spec)), _Running.alive
            )
        else:
            lease, made = Lease(_Running(Runtime(spec))), True
        self._lease = lease
        runtime = self.runtime = lease.value.runtime
        self.router = parts.router(runtime)
        self._detach = runtime.attach(parts.events, self._sender.retire, parts.fallback)
        self._sender.reap_on(scheduler())  # bodies dropped unclosed: released on this loop
        self.state, self.open = "open", True
        if made:
            # The loop's task, not this one's: closing this transport leaves the others working.
            lease.value.background.spawn("discovery and health checks", runtime.run)

    async def wait(self, func: Callable[..., Awaitable[T]], *args: object) -> T:
        """``await func(*args)`` (a wait on the runtime), unless :meth:`closing` ends it first:
        then :class:`ClientClosed`."""
        scope = anyio.CancelScope()
        self._waiters.add(scope)
        try:
            with scope:
                if self.state == "closed":
                    scope.cancel()
                return await func(*args)
        finally:
            self._waiters.discard(scope)
        raise ClientClosed("the client was closed while this request waited: nothing was sent")

    async def pause(self, seconds: float) -> None:
        """A back-off, cut short by a close (the call core then says what follows: a close,
        nothing is sent)."""
        with contextlib.suppress(ClientClosed):
            await self.wait(anyio.sleep, seconds)

    async def race(self, call: Call, step: Send, send: Callable[[Send], Awaitable[A]]) -> A:
        """``send(step)``, and a hedge to another Pod if the core sends one when
        ``step.hedge_after`` passes (``HEDGE_DUE``): the first to finish wins, the other is
        cancelled (httpcore closes a connection whose exchange was cancelled, so it is never
        reused half-read) and the core records it (``Settled``)."""
        assert step.hedge_after is not None
        first: list[tuple[Send, A | Exception]] = []
        hedge: Send | None = None  # stays None when the first finishes within the delay

        async def run(attempt: Send) -> None:
            try:
                result: A | Exception = await send(attempt)
            except Exception as exc:  # raised as itself below, never as an ExceptionGroup
                result = exc
            if first:  # both finished at once: this one lost, its answer is dropped
                if not isinstance(result, Exception):
                    response, _ = result
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
                return
            first.append((attempt, result))
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(run, step)
            await anyio.sleep(step.hedge_after)
            hedge = None if first else call.feed(HEDGE_DUE)
            if hedge is not None:
                group.start_soon(run, hedge)
            await anyio.sleep_forever()  # until the first to finish cancels the group
        winner, result = first[0]
        if hedge is not None:
            call.feed(Settled(winner))
        if isinstance(result, Exception):
            raise result
        return result

    def closing(self) -> bool:
        """Begin closing: calls in flight send nothing more, waits fail at once. False when it
        was closed already (nothing to do)."""
        if self.state == "closed":
            return False
        self.state, self.open = "closed", False
        if self.router is not None:
            self.router.close()
        for scope in self._waiters:
            scope.cancel()  # each raises ClientClosed in its own task
        return True

    async def stop(self) -> None:
        """Leave the runtime (once the sender is closed); the last transport stops it."""
        lease, self._lease = self._lease, None
        if lease is not None:
            if self._detach is not None:
                self._detach()
            if lease.release():
                await lease.value.background.aclose()


class _Running:
    """A runtime and the loop's background task running it: what a transport leases."""

    __slots__ = ("background", "runtime")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.background = Background()

    def alive(self) -> bool:
        """Whether its task still runs (one that failed was logged: it is not handed out)."""
        return self.background.running > 0
