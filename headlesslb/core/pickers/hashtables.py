"""Stable hashing and the consistent-hash tables the sharding picker reads.

Everything here is a pure function of its inputs, identical in every process, on every machine and
in every Python run, so a fleet of clients agrees on which Pod owns a key:

- :func:`key_hash` — the 64-bit hash of a sharding key;
- :class:`MaglevTable` — Maglev lookup table (Eisenbud et al., NSDI 2016) over endpoint identities;
- :func:`jump_hash` — jump consistent hash (Lamping & Veach, 2014) of a key onto ``[0, n)``.

Nothing here knows about snapshots or pickers; :mod:`headlesslb.core.pickers.hashing` builds the
sharding pickers on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from itertools import compress, repeat
from math import isqrt
from operator import is_
from typing import Generic, TypeVar

__all__ = [
    "MaglevTable",
    "endpoint_hashes",
    "jump_hash",
    "key_hash",
    "maglev_table_size",
    "mix64",
    "next_prime",
]

T = TypeVar("T")

MASK64 = (1 << 64) - 1

# Copying a prepared hasher skips the keyword parsing of ``blake2b(..., digest_size=8)``: 310 ns
# instead of 430 ns per key on CPython 3.11. The prototype is never updated, so copies are safe
# from any thread.
_KEY_HASHER = hashlib.blake2b(digest_size=8, person=b"headlesslb-key")
_new_key_hasher = _KEY_HASHER.copy
_from_bytes = int.from_bytes


def key_hash(key: str | bytes | int) -> int:
    """The stable 64-bit hash of a sharding key.

    BLAKE2b with an 8-byte digest and personalisation ``b"headlesslb-key"``, read as a big-endian
    unsigned integer, over the key's bytes:

    - ``str``: its UTF-8 encoding;
    - ``bytes`` (or ``bytearray``/``memoryview``): the bytes as they are;
    - ``int``: its decimal text in ASCII (``-42`` → ``b"-42"``), so ``42`` and ``"42"`` shard
      alike — the same spelling a client in another language would hash. Up to 4,300 digits,
      Python's limit on int-to-text conversion (a longer int raises ``ValueError``; requests
      check this up front and raise ``InvalidRequest``). ``bool`` counts as ``0``/``1``.
    - ``str``: must be encodable as UTF-8 (a lone surrogate raises ``UnicodeEncodeError``).

    Never Python's builtin ``hash()``: it is salted per process (``PYTHONHASHSEED``).
    """
    if type(key) is str:
        data: bytes = key.encode()
    elif type(key) is bytes:
        data = key
    elif isinstance(key, str):
        data = key.encode()
    elif isinstance(key, int):
        data = b"%d" % key
    elif isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
    else:
        raise TypeError(f"a sharding key must be str, bytes or int, not {type(key).__name__}")
    h = _new_key_hasher()
    h.update(data)
    return _from_bytes(h.digest(), "big")


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a cheap, stable bijection on 64-bit integers (salted re-hashes)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: the bucket in ``[0, buckets)`` that 64-bit ``key`` belongs to.

    Growing ``buckets`` from n to n+1 moves exactly the keys that now land in bucket n, about
    1/(n+1) of them; every other key stays. The paper's 64-bit LCG, with the division done exactly
    in integers (``((b + 1) << 31) // ((key >> 33) + 1)``) rather than in doubles: faster in Python,
    and equal to the reference code except where a double would round across an integer (it
    reproduces Guava's cross-language golden values).
    """
    if buckets <= 0:
        raise ValueError("buckets must be positive")
    b = -1
    j = 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & MASK64
        j = ((b + 1) << 31) // ((key >> 33) + 1)
    return b


def next_prime(n: int) -> int:
    """The smallest prime ``>= n``."""
    if n <= 2:
        return 2
    n |= 1
    while True:
        if n % 3 or n == 3:
            d = 5
            while d * d <= n:
                if n % d == 0 or n % (d + 2) == 0:
                    break
                d += 6
            else:
                return n
        n += 2


MIN_TABLE_SIZE = 65537
"""Smallest default Maglev table (Envoy's and the paper's default size).

Maglev moves more keys than the ideal 1/N when membership changes, because members take turns
filling the table and a newcomer shifts everyone's later picks; the excess shrinks as the table
grows relative to the member count (roughly like N/√M). Measured with 100,000 keys, adding an 11th
member to 10 moves 1.21× the ideal with M = 1,601 but 1.03× with M = 65,537, and removing one moves
1.4 % resp. 0.2 % of the other members' keys. Below 512 members the floor sets the size; a build
costs 15-25 ms whatever the member count.
"""


def maglev_table_size(endpoints: int, factor: int = 100) -> int:
    """The default Maglev table size for ``endpoints`` members: a prime ``>= factor × endpoints``.

    The size is ``next_prime(max(factor × 2**ceil(log2(endpoints)), MIN_TABLE_SIZE))``, so it
    changes only when the member count crosses a power of two above the floor (512 → 513 with
    the default factor): keys are placed by ``hash % size``, so a new size reshuffles nearly every
    key, and tying it to the exact count would turn every scale-out by one Pod into a reshuffle.
    Pass a fixed ``table_size`` to the factory to never reshuffle.
    """
    if endpoints < 1 or factor < 1:
        raise ValueError("endpoints and factor must be >= 1")
    ceiling = 1 << (endpoints - 1).bit_length()
    return next_prime(max(factor * ceiling, MIN_TABLE_SIZE))


_ID_HASHER = hashlib.blake2b(digest_size=16, person=b"headlesslb-mglv")


def endpoint_hashes(identity: str) -> tuple[int, int]:
    """Two independent stable 64-bit hashes of an endpoint identity (``"ip:port"``).

    The two halves of one 16-byte BLAKE2b digest; Maglev derives a member's offset and skip from
    them.
    """
    h = _ID_HASHER.copy()
    h.update(identity.encode())
    d = h.digest()
    return _from_bytes(d[:8], "big"), _from_bytes(d[8:], "big")


class MaglevTable(Generic[T]):
    """A Maglev lookup table: ``size`` slots, each owned by one item, ≈ ``size / n`` slots each.

    Built once per membership (O(M log M) probes, tens of milliseconds for 1,000 members in pure
    Python), then read only, from any thread: a lookup is one modulo and one list index.

    Each item's preference list is the permutation ``(offset + j × skip) mod size`` of the slots,
    with ``offset = h1 mod size`` and ``skip = h2 mod (size − 1) + 1`` from
    :func:`endpoint_hashes` of its identity; items take turns, in the order of their sorted
    identities, claiming their next unclaimed preferred slot until every slot is owned — the
    population of the Maglev paper, so the table is the same whatever order items come in.

    ``pause``, if given, is called every fraction of a millisecond of the build: a worker thread
    passes one that hands the GIL back for a moment when it has held it long enough
    (:func:`headlesslb.io.pauses.hand_back_gil`), so that the event loop (or a request thread)
    never waits for the whole build, or for the interpreter's 5 ms switch interval.
    """

    __slots__ = ("entries", "items", "size")

    entries: list[T]
    """Slot → owning item."""
    items: tuple[T, ...]
    """The items, in the canonical (sorted identity) order."""
    size: int
    """Number of slots, a prime."""

    def __init__(
        self,
        items: Sequence[T],
        identities: Sequence[str],
        size: int | None = None,
        pause: Callable[[], None] | None = None,
    ) -> None:
        if len(items) != len(identities):
            raise ValueError("need exactly one identity per item")
        if not items:
            raise ValueError("a Maglev table needs at least one item")
        if len(set(identities)) != len(identities):
            raise ValueError("identities must be unique")
        m = maglev_table_size(len(items)) if size is None else size
        if m < len(items) or m != next_prime(m):
            raise ValueError("the table size must be a prime >= the number of items")
        order = sorted(range(len(items)), key=identities.__getitem__)
        ordered = tuple(items[i] for i in order)
        positions: list[int] = []
        skips: list[int] = []
        pause = pause or _no_pause
        for done, i in enumerate(order, 1):
            if not done % _HASHES_BETWEEN_PAUSES:
                pause()
            h1, h2 = endpoint_hashes(identities[i])
            positions.append(h1 % m)
            skips.append(h2 % (m - 1) + 1 if m > 1 else 1)
        self.entries = _populate(ordered, positions, skips, m, pause)
        self.items = ordered
        self.size = m

    def lookup(self, h: int) -> T:
        """The owner of 64-bit hash ``h``."""
        return self.entries[h % self.size]

    def slot(self, h: int) -> int:
        """The slot of 64-bit hash ``h`` (fallover walks the table forward from there)."""
        return h % self.size


def _no_pause() -> None:
    """The default ``pause``: carry on."""


_HASHES_BETWEEN_PAUSES = 128
"""Members hashed between two pauses (about 2 µs each)."""
_PAUSE_EVERY = 512
"""Fills between two pauses while probing an empty table (well under a millisecond of work)."""
_TAIL_PAUSE_EVERY = 8
"""Fills between two pauses in the tail, where each costs O(free slots)."""


def _populate(
    items: tuple[T, ...],
    positions: list[int],
    skips: list[int],
    m: int,
    pause: Callable[[], None],
) -> list[T]:
    # The build's hot loop. Everything is a local, items go straight into the table (no index →
    # item pass afterwards), each item's cursor is kept as a position instead of recomputing
    # (offset + j × skip) % m, and a compare-and-subtract replaces the modulo.
    table: list[T | None] = [None] * m
    n = len(items)
    filled = 0
    # Probing costs m / free per fill, so the last few hundred slots cost as much as all others
    # together (the build is O(m log m)). For those, _fill_tail finds each item's next free slot
    # directly, in O(free) per fill: same table, about 25 % faster at 1,000 members.
    stop = max(m - isqrt(m) * 2 // 3, 0)
    turn = 0
    rounds = range(n)
    next_pause = _PAUSE_EVERY
    while filled < stop:
        for i in rounds:
            c = positions[i]
            s = skips[i]
            while table[c] is not None:
                c += s
                if c >= m:
                    c -= m
            table[c] = items[i]
            c += s
            if c >= m:
                c -= m
            positions[i] = c
            filled += 1
            if filled == stop:
                turn = i + 1
                break
            if filled >= next_pause:
                pause()
                # A fill costs m / free probes on average: pause more often as the table fills,
                # at every fill in the end (one then costs about 1.5 × √m probes).
                next_pause = filled + max(1, _PAUSE_EVERY * (m - filled) // m)
    _fill_tail(table, items, positions, skips, m, turn, pause)
    return table  # type: ignore[return-value]  # every slot is filled now


def _fill_tail(
    table: list[T | None],
    items: tuple[T, ...],
    positions: list[int],
    skips: list[int],
    m: int,
    turn: int,
    pause: Callable[[], None],
) -> None:
    # Item i's next slot is the free slot x reached first along its permutation from its cursor
    # c, i.e. the one with the smallest j = (x − c) × skip⁻¹ mod m. Identical to probing.
    free: list[int] = []
    chunk = _PAUSE_EVERY * 16  # about 0.3 ms of C-level scanning between two pauses
    for start in range(0, m, chunk):
        # One C-level pass over a big table holds the GIL throughout: in chunks, with pauses.
        stop = min(start + chunk, m)
        free += compress(range(start, stop), map(is_, table[start:stop], repeat(None)))
        pause()
    n = len(items)
    inverses: dict[int, int] = {}
    i = turn
    fills = 0
    while free:
        fills += 1
        if not fills % _TAIL_PAUSE_EVERY:
            pause()
        if i >= n:
            i = 0
        c = positions[i]
        inv = inverses.get(i)
        if inv is None:
            inv = inverses[i] = pow(skips[i], -1, m)
        steps = [(x - c) * inv % m for x in free]
        k = steps.index(min(steps))
        x = free[k]
        table[x] = items[i]
        free[k] = free[-1]
        free.pop()
        c = x + skips[i]
        positions[i] = c - m if c >= m else c
        i += 1
