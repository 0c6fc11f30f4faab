"""Locks that a forked child gets afresh.

``fork()`` copies a lock in whatever state it is in. One held by another thread of the parent
(a request thread counting an attempt, the discovery thread building a hash table, a hedge
worker) stays held for ever in the child, where that thread does not exist, and the child's
first user blocks for good: a gunicorn ``--preload`` worker that never serves. Every lock such
a thread may hold is made here, with its owner and attribute: in a forked child, before any of
its own code runs, each is replaced by a new one. Owners are held weakly.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

__all__ = ["after_fork", "lock", "rlock"]

L = TypeVar("L")

_OWNERS: weakref.WeakKeyDictionary[object, dict[str, Callable[[], object]]] = (
    weakref.WeakKeyDictionary()
)
_HOOKS: list[Callable[[], None]] = []
_GUARD = threading.Lock()  # itself renewed in the child before anything else is


def _new(owner: object, attribute: str, factory: Callable[[], L]) -> L:
    with _GUARD:
        _OWNERS.setdefault(owner, {})[attribute] = factory
    return factory()


def lock(owner: object, attribute: str = "_lock") -> threading.Lock:
    """A new ``threading.Lock`` for ``owner.<attribute>``, replaced there in a forked child."""
    return _new(owner, attribute, threading.Lock)


def rlock(owner: object, attribute: str = "_lock") -> threading.RLock:
    """A new ``threading.RLock`` for ``owner.<attribute>``, replaced there in a forked child."""
    return _new(owner, attribute, threading.RLock)


def after_fork(hook: Callable[[], None]) -> None:
    """Run ``hook()`` in a forked child, after its locks are new (module-level state only:
    the hook is held for the life of the process)."""
    _HOOKS.append(hook)


def _renew_in_child() -> None:
    global _GUARD
    _GUARD = threading.Lock()
    for owner, attributes in list(_OWNERS.items()):
        for attribute, factory in attributes.items():
            setattr(owner, attribute, factory())
    for hook in _HOOKS:
        hook()


os.register_at_fork(after_in_child=_renew_in_child)
