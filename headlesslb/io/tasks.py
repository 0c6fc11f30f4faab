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
import logging
from collections.abc import Awaitable, Callable

import anyio

__all__ = ["Background"]

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
        if _on_trio():
            import trio  # only where trio is already running

            trio.lowlevel.spawn_system_task(self._run, job, work, name=f"headlesslb {name}")
        else:
            task = asyncio.get_running_loop().create_task(
                self._run(job, work), name=f"headlesslb {name}"
            )
            _TASKS.add(task)
            task.add_done_callback(_TASKS.discard)

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
