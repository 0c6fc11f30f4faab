"""The async shell's concurrency primitives, behind the names the generated shells call.

The request path (:mod:`headlesslb.io.sender`, :mod:`headlesslb.aio.transport`) is written
once, async, and rewritten for the blocking shell by ``tools/unasync.py``, which maps this module
to :mod:`headlesslb.sync.concurrency`: the same names, done with threads. Here:

- a sender's lock: none, its state is one event loop's;
- its network backend: httpcore's own (the blocking twin's can shut sockets other threads
  block on);
- forgetting after ``fork()``: nothing, an event loop does not survive one;
- releasing a body dropped unclosed: a task of the loop (closing it awaits);
- time limits and shields: anyio's cancel scopes (a blocking send is bounded by its timeouts).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, TypeVar

import anyio

from .tasks import spawn

__all__ = [
    "deadline_scope",
    "forget",
    "new_lock",
    "new_network",
    "release_later",
    "shielded",
    "shut_network",
    "time_limit",
]

T = TypeVar("T")


class _NoLock:
    """The async sender's lock: none, its state is one event loop's."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_LOCK = _NoLock()


def new_lock(owner: object) -> _NoLock:
    """A sender's lock: none in the async shell (one loop owns it)."""
    return _NO_LOCK


def new_network(core: ModuleType) -> Any:
    """A sender's network backend: the library's own (None)."""
    return None


def shut_network(network: Any) -> None:
    """Nothing to shut: closing the pools closes the async sender's connections, and requests
    in flight are cancelled by their own tasks."""


def forget(owner: T, hook: Callable[[T], None]) -> None:
    """Nothing to forget after ``fork()``: an event loop does not survive one."""


def release_later(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``work`` (closing a body dropped unclosed, which awaits) as a task of the loop: the
    caller is a loop callback, which cannot await."""
    spawn("closing a stream that was not closed", work)


time_limit = anyio.fail_after
"""``with time_limit(seconds):`` raises ``TimeoutError`` when the block takes longer."""

deadline_scope = anyio.move_on_after
"""``with deadline_scope(seconds) as scope:`` stops the block when ``seconds`` pass
(``scope.cancelled_caught`` then)."""


def shielded() -> anyio.CancelScope:
    """``with shielded():`` a close that cancellation must not interrupt."""
    return anyio.CancelScope(shield=True)
