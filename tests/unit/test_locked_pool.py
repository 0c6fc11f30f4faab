"""The sync client's pool: every change under its lock, with the races forced, not hoped for."""

from __future__ import annotations

import ast
import inspect
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import headlesslb
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pool import Pool
from headlesslb.core.snapshot import EndpointState
from headlesslb.core.subset import ClientPlace, Subsetter
from headlesslb.sync.pool import LOCK_FREE_READS, LockedPool

WAIT = 5.0
"""Seconds an event of these tests may take to come; only reached when a test fails."""


def _source_tree(function: Callable[..., Any]) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


def _function(value: object) -> Callable[..., Any]:
    function = value.fget if isinstance(value, property) else value
    assert callable(function)
    return function


def _entry_points() -> set[str]:
    """What code outside Pool may call on a pool: its public methods and properties, and any
    private method the package calls on a pool that is not ``self`` (``Attempt.done`` calls
    ``_finish``)."""
    members = vars(Pool)
    public = {
        name
        for name, value in members.items()
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))
    }
    package = Path(headlesslb.__file__).parent
    reached = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and inspect.isfunction(members.get(node.attr))
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")
            ):
                reached.add(node.attr)
    return public | reached


def _takes_the_lock(name: str) -> bool:
    override = vars(LockedPool).get(name)
    if override is None:
        return False
    body = _source_tree(_function(override)).body
    return (
        len(body) == 1
        and isinstance(body[0], ast.With)
        and ast.unparse(body[0].items[0].context_expr) == "self._lock"
    )


def _changes_nothing_unlocked(name: str, locked: set[str]) -> list[str]:
    """What the read ``name`` does that a lock-free read must not: store or delete an attribute
    or an item, or call a method of the pool that neither takes the lock nor is such a read."""
    found = []
    for node in ast.walk(_source_tree(_function(vars(Pool)[name]))):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Attribute | ast.Subscript) for t in targets) or (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
            and inspect.isfunction(vars(Pool).get(node.func.attr))
            and node.func.attr not in locked | LOCK_FREE_READS
        ):
            found.append(ast.unparse(node))
    return found


def test_every_entry_point_of_the_pool_takes_the_lock_or_only_reads() -> None:
    entries = _entry_points()
    assert {"update", "begin", "_finish", "hold_off", "tick"} <= entries  # the scan finds them
    assert entries >= LOCK_FREE_READS, "a lock-free read the pool no longer has"
    locked = {name for name in entries if _takes_the_lock(name)}
    unguarded = entries - locked - LOCK_FREE_READS
    assert not unguarded, (
        f"Pool entry points neither locked by LockedPool nor listed as lock-free reads:"
        f" {sorted(unguarded)}; a change the sync client's threads make unlocked can publish a"
        " stale snapshot or lose a count"
    )
    for name in LOCK_FREE_READS:
        assert not _changes_nothing_unlocked(name, locked), name


# -- a hold-off racing a membership update -------------------------------------------------------
class _PausingSubsetter(Subsetter):
    """A subset as big as the Service, whose ``core`` (called inside the pool's snapshot rebuild,
    after the members were read) waits once, when armed, until the test lets it go on."""

    __slots__ = ("armed", "paused", "resume")

    def __init__(self) -> None:
        super().__init__(100, ClientPlace(0.0, "ordinal", "index 0"))
        self.armed = False
        self.paused = threading.Event()
        self.resume = threading.Event()

    def core(self, members: tuple[EndpointState, ...]) -> tuple[EndpointState, ...]:
        if self.armed:
            self.armed = False
            self.paused.set()
            assert self.resume.wait(WAIT)
        return super().core(members)


class _TellingLock:
    """The pool's lock, saying (``blocked``) when a thread has to wait for it."""

    def __init__(self, blocked: threading.Event) -> None:
        self._inner = threading.RLock()
        self._blocked = blocked

    def __enter__(self) -> None:
        if not self._inner.acquire(blocking=False):
            self._blocked.set()
            self._inner.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._inner.release()


def _pods(*numbers: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.0.0.{n}", 80) for n in numbers)


def _run(target: Callable[[], object], done: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        target()
        if done is not None:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_hold_off_racing_an_update_never_publishes_the_departed_pods() -> None:
    # A request thread holds a Pod off (429) while the discovery thread replaces every Pod.
    # The hold-off's rebuild is paused after it read the old members; the update then either
    # waits for the lock (the fix) or, unlocked, finishes first and is overwritten by a snapshot
    # of Pods that left, which stay eligible and, no longer members, cannot be ejected.
    subset = _PausingSubsetter()
    pool = LockedPool(clock=ManualClock(), subset=subset)
    pool.update(Resolution(_pods(1, 2, 3), ttl=5))
    update_went_on = threading.Event()  # the update blocked on the lock, or it finished
    pool._lock = _TellingLock(update_went_on)  # type: ignore[assignment]
    held = pool.snapshot.members[0]

    subset.armed = True
    holding = _run(lambda: pool.hold_off(held, 5.0))
    assert subset.paused.wait(WAIT)
    updating = _run(lambda: pool.update(Resolution(_pods(4, 5, 6), ttl=5)), update_went_on)
    assert update_went_on.wait(WAIT)
    subset.resume.set()
    holding.join(WAIT)
    updating.join(WAIT)
    assert not holding.is_alive() and not updating.is_alive()

    new = {e.key for e in _pods(4, 5, 6)}
    assert {s.key for s in pool.snapshot.members} == new
    assert {s.key for s in pool.snapshot.eligible} == new
