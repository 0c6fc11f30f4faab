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
told apart by identity, never by ``==``: two equal owners (two ``ConsistentHash()``) each keep
their own registrations.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["after_fork", "check", "forget", "lock", "rlock"]

L = TypeVar("L")
Owner = TypeVar("Owner")

log = logging.getLogger("headlesslb.fork")


@dataclass(slots=True, eq=False)
class _Owned:
    """One owner's registrations: its locks by attribute, the hooks that forget its state."""

    ref: weakref.ref[Any]
    locks: dict[str, Callable[[], object]] = field(default_factory=dict)
    forgets: dict[Callable[[Any], None], None] = field(default_factory=dict)


_OWNERS: dict[int, _Owned] = {}
"""By ``id(owner)``: an entry leaves as its owner is freed, before the id can be reused."""
_HOOKS: list[Callable[[], None]] = []
_GUARD = threading.Lock()  # itself renewed in the child before anything else is
_pid = os.getpid()
"""The process the registrations were last renewed for."""


def _owned(owner: object) -> _Owned:
    """``owner``'s registrations, made on first use (under ``_GUARD``)."""
    key = id(owner)
    owned = _OWNERS.get(key)
    if owned is None or owned.ref() is not owner:
        owned = _OWNERS[key] = _Owned(weakref.ref(owner, functools.partial(_freed, key)))
    return owned


def _freed(key: int, ref: weakref.ref[Any]) -> None:
    # No lock: the collector may call this in any thread, even one holding _GUARD.
    owned = _OWNERS.get(key)
    if owned is not None and owned.ref is ref:
        _OWNERS.pop(key, None)


def _new(owner: object, attribute: str, factory: Callable[[], L]) -> L:
    with _GUARD:
        _owned(owner).locks[attribute] = factory
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
        _owned(owner).forgets[hook] = None


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
    owners = [(owned.ref(), owned) for owned in list(_OWNERS.values())]
    for owner, owned in owners:
        if owner is not None:
            for attribute, factory in owned.locks.items():
                setattr(owner, attribute, factory())
    for hook in _HOOKS:
        _run(hook)
    for owner, owned in owners:
        if owner is not None:
            for forget_hook in owned.forgets:
                _run(forget_hook, owner)


def _run(hook: Callable[..., None], *args: object) -> None:
    try:
        hook(*args)
    except Exception:  # one object's failure never leaves the others holding the parent's state
        log.exception("headlesslb: forgetting the parent's state after fork() failed (%r)", hook)


os.register_at_fork(after_in_child=_renew_in_child)
