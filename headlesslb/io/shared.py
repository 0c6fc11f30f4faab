"""One DNS discovery per Service per event loop: clients of the same Service share its answers.

Several clients in one process that target the same Service (same expanded name, port,
nameservers, IP family, discovery timeout, StatefulSet and refresh policy) would each poll DNS on
their own. With ``share_discovery=True`` (the default) their DNS rounds go through one
:class:`SharedEntry` per Service and event loop: a round finds the latest answer in it while that
answer's TTL lasts (handed on with the TTL that is left, so every client's next round lands when
it expires) and otherwise asks DNS once for all of them (single-flight). K clients cost the DNS
server what one does.

What is shared is the answer, and only that: each client keeps its own refresher, pool, health
checks, pickers, events and connections, so closing one changes nothing for the others, and the
last one to close drops the entry. An answer is at most its TTL old, as from any caching
resolver (CoreDNS caches too). A failed or partial round is never kept: the next round asks again.

Entries belong to one event loop (an asyncio loop, a trio token): the single-flight event is
bound to it. The registry belongs to one process: a forked child starts with an empty one.

Clients whose whole background configuration is the same share more than answers: one
:class:`~headlesslb.io.runtime.Runtime` (refresher, pool, health checks), leased from
:data:`runtimes` (async, per event loop) or the sync shell's process-wide registry, both
:class:`Leases`. A client whose runtime is shared still uses this module's answers too, so clients
that differ only in, say, their outlier policy still ask DNS once between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

from ..core import forksafe
from ..core.clock import Clock
from ..core.endpoint import Resolution
from ..core.schedule import RefreshPolicy
from ..errors import copy_error
from .dns import DnsDiscovery

__all__ = [
    "Lease",
    "Leases",
    "ServiceKey",
    "SharedDiscovery",
    "SharedEntry",
    "loop_identity",
    "registry",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """What makes two clients' DNS rounds the same question with the same schedule."""

    fqdn: str
    port: int | str
    nameservers: tuple[tuple[str, int], ...]
    ip_family: str
    timeout: float
    statefulset: str | None
    refresh: RefreshPolicy


class SharedEntry:
    """The latest good answer for one Service on one loop, and the round in flight."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.users = 0
        self.cached: tuple[Resolution, float] | None = None
        """The latest complete answer and when it came."""
        self.generation = 0
        """Counts the answers kept: a client reuses only one newer than its own last round."""
        self.inflight: anyio.Event | None = None
        self.failure: Exception | None = None
        """The error of the latest round, which the clients waiting on it get too."""
        self.queries = 0
        """DNS rounds asked through this entry (diagnostics and tests)."""

    def fresh(self, seen: int) -> Resolution | None:
        """The cached answer with the TTL it has left, if it is newer than the caller's last
        round (generation ``seen``) and has not expired; else None."""
        if self.cached is None or self.generation <= seen:
            return None
        resolution, at = self.cached
        left = resolution.ttl - (self.clock() - at)
        if left <= 0:
            return None
        return Resolution(resolution.endpoints, left, resolution.partial)

    def keep(self, resolution: Resolution) -> None:
        """Remember a round's answer for the others, if it is complete."""
        self.cached = None if resolution.partial else (resolution, self.clock())
        self.generation += 1


def loop_identity() -> object:
    """The running event loop (asyncio) or trio's token for it: what an entry belongs to."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.lowlevel.current_trio_token()


class Registry:
    """The process's entries, by (loop, :class:`ServiceKey`), counted by their users."""

    def __init__(self) -> None:
        self._entries: dict[tuple[object, ServiceKey], SharedEntry] = {}
        forksafe.forget(self, Registry.reset)

    def _current(self) -> dict[tuple[object, ServiceKey], SharedEntry]:
        forksafe.check()
        return self._entries

    def acquire(self, key: ServiceKey, clock: Clock) -> tuple[object, SharedEntry]:
        """The entry for ``key`` on the running loop, one more user counted."""
        entries = self._current()
        where = (loop_identity(), key)
        entry = entries.get(where)
        if entry is None:
            entry = entries[where] = SharedEntry(clock)
        entry.users += 1
        return where[0], entry

    def release(self, loop: object, key: ServiceKey, entry: SharedEntry) -> None:
        """One user fewer; the last one drops the entry."""
        entries = self._current()
        entry.users -= 1
        if entry.users <= 0 and entries.get((loop, key)) is entry:
            del entries[(loop, key)]

    def entries(self) -> int:
        """How many entries are alive (tests and diagnostics)."""
        return len(self._current())

    def reset(self) -> None:
        """Forget every entry (a forked child: its parent's loops are not its own)."""
        self._entries = {}


registry = Registry()
"""The process's one registry."""


class SharedDiscovery:
    """A client's DNS discovery that shares its rounds with the process's other clients of the
    same Service (:data:`registry`). It joins the entry at its first round, on its loop, and
    leaves it at :meth:`detach`."""

    def __init__(self, inner: DnsDiscovery, key: ServiceKey, clock: Clock) -> None:
        self.inner = inner
        self.key = key
        self._clock = clock
        self._joined: tuple[object, SharedEntry] | None = None
        self._seen = 0
        forksafe.forget(self, SharedDiscovery._forget)

    def _forget(self) -> None:
        """In a forked child: the parent's entry is not its own; join afresh at the next round."""
        self._joined = None
        self._seen = 0

    @property
    def entry(self) -> SharedEntry | None:
        """The shared entry once joined (tests and diagnostics)."""
        return None if self._joined is None else self._joined[1]

    async def resolve(self) -> Resolution:
        """The Service's endpoints: the shared answer while it lasts, else one round for all."""
        joined = self._joined
        if joined is None:
            joined = self._joined = registry.acquire(self.key, self._clock)
        entry = joined[1]
        while True:
            found = entry.fresh(self._seen)
            if found is not None:
                self._seen = entry.generation
                return found
            inflight = entry.inflight
            if inflight is None:
                break
            await inflight.wait()  # another client's round: share its answer or its failure
            failure = entry.failure
            if failure is not None:
                raise copy_error(failure) from failure  # its own exception: see copy_error
        done = entry.inflight = anyio.Event()
        entry.failure = None
        try:
            entry.queries += 1
            resolution = await self.inner.resolve()
            entry.keep(resolution)
            self._seen = entry.generation
        except Exception as exc:
            entry.cached, entry.failure = None, exc
            raise
        finally:
            entry.inflight = None
            done.set()
        return resolution

    async def resolve_name(self, name: str, port: int) -> Resolution:
        """A Pod by its own name: the client's own lookup (it has its own cache)."""
        return await self.inner.resolve_name(name, port)

    def invalidate(self) -> None:
        """Drop the shared answer: a Pod refused a connection, so the next round asks DNS."""
        if self._joined is not None:
            self._joined[1].cached = None

    def detach(self) -> None:
        """Leave the entry (the client is closing); the last client to leave drops it."""
        joined, self._joined = self._joined, None
        if joined is not None:
            registry.release(joined[0], self.key, joined[1])


class Lease(Generic[T]):
    """One shared thing (a running runtime) and how many clients hold it."""

    __slots__ = ("key", "users", "value")

    def __init__(self, key: Hashable, value: T) -> None:
        self.key = key
        self.value = value
        self.users = 1


class Leases(Generic[T]):
    """Shared things by key, counted by their users, for one process; thread-safe.

    :meth:`acquire` hands out the live value for a key or makes one; :meth:`release` says when
    the last user left, so that user stops it. A forked child starts empty (its parent's threads
    and loops are not its own)."""

    def __init__(self) -> None:
        self._lock = forksafe.lock(self)
        self._leases: dict[Hashable, Lease[T]] = {}
        forksafe.forget(self, Leases.reset)

    def _current(self) -> dict[Hashable, Lease[T]]:
        forksafe.check()
        return self._leases

    def acquire(
        self, key: Hashable, make: Callable[[], T], alive: Callable[[T], bool]
    ) -> tuple[Lease[T], bool]:
        """The lease for ``key``, one more user counted, and whether it was made now.

        A value that is no longer ``alive`` (its background work failed, which was logged) is not
        handed out: a new one is made, and the old one's users keep theirs until they leave.
        ``make`` runs under the registry's lock: it must not wait on another client.
        """
        with self._lock:
            leases = self._current()
            lease = leases.get(key)
            if lease is not None and alive(lease.value):
                lease.users += 1
                return lease, False
            lease = leases[key] = Lease(key, make())
            return lease, True

    def release(self, lease: Lease[T]) -> bool:
        """One user fewer; True for the last one, which must stop the value (outside any lock)."""
        with self._lock:
            leases = self._current()
            lease.users -= 1
            if lease.users > 0:
                return False
            if leases.get(lease.key) is lease:
                del leases[lease.key]
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._current())

    def reset(self) -> None:
        """Forget every lease (a forked child)."""
        self._leases = {}
