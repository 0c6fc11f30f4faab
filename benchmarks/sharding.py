"""Sharding quality: balance and key movement of four consistent-hashing schemes, same keys.

    python benchmarks/sharding.py [--keys 100000]

For N = 10 and N = 100 members, and the same keys (``key-0`` … ``key-99999``) for every scheme:

- balance: max/mean keys per member at N (target ≤ 1.05; with 100,000 keys the sampling noise
  alone puts ~1.03 at N=10 and ~1.08 at N=100 for a perfect scheme);
- movement on N → N+1 and N → N−1: the fraction of keys whose owner changed, divided by the
  ideal (1/(N+1) resp. 1/N, the newcomer's resp. the leaver's share; target ≤ 1.1).

Schemes: our Maglev table (default size, see ``maglev_table_size``), our jump hash over ordinals
0 … N−1 (scale-down removes the highest ordinal, as a StatefulSet does), uhashring's ketama ring
(``HashRing(hash_fn="ketama")``: 40 vnodes × 4 replicas, MD5) and rendezvous (highest random
weight) hashing, implemented here with the same 64-bit key hash as ours and SplitMix64 scores.
"""

from __future__ import annotations

import argparse
import collections
import time
from collections.abc import Callable, Sequence

from _common import print_table, write_results
from uhashring import HashRing

from headlesslb.core.pickers.hashtables import (
    MASK64,
    MaglevTable,
    jump_hash,
    key_hash,
    maglev_table_size,
    mix64,
)

Assign = Callable[[int], list[str]]
"""Members (by count) → the owner of every key, in key order."""


def member_ids(n: int) -> list[str]:
    return [f"10.0.{i // 250}.{i % 250 + 1}:8080" for i in range(n)]


def maglev(hashes: Sequence[int]) -> Assign:
    def assign(n: int) -> list[str]:
        ids = member_ids(n)
        table = MaglevTable(ids, ids, maglev_table_size(n))
        entries, m = table.entries, table.size
        return [entries[h % m] for h in hashes]

    return assign


def jump(hashes: Sequence[int]) -> Assign:
    def assign(n: int) -> list[str]:
        ids = member_ids(n)  # ordinal i ↔ member i
        return [ids[jump_hash(h, n)] for h in hashes]

    return assign


def ketama(keys: Sequence[str]) -> Assign:
    def assign(n: int) -> list[str]:
        ring = HashRing(nodes=member_ids(n), hash_fn="ketama")
        get = ring.get_node
        return [get(k) for k in keys]

    return assign


def rendezvous(hashes: Sequence[int]) -> Assign:
    def assign(n: int) -> list[str]:
        ids = member_ids(n)
        seeds = [key_hash(i) for i in ids]
        out = []
        for h in hashes:
            best = -1
            owner = 0
            for idx, seed in enumerate(seeds):
                # SplitMix64 of (key hash ⊕ member hash), inlined: the score of this pair.
                x = ((h ^ seed) + 0x9E3779B97F4A7C15) & MASK64
                x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
                x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
                x ^= x >> 31
                if x > best:
                    best = x
                    owner = idx
            out.append(ids[owner])
        return out

    assert mix64(1) == _splitmix_check(1)  # the inlined copy is SplitMix64
    return assign


def _splitmix_check(v: int) -> int:
    x = (v + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def moved(before: Sequence[str], after: Sequence[str]) -> float:
    return sum(1 for a, b in zip(before, after, strict=True) if a != b) / len(before)


def evaluate(name: str, assign: Assign, n: int) -> dict[str, object]:
    start = time.perf_counter()
    at_n, grown, shrunk = assign(n), assign(n + 1), assign(n - 1)
    counts = collections.Counter(at_n)
    mean = len(at_n) / n
    return {
        "scheme": name,
        "N": n,
        "max/mean": round(max(counts.values()) / mean, 3),
        "min/mean": round(min(counts.values()) / mean, 3),
        "N+1 moved": round(moved(at_n, grown), 4),
        "N+1 /ideal": round(moved(at_n, grown) * (n + 1), 3),
        "N-1 moved": round(moved(at_n, shrunk), 4),
        "N-1 /ideal": round(moved(at_n, shrunk) * n, 3),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args()
    keys = [f"key-{i}" for i in range(args.keys)]
    hashes = [key_hash(k) for k in keys]
    schemes: list[tuple[str, Assign]] = [
        ("maglev (ours)", maglev(hashes)),
        ("jump (ours, ordinals)", jump(hashes)),
        ("ketama ring (uhashring)", ketama(keys)),
        ("rendezvous (HRW)", rendezvous(hashes)),
    ]
    rows = [evaluate(name, assign, n) for n in (10, 100) for name, assign in schemes]
    print_table(
        rows,
        title=f"Sharding {args.keys:,} keys: balance at N, movement N→N±1 "
        "(/ideal: 1.0 is minimal; targets max/mean ≤ 1.05, /ideal ≤ 1.1)",
    )
    write_results(
        "sharding",
        rows,
        target={"max/mean": "<= 1.05", "moved/ideal": "<= 1.1"},
        params=vars(args),
        table_sizes={str(n): maglev_table_size(n) for n in (9, 10, 11, 99, 100, 101)},
    )


if __name__ == "__main__":
    main()
