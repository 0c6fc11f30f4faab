"""DNS lookups made on the request path, cached under the same refresh policy as discovery.

Two lookups happen outside the refresh loop: a StatefulSet Pod by its own name (``ordinal=`` when
SRV gives no hostnames) and the fallback Service's address. :class:`LookupCache` keeps their
answers, found or not, for the record's TTL clamped to the :class:`RefreshPolicy` bounds (whatever
TTL or SOA minimum a server sends), remembers a failed lookup for a moment so a burst of requests
with DNS down fails at once instead of queueing timeouts (each request with an exception of its
own), shares one query among concurrent callers of the same name, and forgets an answer the
moment a connection to it is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio

from ..core import forksafe
from ..core.clock import Clock
from ..core.schedule import RefreshPolicy
from ..errors import HeadlessLBError, copy_error

__all__ = ["LookupCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Lookup = Callable[[], Awaitable[tuple[V | None, float]]]
"""One DNS lookup: (the value, or None for "no such name"; the TTL DNS gave, seconds)."""


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V | None
    error: HeadlessLBError | None
    expires: float


class LookupCache(Generic[K, V]):
    """Lookups by key, cached for ``policy``-clamped TTLs, one query per key at a time."""

    def __init__(
        self,
        policy: RefreshPolicy,
        clock: Clock,
        *,
        max_entries: int = 1024,
        error_ttl: float = 1.0,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._max_entries = max_entries
        self._error_ttl = error_ttl
        self._entries: dict[K, _Entry[V]] = {}
        self._flights: dict[K, anyio.Event] = {}
        # A forked child's lookups in flight were on the parent's loop: it starts empty.
        forksafe.forget(self, LookupCache.clear)

    def peek(self, key: K) -> V | None:
        """The value cached for ``key`` now (expired or not), without a lookup."""
        entry = self._entries.get(key)
        return None if entry is None else entry.value

    async def get(self, key: K, lookup: Lookup[V]) -> V | None:
        """The cached value, or what ``lookup()`` finds; raises the lookup's typed error (while
        it is remembered, a new exception of its type and message, caused by it)."""
        while True:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > self._clock():
                error = entry.error
                if error is not None:
                    # A new exception each time, caused by the remembered one: raising that one
                    # object for every request would chain every raiser's frames onto it.
                    raise copy_error(error) from error
                return entry.value
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.wait()  # then read what it stored (or, if it was cancelled, ask anew)
        done = self._flights[key] = anyio.Event()
        try:
            try:
                value, ttl = await lookup()
            except HeadlessLBError as exc:
                self._store(key, _Entry(None, exc, self._clock() + self._error_ttl))
                raise
            self._store(key, _Entry(value, None, self._clock() + self._policy.cache_ttl(ttl)))
            return value
        finally:
            del self._flights[key]
            done.set()

    def clear(self) -> None:
        """Forget everything, lookups in flight included (a forked child's copy)."""
        self._entries.clear()
        self._flights.clear()

    def invalidate(self, key: K) -> None:
        """Forget ``key`` (a connection to its address was refused)."""
        self._entries.pop(key, None)

    def _store(self, key: K, entry: _Entry[V]) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]  # the oldest: dicts keep insertion order
        self._entries[key] = entry
