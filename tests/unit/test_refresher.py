"""The refresh loop driven by a scripted discovery (no sockets): single-flight, stale-on-error,
early refresh, survival of unexpected errors."""

from __future__ import annotations

import logging
import random

import anyio
import pytest

from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pool import Pool
from headlesslb.core.schedule import RefreshPolicy
from headlesslb.errors import DiscoveryError
from headlesslb.io.refresher import Refresher

pytestmark = pytest.mark.anyio

FAST = RefreshPolicy(
    min_interval=0.01,
    max_interval=0.05,
    error_backoff=0.01,
    max_error_backoff=0.02,
    early_min_interval=0.0,
)


class Scripted:
    """Answers from a list; an exception in the list is raised; the last item repeats."""

    def __init__(self, *answers: Resolution | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.gate: anyio.Event | None = None
        self.called = anyio.Event()

    async def resolve(self) -> Resolution:
        self.calls += 1
        self.called.set()
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def res(*ips: str) -> Resolution:
    return Resolution(tuple(Endpoint(ip, 80) for ip in ips), ttl=0.01)


async def until(predicate: object, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # type: ignore[operator]
            await anyio.sleep(0.005)


async def test_single_flight_collapses_concurrent_refreshes() -> None:
    discovery = Scripted(res("10.0.0.1"))
    discovery.gate = anyio.Event()
    refresher = Refresher(discovery, Pool(), FAST)
    async with anyio.create_task_group() as tg:
        for _ in range(100):
            tg.start_soon(refresher.refresh)
        await discovery.called.wait()
        await anyio.wait_all_tasks_blocked()  # every caller is now waiting
        discovery.gate.set()
    # The first caller's round, then one more shared by the 99 that arrived while it ran.
    assert discovery.calls == 2
    assert refresher.ready and len(refresher.pool.snapshot.members) == 1


async def test_refresh_never_returns_an_answer_older_than_the_call() -> None:
    discovery = Scripted(res("10.0.0.1"), res("10.0.0.1", "10.0.0.2"))
    discovery.gate = anyio.Event()
    refresher = Refresher(discovery, Pool(), FAST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(refresher.refresh)  # a round already in flight (the old answer)
        await discovery.called.wait()
        results = []

        async def late_caller() -> None:
            results.append(await refresher.refresh())

        tg.start_soon(late_caller)
        await anyio.wait_all_tasks_blocked()
        discovery.gate.set()
    assert results == [(True, 0.01)]
    assert len(refresher.pool.snapshot.members) == 2  # the late caller got the newer answer


async def test_failure_keeps_last_good_set() -> None:
    discovery = Scripted(res("10.0.0.1", "10.0.0.2"), DiscoveryError("down"))
    pool = Pool()
    refresher = Refresher(discovery, pool, FAST)
    assert await refresher.refresh() == (True, 0.01)
    ok, _ = await refresher.refresh()
    assert not ok and isinstance(refresher.last_error, DiscoveryError)
    assert len(pool.snapshot.members) == 2


async def test_loop_follows_dns_and_survives_unexpected_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    discovery = Scripted(res("10.0.0.1"), RuntimeError("bug"), res("10.0.0.1", "10.0.0.2"))
    pool = Pool()
    refresher = Refresher(discovery, pool, FAST, rng=random.Random(0))
    with caplog.at_level(logging.ERROR, logger="headlesslb.refresher"):
        async with anyio.create_task_group() as tg:
            await tg.start(refresher.run)
            await until(lambda: len(pool.snapshot.members) == 2)
            tg.cancel_scope.cancel()
    assert "unexpectedly" in caplog.text


async def test_request_refresh_wakes_the_loop_early() -> None:
    discovery = Scripted(res("10.0.0.1"))
    slow = RefreshPolicy(min_interval=30, max_interval=60, early_min_interval=0)
    refresher = Refresher(discovery, Pool(), slow)
    async with anyio.create_task_group() as tg:
        await tg.start(refresher.run)
        await until(lambda: refresher.rounds == 1)
        refresher.request_refresh()
        await until(lambda: refresher.rounds == 2)
        tg.cancel_scope.cancel()


async def test_request_refresh_is_rate_limited() -> None:
    discovery = Scripted(res("10.0.0.1"))
    policy = RefreshPolicy(min_interval=30, max_interval=60, early_min_interval=60)
    refresher = Refresher(discovery, Pool(), policy)
    async with anyio.create_task_group() as tg:
        await tg.start(refresher.run)
        await until(lambda: refresher.rounds == 1)
        refresher.request_refresh()
        await until(lambda: refresher.rounds == 2)
        for _ in range(5):
            refresher.request_refresh()
        await anyio.wait_all_tasks_blocked()  # a wrongly woken loop would have run a round
        assert refresher.rounds == 2
        tg.cancel_scope.cancel()


async def test_prepare_runs_only_on_membership_change() -> None:
    prepared = []
    discovery = Scripted(res("10.0.0.1"), res("10.0.0.1"), res("10.0.0.1", "10.0.0.2"))
    refresher = Refresher(discovery, Pool(), FAST, prepare=lambda snap: prepared.append(snap))
    for _ in range(3):
        await refresher.refresh()
    assert [len(s.members) for s in prepared] == [1, 2]


async def test_a_loop_starting_on_members_prepares_them_before_its_first_answer() -> None:
    # A forked child's pool holds its parent's members, whose tables the parent may have been
    # building when it forked; the same answer again is no membership change.
    pool = Pool()
    pool.update(res("10.0.0.1", "10.0.0.2"))
    prepared: list[int] = []
    discovery = Scripted(res("10.0.0.1", "10.0.0.2"))
    refresher = Refresher(discovery, pool, FAST, prepare=lambda s: prepared.append(len(s.members)))
    async with anyio.create_task_group() as tg:
        await tg.start(refresher.run)
        await until(lambda: refresher.rounds >= 2)
        tg.cancel_scope.cancel()
    assert prepared == [2]


async def test_wait_ready_is_bounded() -> None:
    discovery = Scripted(res("10.0.0.1"))
    refresher = Refresher(discovery, Pool(), RefreshPolicy(first_resolution_timeout=0.05))
    with anyio.fail_after(2):
        await refresher.wait_ready()  # nobody runs the loop: returns after the timeout
    assert not refresher.ready


async def test_a_partial_round_is_applied_and_retried_on_the_error_back_off() -> None:
    # Some queries of the round failed (AAAA SERVFAIL, say): use what came, ask again soon.
    partial = Resolution((Endpoint("10.0.0.1", 80),), ttl=60, partial=True)
    whole = Resolution((Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)), ttl=60)
    discovery = Scripted(partial, partial, whole)
    policy = RefreshPolicy(
        min_interval=30, max_interval=60, error_backoff=0.01, max_error_backoff=0.02
    )
    applied: list[int] = []
    refresher = Refresher(
        discovery, Pool(), policy, prepare=lambda snap: applied.append(len(snap.members))
    )
    async with anyio.create_task_group() as tg:
        await tg.start(refresher.run)
        await until(lambda: refresher.rounds >= 3)  # the partial rounds did not wait 60 s
        # The empty pool it started with, the partial answer, then the whole one.
        assert applied == [0, 1, 2]
        assert refresher.last_error is None
        await anyio.wait_all_tasks_blocked()
        assert discovery.calls == 3  # a complete answer waits for its TTL again
        tg.cancel_scope.cancel()
