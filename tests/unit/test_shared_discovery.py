"""Shared DNS answers (headlesslb.io.shared) with a scripted inner discovery and a manual clock:
reuse while the TTL lasts, single-flight, failures shared and never kept, refcounts, keys per
loop, the fork reset, and which discovery a runtime composed from a client's options uses."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, cast

import anyio
import pytest

from headlesslb.compose import compose
from headlesslb.core.clock import ManualClock
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.resolv import DnsTries
from headlesslb.core.schedule import RefreshPolicy
from headlesslb.errors import ConfigurationError, DiscoveryError
from headlesslb.io.dns import DnsDiscovery
from headlesslb.io.runtime import Runtime
from headlesslb.io.shared import ServiceKey, SharedDiscovery, answers
from headlesslb.testing import StaticDiscovery

from .fresh import run_fresh

ANSWER = Resolution((Endpoint("10.0.0.1", 80),), 5.0)
KEY = ServiceKey(
    "web-hl.default.svc.cluster.local.",
    80,
    (("127.0.0.1", 53),),
    "ipv4",
    3.0,
    DnsTries(),
    None,
    RefreshPolicy(),
)


class Inner:
    """A DNS discovery stand-in: counts rounds, answers from a list, may wait at a gate."""

    def __init__(self, *answers: Resolution | Exception) -> None:
        self.answers = list(answers) or [ANSWER]
        self.calls = 0
        self.gate: anyio.Event | None = None

    async def resolve(self) -> Resolution:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def handles(inner: Inner, clock: ManualClock, n: int = 2, key: ServiceKey = KEY) -> list[Any]:
    return [SharedDiscovery(cast(DnsDiscovery, inner), key, clock) for _ in range(n)]


@pytest.fixture(autouse=True)
def _no_answers() -> None:
    answers.clear()


@pytest.mark.anyio
async def test_a_second_client_reuses_the_answer_with_the_ttl_left() -> None:
    clock, inner = ManualClock(), Inner()
    a, b = handles(inner, clock)
    assert await a.resolve() == ANSWER
    clock.advance(2.0)
    shared = await b.resolve()
    assert inner.calls == 1
    assert shared.endpoints == ANSWER.endpoints and shared.ttl == pytest.approx(3.0)
    # Its own next round, with no newer answer from anyone: it asks DNS, as an unshared one would.
    await b.resolve()
    assert inner.calls == 2
    await a.resolve()  # b's answer is newer than a's last round
    assert inner.calls == 2 and a.entry is b.entry and a.entry.queries == 2


@pytest.mark.anyio
async def test_an_expired_answer_is_asked_again() -> None:
    clock, inner = ManualClock(), Inner()
    a, b = handles(inner, clock)
    await a.resolve()
    clock.advance(5.0)
    await b.resolve()
    assert inner.calls == 2


@pytest.mark.anyio
async def test_rounds_in_flight_are_shared_and_so_are_their_failures() -> None:
    clock = ManualClock()
    inner = Inner(ANSWER, DiscoveryError("SERVFAIL"), ANSWER)
    a, b, c = handles(inner, clock, 3)
    results: list[object] = []

    async def run(handle: Any) -> None:
        try:
            results.append(await handle.resolve())
        except DiscoveryError as exc:
            results.append(exc)

    for expected in (ANSWER, DiscoveryError):
        inner.gate = anyio.Event()
        before = inner.calls
        results.clear()
        async with anyio.create_task_group() as tg:
            for handle in (a, b, c):
                tg.start_soon(run, handle)
            await anyio.wait_all_tasks_blocked()
            inner.gate.set()
        assert inner.calls == before + 1
        assert all(r == expected or isinstance(r, DiscoveryError) for r in results)
        assert len(results) == 3 and len({type(r) for r in results}) == 1
        if expected is DiscoveryError:
            # One exception each, the waiters' caused by the round's: one object raised in
            # every waiting task would gather all their frames on its traceback.
            assert len({id(r) for r in results}) == 3
            (raised,) = [r for r in results if isinstance(r, BaseException) and not r.__cause__]
            assert all(r is raised or r.__cause__ is raised for r in results)
        clock.advance(10.0)
    inner.gate = None
    assert a.entry.cached is None  # a failure is never kept
    await a.resolve()
    assert inner.calls == 3


@pytest.mark.anyio
async def test_a_partial_answer_is_not_kept_and_invalidate_drops_the_answer() -> None:
    clock = ManualClock()
    partial = Resolution(ANSWER.endpoints, 5.0, partial=True)
    inner = Inner(partial, ANSWER)
    a, b = handles(inner, clock)
    assert (await a.resolve()).partial
    await b.resolve()
    assert inner.calls == 2  # nothing kept: b asked
    a.invalidate()  # a Pod refused a connection
    await a.resolve()
    assert inner.calls == 3


@pytest.mark.anyio
async def test_refcount_different_keys_and_the_last_detach() -> None:
    clock, inner = ManualClock(), Inner()
    other = dataclasses.replace(KEY, fqdn="api-hl.default.svc.cluster.local.")
    a, b = handles(inner, clock)
    (c,) = handles(inner, clock, 1, key=other)
    for handle in (a, b, c):
        await handle.resolve()
    assert len(answers) == 2 and a.lease.users == 2 and c.entry is not a.entry
    a.detach()
    assert len(answers) == 2 and b.lease.users == 1
    b.detach()
    b.detach()  # twice is harmless
    assert len(answers) == 1
    c.detach()
    assert len(answers) == 0


def test_entries_belong_to_one_event_loop() -> None:
    clock, inner = ManualClock(), Inner()
    a, b = handles(inner, clock)
    anyio.run(a.resolve)
    anyio.run(b.resolve)  # another loop: its own entry, its own round
    assert inner.calls == 2 and len(answers) == 2 and a.entry is not b.entry


def test_a_forked_child_starts_with_an_empty_registry() -> None:
    clock, inner = ManualClock(), Inner()
    (a,) = handles(inner, clock, 1)
    anyio.run(a.resolve)
    assert len(answers) == 1
    pid = os.fork()
    if pid == 0:  # the child: the at-fork hook emptied it; the handle joins afresh
        ok = len(answers) == 0
        anyio.run(a.resolve)
        ok = ok and len(answers) == 1 and inner.calls == 2
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(answers) == 1


def test_a_pid_change_without_the_hook_also_resets() -> None:
    run_fresh(
        """
        import os
        import anyio
        from headlesslb.core.resolv import DnsTries
        from headlesslb.core.schedule import RefreshPolicy
        from headlesslb.io.shared import ServiceKey, SharedDiscovery, answers
        from headlesslb.testing import StaticDiscovery

        key = ServiceKey("web-hl.default.svc.cluster.local.", 80, (), "ipv4", 3.0, DnsTries(),
                         None, RefreshPolicy())
        handle = SharedDiscovery(StaticDiscovery(["10.0.0.1:80"]), key, lambda: 0.0)
        anyio.run(handle.resolve)
        assert len(answers) == 1
        os.getpid = lambda: -1  # a child forked without the at-fork hook
        assert len(answers) == 0
        anyio.run(handle.resolve)  # the handle forgot the parent's entry: it joins afresh
        assert len(answers) == 1 and handle.lease.users == 1
        """
    )


def test_a_runtime_shares_dns_by_default_and_only_dns() -> None:
    def discovery(**options: Any) -> object:
        where = {"nameservers": ["127.0.0.1:53"], "namespace": "default", **options}
        return Runtime(compose("web-hl", where).spec).discovery

    shared = discovery()
    assert isinstance(shared, SharedDiscovery)
    assert shared.key.fqdn == "web-hl.default.svc.cluster.local."
    assert isinstance(discovery(share_discovery=False), DnsDiscovery)
    own = StaticDiscovery(["10.0.0.1:80"])
    assert discovery(discovery=own) is own
    with pytest.raises(ConfigurationError, match="share_discovery"):
        discovery(share_discovery=cast(bool, "yes"))
