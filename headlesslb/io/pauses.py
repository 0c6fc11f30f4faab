"""Pauses inside long background work, so that it never holds the event loop or the GIL for long.

Discovery reads a big DNS answer and applies it in steps, and builds hash tables in a worker
thread; between two steps it pauses. On an event loop a checkpoint is pause enough: the loop
runs its other tasks. Against other *threads* it is not. Releasing the GIL and taking it
straight back (what ``time.sleep(0)`` or a loop's non-blocking poll does) wakes a waiting thread
only to win the GIL again before that thread gets it; the waiter then waits out the whole switch
interval (``sys.getswitchinterval()``, 5 ms), and does so again at the next release, so a refresh
of a few milliseconds of CPU in short steps still held the GIL against request threads for all
of them. A pause that sleeps a moment hands the GIL over; one every half millisecond of work
bounds how long a waiting thread waits, without sleeping at every offer to pause.
"""

from __future__ import annotations

import math
import threading
import time

import anyio.lowlevel

__all__ = ["between_steps", "hand_back_gil", "shares_gil_with_request_threads"]

_HOLD_AT_MOST = 0.0005
"""Seconds of work a thread does between two hand-overs, however often it offers to pause."""
_HAND_OVER = 0.0002
"""Seconds a hand-over sleeps. A waiting thread must wake up and take the GIL meanwhile: on a
virtual machine, waking an idle CPU takes tens of microseconds, so 0.1 ms lost the race now and
then, and the waiter waited for the next pause."""

_thread = threading.local()


def hand_back_gil() -> None:
    """Let other threads run for a moment if this thread has worked for half a millisecond since
    it last did (cheap to call often: the pause of a table build in a worker thread)."""
    if time.perf_counter() - getattr(_thread, "since", -math.inf) >= _HOLD_AT_MOST:
        _hand_over()
        _thread.since = time.perf_counter()


def _hand_over() -> None:
    time.sleep(_HAND_OVER)


def shares_gil_with_request_threads() -> None:
    """Mark the calling thread: its event loop does background work while request threads run
    (the sync client's discovery thread), so :func:`between_steps` hands them the GIL."""
    _thread.hands_back = True


async def between_steps() -> None:
    """Between two steps of background work on an event loop: the loop's other tasks run, and on
    a thread marked by :func:`shares_gil_with_request_threads` request threads get the GIL too."""
    if getattr(_thread, "hands_back", False):
        hand_back_gil()
    await anyio.lowlevel.checkpoint()
