"""The blocking shell's concurrency primitives: the twins of :mod:`headlesslb.io.concurrency`,
under the same names, which ``tools/unasync.py`` maps the generated shells to.

- a sender's lock: a real one, fork-safe (every request thread counts its attempts in and out);
- its network backend: :class:`~headlesslb.sync.network.Network`, whose sockets a close or a
  won hedge can shut down under a blocked thread;
- forgetting after ``fork()``: the child drops the parent's connections unclosed;
- releasing a body dropped unclosed: now, on the runtime's thread that calls it;
- time limits and shields: none needed. A blocking send cannot be cancelled from outside: the
  sender caps each of its timeouts at the attempt's instead, and nothing cancels a close.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from ..core import forksafe
from .network import Network

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


def new_lock(owner: object) -> threading.Lock:
    """A sender's lock, renewed in a forked child."""
    return forksafe.lock(owner)


def new_network(core: ModuleType) -> Any:
    """A sender's network backend over ``core`` (httpcore or httpcore2): sockets another thread
    can shut down. Typed Any: the pools take it duck-typed (it subclasses neither library's
    base)."""
    return Network(core)


def shut_network(network: Network) -> None:
    """Shut every socket of ``network`` down: threads blocked on one wake at once."""
    network.shutdown()


def forget(owner: T, hook: Callable[[T], None]) -> None:
    """Call ``hook(owner)`` in a forked child (see :func:`headlesslb.core.forksafe.forget`)."""
    forksafe.forget(owner, hook)


def release_later(work: Callable[[], None]) -> None:
    """Close a body dropped unclosed now: the caller is the runtime's thread, never the garbage
    collector's context, so closing (which takes httpcore's pool lock) is safe here."""
    with contextlib.suppress(Exception):  # a socket that fails to close is closed anyway
        work()


class _Unbounded:
    """No scope: a blocking block runs to its end (its sends are bounded by their timeouts)."""

    __slots__ = ()

    cancelled_caught = False

    def __enter__(self) -> _Unbounded:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


_UNBOUNDED = _Unbounded()


def time_limit(seconds: float) -> _Unbounded:
    """No limit on a blocking attempt beyond its own timeouts, which the sender caps."""
    return _UNBOUNDED


def deadline_scope(seconds: float) -> _Unbounded:
    """No scope over a blocking request: the call core gives each attempt at most the time left
    before the deadline, and the sender caps its timeouts at that."""
    return _UNBOUNDED


def shielded() -> _Unbounded:
    """Nothing to shield: nothing cancels a blocking close."""
    return _UNBOUNDED
