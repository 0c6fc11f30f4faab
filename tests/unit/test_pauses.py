"""Pauses of background work: when they hand the GIL to other threads, and which threads do.

The hand-over itself (a short sleep) is replaced by a counter: these tests pin the decisions,
not the scheduler.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest

import headlesslb.sync
from headlesslb.io import pauses
from headlesslb.testing import StaticDiscovery


@pytest.fixture
def hand_overs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the threads that handed the GIL over, one entry per hand-over."""
    seen: list[str] = []
    monkeypatch.setattr(pauses, "_hand_over", lambda: seen.append(threading.current_thread().name))
    yield seen


def _in_new_thread(work: Callable[[], object], name: str = "worker") -> None:
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    if failure:
        raise failure[0]


@pytest.mark.parametrize(
    ("hold_at_most", "expected"),
    [
        # A thread that never handed over is due at its first offer; then not for an hour.
        (3600.0, 1),
        # Past its stretch at every offer: it hands over at every one.
        (0.0, 1000),
    ],
)
def test_a_thread_hands_over_once_per_stretch_of_work_however_often_it_offers(
    hand_overs: list[str], monkeypatch: pytest.MonkeyPatch, hold_at_most: float, expected: int
) -> None:
    monkeypatch.setattr(pauses, "_HOLD_AT_MOST", hold_at_most)

    def offer_many() -> None:
        for _ in range(1000):
            pauses.hand_back_gil()

    _in_new_thread(offer_many)
    assert hand_overs == ["worker"] * expected


def test_between_steps_hands_over_only_on_a_thread_that_shares_the_gil_with_request_threads(
    hand_overs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pauses, "_HOLD_AT_MOST", 0.0)

    async def three_steps() -> None:
        for _ in range(3):
            await pauses.between_steps()

    # An application's event loop: its other tasks run between steps; no sleeping on the loop.
    _in_new_thread(lambda: anyio.run(three_steps), name="app loop")
    assert hand_overs == []

    def discovery_thread() -> None:
        pauses.shares_gil_with_request_threads()
        anyio.run(three_steps)

    _in_new_thread(discovery_thread, name="discovery")
    assert hand_overs == ["discovery"] * 3


def test_the_sync_clients_discovery_thread_hands_the_gil_to_request_threads() -> None:
    discovery = StaticDiscovery(["web-0=10.0.0.1:80"])
    transport = headlesslb.sync.HeadlessTransport(
        "web-hl.default",
        discovery=discovery,
        pod_transport=httpx.MockTransport(lambda request: httpx.Response(200)),
    )
    with transport:
        portal = transport._host._portal
        assert portal is not None

        async def marked() -> bool:
            return bool(getattr(pauses._thread, "hands_back", False))

        assert portal.call(marked)
    assert not getattr(pauses._thread, "hands_back", False)  # the caller's thread is not
