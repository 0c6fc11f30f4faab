"""examples/sharded_cache.py: keys on their jump-hash owner, scaling moves only the keys the new
Pod takes, invalidation is one write to the leader."""

from __future__ import annotations

from sharded_cache import ShardedCache

from headlesslb.core.pickers.hashtables import jump_hash, key_hash
from headlesslb.testing import LocalCluster

from .helpers import wait_until

KEYS = [f"user:{n}" for n in range(60)]


def _jump_owner(key: str, replicas: int) -> str:
    return f"cache-{jump_hash(key_hash(key), replicas)}"


def test_sharded_cache_over_a_statefulset() -> None:
    with LocalCluster(ttl=1) as cluster:
        cluster.add_statefulset("cache", replicas=3, app="sharded_cache:cache_server", factory=True)
        with ShardedCache("cache-hl", cluster.client_kwargs()) as cache:
            for key in KEYS:
                assert cache.set(key, key.upper()) == _jump_owner(key, 3)
            assert all(cache.get(key) == key.upper() for key in KEYS)
            assert {cache.owner(key) for key in KEYS} == {"cache-0", "cache-1", "cache-2"}
            before = {key: cache.owner(key) for key in KEYS}

            cluster.scale("cache", 4)
            wait_until(lambda: len(cache.client.endpoints()) == 4)
            after = {key: cache.owner(key) for key in KEYS}
            moved = [key for key in KEYS if after[key] != before[key]]
            # Jump hash: a key stays where it was or moves to the new Pod, nowhere else.
            assert moved and all(after[key] == "cache-3" for key in moved)
            assert after == {key: _jump_owner(key, 4) for key in KEYS}
            assert len(moved) < len(KEYS) / 2
            assert all(cache.get(key) == key.upper() for key in KEYS if key not in moved)

            # One write to the leader makes every entry unreachable.
            served_before = {p.name: cluster.requests_served(p.name) for p in cluster.pods("cache")}
            assert cache.invalidate_all() == 1
            served = {p.name: cluster.requests_served(p.name) for p in cluster.pods("cache")}
            assert {n for n in served if served[n] != served_before[n]} == {"cache-0"}
            assert all(cache.get(key) is None for key in KEYS)
