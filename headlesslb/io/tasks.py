"""Background work of one client (discovery, health checks), owned by the client, not by a task.

A client may be opened lazily in one request's task and closed in a shutdown hook running in
another (Django ASGI, module-level clients). A task group would tie the background loops to the
task that opened the client: closing from elsewhere would corrupt that task's cancel scopes, and a
task that ends with the group still open breaks the event loop (trio). So the loops run as tasks of
the event loop itself — an asyncio task, or a trio *system* task — each inside its own cancel
scope, and :meth:`Background.aclose` cancels them and waits for them to end from any task of the
same event loop. Nothing outlives the client: closing it ends them all, and an error inside one is
logged, never lost.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio

__all__ = ["Background", "scheduler", "spawn"]

log = logging.getLogger("headlesslb.background")

_TASKS: set[asyncio.Task[None]] = set()
"""Strong references to the asyncio tasks of every client (the loop keeps only weak ones)."""


class _Job:
    __slots__ = ("done", "name", "scope")

    def __init__(self, name: str) -> None:
        self.name = name
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()


def _on_trio() -> bool:
    """Whether trio runs the current task: anyio runs on asyncio or trio, and only asyncio has
    a running asyncio loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return True
    return False


def spawn(name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``work()`` as a task of the running event loop itself (an asyncio task, or a trio
    system task), not of the caller's task: callable from a plain callback on the loop too. An
    exception escaping ``work`` must not reach the loop (trio ends the whole run for a system
    task's): wrap it, as :class:`Background` does."""
    if _on_trio():
        import trio  # only where trio is already running

        trio.lowlevel.spawn_system_task(work, name=f"headlesslb {name}")
    else:
        task = asyncio.get_running_loop().create_task(work(), name=f"headlesslb {name}")
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)


def scheduler() -> Callable[[Callable[[], object]], object]:
    """The running event loop's way to run a callback on it soon, callable later from any
    thread, and from a garbage-collector callback: asyncio's ``call_soon_threadsafe`` (asyncio's
    own finalizer hook for async generators calls it from the garbage collector) or trio's
    ``TrioToken.run_sync_soon`` (documented safe even from signal handlers). It raises
    ``RuntimeError`` once the loop is closed or trio's run is over. A callback runs on the loop
    but in no task: it must not raise."""
    if _on_trio():
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    return asyncio.get_running_loop().call_soon_threadsafe


class Background:
    """Loops started with :meth:`spawn` and stopped together by :meth:`aclose`, from any task."""

    def __init__(self) -> None:
        self._jobs: set[_Job] = set()
        self._closed = False

    def spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work()`` in the background until it returns or :meth:`aclose` is called.

        An exception escaping ``work`` is logged with its traceback: background work never dies
        silently, and never takes the user's own tasks down with it.
        """
        if self._closed:
            raise RuntimeError("background work was already stopped")
        job = _Job(name)
        self._jobs.add(job)
        spawn(name, functools.partial(self._run, job, work))

    async def _run(self, job: _Job, work: Callable[[], Awaitable[None]]) -> None:
        try:
            with job.scope:
                await work()
        except Exception:
            log.exception("headlesslb background task %r failed", job.name)
        finally:
            self._jobs.discard(job)
            job.done.set()

    @property
    def running(self) -> int:
        """How many background tasks are running."""
        return len(self._jobs)

    async def aclose(self) -> None:
        """Cancel every task and wait until each has ended (safe from any task, and twice)."""
        self._closed = True
        jobs = list(self._jobs)
        for job in jobs:
            job.scope.cancel()
        with anyio.CancelScope(shield=True):
            for job in jobs:
                await job.done.wait()
