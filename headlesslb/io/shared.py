"""What clients of one process share: DNS answers, runtimes, and the one registry shape for both.

Several clients in one process that target the same Service (same expanded name, port,
nameservers, IP family, discovery timeout and tries, StatefulSet and refresh policy) would each
poll DNS on their own. With ``share_discovery=True`` (the default) their DNS rounds go through one
:class:`SharedEntry` per Service and event loop: a round finds the latest answer in it while that
answer's TTL lasts (handed on with the TTL that is left, so every client's next round lands when
it expires) and otherwise asks DNS once for all of them (single-flight). K clients cost the DNS
server what one does.

What is shared here is the answer, and only that. An answer is at most its TTL old, as from any
caching resolver (CoreDNS caches too). A failed or partial round is never kept: the next round
asks again. Entries belong to one event loop (an asyncio loop, a trio token): the single-flight
event is bound to it.

Clients whose whole background configuration is the same share more than answers: one
:class:`~headlesslb.io.runtime.Runtime` (refresher, pool, health checks), leased by its
:class:`~headlesslb.io.runtime.RuntimeSpec` from the async shell's registry (per event loop) or
the sync shell's (process-wide). A runtime that is shared still asks through this module's
answers, so clients that differ only in, say, their outlier policy still ask DNS once between
them. All three registries are one class, :class:`Registry`: values by key, counted by the
:class:`Lease` each user holds, the last user stopping the value; a forked child starts with
every registry empty.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import anyio

from ..core import forksafe
from ..core.clock import Clock
from ..core.endpoint import Resolution
from ..core.resolv import DnsTries
from ..core.schedule import RefreshPolicy
from ..errors import copy_error
from .dns import DnsDiscovery

__all__ = [
    "Lease",
    "Registry",
    "ServiceKey",
    "SharedDiscovery",
    "SharedEntry",
    "answers",
    "loop_identity",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lease(Generic[V]):
    """One value (a DNS answer entry, a running runtime) and how many users hold it.

    A lease from a :class:`Registry` is shared by everyone who acquired its key; one made
    directly, ``Lease(value)``, is private: its one user is also its last.
    """

    __slots__ = ("_registry", "key", "users", "value")

    def __init__(
        self, value: V, key: Hashable = None, registry: Registry[Any, V] | None = None
    ) -> None:
        self.value = value
        self.key = key
        self.users = 1
        self._registry = registry

    def release(self) -> bool:
        """One user fewer; True for the last one, which must stop the value (outside any
        lock). Once per acquire."""
        registry = self._registry
        if registry is None:
            self.users -= 1
            return self.users <= 0
        return registry._release(self)


def _always(value: object) -> bool:
    return True


class Registry(Generic[K, V]):
    """Values shared by key within one process, counted by their users; thread-safe.

    :meth:`acquire` hands out the live value for a key or makes one; the lease's
    :meth:`Lease.release` says when the last user left, so that user stops it. A forked child
    starts empty: its parent's threads, loops and connections are not its own.
    """

    def __init__(self) -> None:
        self._lock = forksafe.lock(self)
        self._leases: dict[Hashable, Lease[V]] = {}
        forksafe.forget(self, Registry.clear)

    def acquire(
        self, key: K, make: Callable[[], V], alive: Callable[[V], bool] = _always
    ) -> tuple[Lease[V], bool]:
        """The lease for ``key``, one more user counted, and whether it was made now.

        A value that is no longer ``alive`` (its background work failed, which was logged) is not
        handed out: a new one is made, and the old one's users keep theirs until they leave.
        ``make`` runs under the registry's lock: it must not wait on another user.
        """
        forksafe.check()
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None and alive(lease.value):
                lease.users += 1
                return lease, False
            lease = self._leases[key] = Lease(make(), key, self)
            return lease, True

    def _release(self, lease: Lease[V]) -> bool:
        forksafe.check()
        with self._lock:
            lease.users -= 1
            if lease.users > 0:
                return False
            if self._leases.get(lease.key) is lease:
                del self._leases[lease.key]
            return True

    def __len__(self) -> int:
        forksafe.check()
        with self._lock:
            return len(self._leases)

    def clear(self) -> None:
        """Forget every lease (a forked child; tests)."""
        self._leases = {}


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """What makes two clients' DNS rounds the same question with the same schedule."""

    fqdn: str
    port: int | str
    nameservers: tuple[tuple[str, int], ...]
    ip_family: str
    timeout: float
    tries: DnsTries
    """How each query asks the nameservers (resolv.conf's timeout, attempts, rotate)."""
    statefulset: str | None
    refresh: RefreshPolicy


class SharedEntry:
    """The latest good answer for one Service on one loop, and the round in flight."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
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
        return replace(resolution, ttl=left)

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


answers: Registry[tuple[object, ServiceKey], SharedEntry] = Registry()
"""The process's shared DNS answers, by (event loop, :class:`ServiceKey`)."""


class SharedDiscovery:
    """A client's DNS discovery that shares its rounds with the process's other clients of the
    same Service (:data:`answers`). It joins the entry at its first round, on its loop, and
    leaves it at :meth:`detach`."""

    def __init__(self, inner: DnsDiscovery, key: ServiceKey, clock: Clock) -> None:
        self.inner = inner
        self.key = key
        self._clock = clock
        self._lease: Lease[SharedEntry] | None = None
        self._seen = 0
        forksafe.forget(self, SharedDiscovery._forget)

    def _forget(self) -> None:
        """In a forked child: the parent's entry is not its own; join afresh at the next round."""
        self._lease = None
        self._seen = 0

    @property
    def lease(self) -> Lease[SharedEntry] | None:
        """The hold on the shared entry once joined (tests and diagnostics)."""
        return self._lease

    @property
    def entry(self) -> SharedEntry | None:
        """The shared entry once joined (tests and diagnostics)."""
        return None if self._lease is None else self._lease.value

    async def resolve(self) -> Resolution:
        """The Service's endpoints: the shared answer while it lasts, else one round for all."""
        lease = self._lease
        if lease is None:
            make = functools.partial(SharedEntry, self._clock)
            lease, _ = answers.acquire((loop_identity(), self.key), make)
            self._lease = lease
        entry = lease.value
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
        if self._lease is not None:
            self._lease.value.cached = None

    def detach(self) -> None:
        """Leave the entry (the client is closing); the last client to leave drops it."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()
