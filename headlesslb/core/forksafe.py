"""What a forked child forgets of its parent, registered next to the state it concerns.

``fork()`` copies a process with one thread. A lock another thread of the parent held (a request
thread counting an attempt, the discovery thread building a hash table, a hedge worker) stays held
for ever in the child, where that thread does not exist, and the child's first user blocks for
good: a gunicorn ``--preload`` worker that never serves. Connections, event loops and threads the
parent started are not the child's either. So every object that holds such state registers here,
where it makes it, what the child must do instead:

- :func:`lock` / :func:`rlock`: a lock, replaced by a new one in the child;
- :func:`forget`: a method the child calls on the object (drop the parent's connections unclosed,
  forget its threads, empty a registry);
- :func:`after_fork`: the same for module-level state.

This module alone hooks ``os.fork`` and runs them, locks first, before any of the child's own code
runs; :func:`check` runs them too in a child forked without the hook. Owners are held weakly and
compare by identity.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["after_fork", "check", "forget", "lock", "rlock"]

L = TypeVar("L")
Owner = TypeVar("Owner")

log = logging.getLogger("headlesslb.fork")

_OWNERS: weakref.WeakKeyDictionary[object, dict[str, Callable[[], object]]] = (
    weakref.WeakKeyDictionary()
)
_FORGETS: weakref.WeakKeyDictionary[object, dict[Callable[[Any], None], None]] = (
    weakref.WeakKeyDictionary()
)
_HOOKS: list[Callable[[], None]] = []
_GUARD = threading.Lock()  # itself renewed in the child before anything else is
_pid = os.getpid()
"""The process the registrations were last renewed for."""


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


def forget(owner: Owner, hook: Callable[[Owner], None]) -> None:
    """Call ``hook(owner)`` in a forked child, after its locks are new, while ``owner`` lives
    (``hook`` is a plain function, such as ``Type._forget``: a bound method would keep the
    owner alive). Registering the same hook twice runs it once."""
    with _GUARD:
        _FORGETS.setdefault(owner, {})[hook] = None


def after_fork(hook: Callable[[], None]) -> None:
    """Run ``hook()`` in a forked child, after its locks are new (module-level state only:
    the hook is held for the life of the process)."""
    _HOOKS.append(hook)


def check() -> None:
    """Forget the parent now if this process is a child forked without the at-fork hook (a fork
    ``os.fork`` did not make); otherwise nothing. Called where a stale parent's state would hang
    or leak: starting background work, and the registries of shared things."""
    if _pid != os.getpid():
        _renew_in_child()


def _renew_in_child() -> None:
    global _GUARD, _pid
    _GUARD = threading.Lock()
    _pid = os.getpid()
    for owner, attributes in list(_OWNERS.items()):
        for attribute, factory in attributes.items():
            setattr(owner, attribute, factory())
    for hook in _HOOKS:
        _run(hook)
    for owner, hooks in list(_FORGETS.items()):
        for forget_hook in hooks:
            _run(forget_hook, owner)


def _run(hook: Callable[..., None], *args: object) -> None:
    try:
        hook(*args)
    except Exception:  # one object's failure never leaves the others holding the parent's state
        log.exception("headlesslb: forgetting the parent's state after fork() failed (%r)", hook)


os.register_at_fork(after_in_child=_renew_in_child)
