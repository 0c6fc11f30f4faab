"""Locks a thread of the parent holds at fork() are new in the child (``core/forksafe.py``).

A lock copied while held stays held for ever in a forked child, whose first user then blocks
for good. The child here tries each lock with a timeout and exits, so a regression fails the
test instead of hanging it; the parent kills a child that outlives its deadline.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prometheus_client import CollectorRegistry

import headlesslb.sync.network as sync_network
import headlesslb.telemetry.otel as otel
from headlesslb.core import forksafe
from headlesslb.core.balancer import Balancer
from headlesslb.core.events import EventHub
from headlesslb.core.hedge import LatencyEstimator
from headlesslb.core.pickers import RoundRobin
from headlesslb.core.pool import Pool
from headlesslb.io.shared import Registry
from headlesslb.sync.hedging import HedgeRunner
from headlesslb.sync.pool import LockedPool
from headlesslb.sync.sender import PodSender
from headlesslb.telemetry.otel import OpenTelemetryObserver
from headlesslb.telemetry.prometheus import PrometheusMetrics

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


class _Owner:
    def __init__(self) -> None:
        self._lock = forksafe.lock(self)
        self.reentrant = forksafe.rlock(self, "reentrant")


@contextmanager
def _held(locks: list[tuple[object, str]]) -> Iterator[None]:
    """Another thread holds every lock until the block ends."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        acquired = [getattr(owner, name) for owner, name in locks]
        for lock in acquired:
            lock.acquire()
        taken.set()
        done.wait(30)
        for lock in acquired:
            lock.release()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def _child_can_take(locks: list[tuple[object, str]]) -> list[str]:
    """Fork; in the child, try every lock for 2 s. The names of those the child could not take."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        try:
            stuck = [
                f"{type(owner).__name__}.{name}"
                for owner, name in locks
                if not getattr(owner, name).acquire(timeout=2)
            ]
            os.write(write, ",".join(stuck).encode() or b"-")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 20
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    answer = os.read(read, 4096).decode()
    os.close(read)
    return [] if answer == "-" else answer.split(",")


def test_forksafe_locks_are_new_in_a_forked_child() -> None:
    owner = _Owner()
    locks: list[tuple[object, str]] = [(owner, "_lock"), (owner, "reentrant")]
    with _held(locks):
        assert _child_can_take(locks) == []


def test_the_library_locks_request_threads_hold_are_new_in_a_forked_child() -> None:
    # Each is held by request threads (events, learned hedge delays, metrics, spans, hedge
    # workers) for a moment at a time: a fork in that moment left the child's first request
    # blocked for good.
    locks: list[tuple[object, str]] = [
        (EventHub("web-hl"), "_lock"),
        (LatencyEstimator(), "_lock"),
        (Balancer(Pool(), RoundRobin()), "_lock"),  # held by the discovery thread for a build
        (_AllEqual(), "_lock"),
        (_AllEqual(), "_lock"),  # an equal one: owners are told apart by identity
        (PrometheusMetrics(registry=CollectorRegistry()), "_lock"),
        (OpenTelemetryObserver(), "_lock"),
        (sys.modules[otel.__name__], "_default_lock"),
        (sys.modules[sync_network.__name__], "_armed_lock"),
        (PodSender(), "_lock"),
        (HedgeRunner(), "_lock"),
        (LockedPool(), "_lock"),
        (Registry(), "_lock"),
    ]
    with _held(locks):
        assert _child_can_take(locks) == []


class _AllEqual:
    """An owner whose ``==`` says every one is the same (frozen values do so by their fields)."""

    def __init__(self) -> None:
        self._lock = forksafe.lock(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _AllEqual)

    def __hash__(self) -> int:
        return 0


class _Forgetful:
    def __init__(self) -> None:
        self.inherited = ["the parent's connection"]
        forksafe.forget(self, _Forgetful._forget)
        forksafe.forget(self, _Forgetful._forget)  # registered twice, run once

    def _forget(self) -> None:
        assert self.inherited, "forgotten twice"
        self.inherited = []


def test_owners_forget_in_a_forked_child_and_are_held_weakly() -> None:
    owner = _Forgetful()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        try:
            os.write(write, b"forgot" if owner.inherited == [] else b"kept")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read, 64)
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0 and answer == b"forgot"
    assert owner.inherited  # the parent keeps its own
    gone = weakref.ref(_Forgetful())
    gc.collect()
    assert gone() is None
