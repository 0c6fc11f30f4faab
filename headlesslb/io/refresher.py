"""The background refresh loop: keeps the pool in step with DNS.

Runs as one of the runtime's background tasks (:mod:`headlesslb.io.tasks` on the async client's
loop, the discovery thread's loop for the sync client). It never raises out of the loop: a
failed round keeps the last good endpoints (stale beats empty) and is retried with back-off,
and an unexpected error is logged with its traceback and retried the same way: background work
never dies silently. A partial round (some of its queries failed,
:attr:`Resolution.partial`) is applied, and the next one comes on the error back-off, never later
than the TTL would have it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import anyio
import anyio.abc

from ..core.clock import Clock, monotonic
from ..core.endpoint import Resolution
from ..core.events import DiscoveryRound, EventHub
from ..core.pool import Pool
from ..core.schedule import RefreshPolicy
from ..core.snapshot import Snapshot
from ..errors import DiscoveryError

__all__ = ["Discovery", "PushDiscovery", "Refresher"]

log = logging.getLogger("headlesslb.refresher")


class Discovery(Protocol):
    """Where endpoints come from: DNS (:class:`headlesslb.io.dns.DnsDiscovery`) or, in tests,
    :class:`headlesslb.testing.StaticDiscovery`. Its coroutines run on an event loop (the sync
    client runs its own, on a background thread). An optional
    ``async resolve_name(name, port) -> Resolution`` lets pinned requests find a StatefulSet Pod
    by its own name."""

    async def resolve(self) -> Resolution:
        """One discovery round: the Service's endpoints and their TTL."""
        ...


@runtime_checkable
class PushDiscovery(Discovery, Protocol):
    """A discovery source that is told of changes
    (:class:`headlesslb.io.kube.EndpointSliceDiscovery`): the runtime runs its ``watch`` as a
    background task beside the refresher, which it wakes."""

    async def watch(self, changed: Callable[[], None]) -> None:
        """Follow the source until cancelled, calling ``changed()`` when the endpoints may have
        changed; never returns or raises otherwise (failures are logged and retried)."""
        ...


class Refresher:
    """Periodic, TTL-aware, single-flight discovery feeding a :class:`Pool`."""

    def __init__(
        self,
        discovery: Discovery,
        pool: Pool,
        policy: RefreshPolicy | None = None,
        *,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
        prepare: Callable[[Snapshot], None] | None = None,
        on_change: Callable[[Snapshot], Awaitable[None]] | None = None,
        events: EventHub | None = None,
    ) -> None:
        self.discovery = discovery
        self.pool = pool
        self.policy = policy or RefreshPolicy()
        self._clock = clock
        self._rng = rng or random.Random()
        self._prepare = prepare
        self._on_change = on_change
        self._ready = anyio.Event()
        self._wake = anyio.Event()
        self._inflight: anyio.Event | None = None
        self._started = 0
        self._finished = 0
        self._running = False
        self._result: tuple[bool, float, bool] = (False, 0.0, False)  # ok, ttl, partial
        self._last_early = -float("inf")
        self.last_error: BaseException | None = None
        """The error of the latest failed round; ``None`` after a successful one."""
        self.rounds = 0
        """Completed rounds, successful or not (diagnostics and tests)."""
        self.events = events
        """Where each round's :class:`DiscoveryRound` goes (logs of failure and recovery)."""
        self._failed_in_a_row = 0
        self._nxdomain = False
        """Whether the latest successful round's answer was NXDOMAIN (for its event)."""

    @property
    def ready(self) -> bool:
        """Whether the first round has completed (successfully or not)."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Wait for the first round, at most ``policy.first_resolution_timeout`` seconds."""
        with anyio.move_on_after(self.policy.first_resolution_timeout):
            await self._ready.wait()

    async def first_round(self) -> None:
        """Wait for the first round, however long it takes (the caller bounds the wait)."""
        await self._ready.wait()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The loop. Reports started at once; the first round runs right away."""
        self._running = True
        task_status.started()
        try:
            if self._prepare is not None:
                # The pool may hold members already: a forked child's, whose parent may have
                # been building their tables when it forked. The child's first answer changes
                # nothing, so without this it would never build them.
                await anyio.to_thread.run_sync(self._prepare, self.pool.snapshot)
            await self._loop()
        finally:
            self._running = False

    @property
    def running(self) -> bool:
        """Whether the loop is running (it stops when its owner's task group closes)."""
        return self._running

    async def _loop(self) -> None:
        failures = 0
        while True:
            ok, ttl, partial = await self._refresh()
            if ok and not partial:
                failures = 0
                delay = self.policy.next_delay(ttl, self._rng)
            elif ok:
                # Some queries failed (the rest was applied): ask again on the error back-off,
                # but never later than the records' own schedule.
                failures += 1
                delay = min(
                    self.policy.error_delay(failures, self._rng),
                    self.policy.next_delay(ttl, self._rng),
                )
            else:
                failures += 1
                delay = self.policy.error_delay(failures, self._rng)
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()

    def notify(self) -> None:
        """Push discovery says the endpoints changed: a round now (or right after the one in
        flight), not rate-limited (a push source coalesces its own changes)."""
        self._wake.set()

    def request_refresh(self) -> bool:
        """Ask for an early round (a Pod refused a connection); rate-limited, never blocks.
        Returns whether the round was granted (False: one came too recently)."""
        now = self._clock()
        if now - self._last_early < self.policy.early_min_interval:
            return False
        self._last_early = now
        self._wake.set()
        return True

    async def refresh(self) -> tuple[bool, float]:
        """A round that started no earlier than this call. Returns (succeeded, ttl).

        Callers that arrive while a round is in flight share one: the one in flight if it began
        after they asked, else the next, which all of them share (single-flight: a burst of
        callers costs at most two queries, and nobody gets an answer older than their call).
        """
        ok, ttl, _ = await self._refresh()
        return ok, ttl

    async def _refresh(self) -> tuple[bool, float, bool]:
        """:meth:`refresh`, also saying whether the round's answer was partial."""
        need = self._started + 1
        while (inflight := self._inflight) is not None:
            await inflight.wait()
            if self._finished >= need:  # a round that began after the call has completed
                return self._result
        self._started += 1
        number = self._started
        done = self._inflight = anyio.Event()
        try:
            began = self._clock()
            self._result = await self._round()
            self._report(began, *self._result)
            self._finished = number
            self._ready.set()
            return self._result
        finally:
            self._inflight = None
            self.rounds += 1
            done.set()

    async def _round(self) -> tuple[bool, float, bool]:
        try:
            resolution = await self.discovery.resolve()
        except Exception as exc:
            self._note_failure(exc)
            return False, 0.0, False
        try:
            before = self.pool.snapshot.membership_version
            snapshot = self.pool.update(resolution)
            if snapshot.membership_version != before:
                if self._prepare is not None:
                    # Picker tables can take milliseconds to build: keep that off the event loop.
                    await anyio.to_thread.run_sync(self._prepare, snapshot)
                if self._on_change is not None:
                    await self._on_change(snapshot)
        except Exception as exc:  # a bug, but the loop must survive it
            log.exception("applying a discovery result failed; keeping the previous endpoints")
            self._note_failure(exc)
            return False, 0.0, False
        self.last_error = None
        self._nxdomain = resolution.nxdomain
        return True, resolution.ttl, resolution.partial

    def _report(self, began: float, ok: bool, ttl: float, partial: bool) -> None:
        """Emit the round's event (the log observer says failing, or recovered, from it)."""
        failures_before = self._failed_in_a_row
        self._failed_in_a_row = 0 if ok else failures_before + 1
        events = self.events
        if events is None:
            return
        known = len(self.pool.snapshot.members)
        error = self.last_error
        events.emit(
            DiscoveryRound(
                events.service,
                ok=ok,
                duration=self._clock() - began,
                endpoints=known if ok else 0,
                ttl=ttl,
                partial=partial,
                error=None if error is None else f"{type(error).__name__}: {error}",
                known=known,
                failures_before=failures_before,
                nxdomain=ok and self._nxdomain,
            )
        )

    def _note_failure(self, exc: Exception) -> None:
        if isinstance(exc, DiscoveryError):
            if self.events is None:  # with events, the log observer says it
                log.warning(
                    "discovery failed (%s); keeping %d known endpoints",
                    exc,
                    len(self.pool.snapshot.members),
                )
        else:
            log.error("discovery failed unexpectedly; keeping the known endpoints", exc_info=exc)
        self.last_error = exc
