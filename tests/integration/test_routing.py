"""Routing over a LocalCluster: sharding, ordinal pinning, read/write split, load-aware P2C."""

from __future__ import annotations

import collections

import anyio
import pytest

from headlesslb import KeyFrom, OrdinalNotFound, OutlierPolicy, Subset
from headlesslb.core.pickers import ConsistentHash
from headlesslb.testing import LocalCluster

from .helpers import eventually, make_client, served_by

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]


async def test_same_key_same_pod(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        for key in ("user-42", b"\x00raw-bytes", 123456789):
            assert len(await served_by(client, 1000 if key == "user-42" else 50, key=key)) == 1
        owners = collections.Counter()
        for i in range(300):
            response = await client.get("/", key=f"user-{i}")
            owners[response.json()["pod"]] += 1
    assert set(owners) == {"web-0", "web-1", "web-2"}  # different keys spread
    assert min(owners.values()) > 50


async def test_another_client_agrees_on_owners(cluster: LocalCluster) -> None:
    keys = [f"k{i}" for i in range(40)]
    owners = []
    for _ in range(2):
        async with make_client(cluster) as client:
            owners.append([(await client.get("/", key=k)).json()["pod"] for k in keys])
    assert owners[0] == owners[1]


async def test_jump_hash_over_ordinals(cluster: LocalCluster) -> None:
    sharding = ConsistentHash(over="ordinal")
    async with make_client(cluster, sharding=sharding) as client:
        before = {k: (await client.get("/", key=k)).json()["pod"] for k in map(str, range(200))}
        cluster.scale("web", 4)
        await client.transport.refresher.refresh()
        after = {k: (await client.get("/", key=k)).json()["pod"] for k in before}
    moved = {k for k in before if before[k] != after[k]}
    assert moved and all(after[k] == "web-3" for k in moved)  # only keys now owned by web-3 move


async def test_key_falls_over_to_next_owner_and_returns(cluster: LocalCluster) -> None:
    short = OutlierPolicy(base_ejection=0.3, max_ejection=0.3)
    async with make_client(cluster, outlier=short) as client:
        owner = (await client.get("/", key="sticky")).json()["pod"]
        cluster.kill(owner)
        stand_in = {(await client.get("/", key="sticky")).json()["pod"] for _ in range(20)}
        assert len(stand_in) == 1 and owner not in stand_in  # one deterministic next owner
        cluster.restart(owner)

        async def back_to_owner() -> bool:
            return bool((await client.get("/", key="sticky")).json()["pod"] == owner)

        await eventually(back_to_owner, within=5)


async def test_ordinal_pins_and_never_falls_back(cluster: LocalCluster) -> None:
    async with make_client(cluster, fallback="web-lb") as client:
        assert set(await served_by(client, 100, ordinal=2)) == {"web-2"}
        with pytest.raises(OrdinalNotFound, match="0, 1, 2") as caught:
            await client.get("/", ordinal=7)
        assert caught.value.available == (0, 1, 2)
        cluster.kill("web-1")
        with anyio.fail_after(10):
            with pytest.raises(Exception) as failed:
                await client.get("/", ordinal=1)  # the pinned Pod is down: no other Pod answers
        assert not isinstance(failed.value, OrdinalNotFound)


async def test_ordinal_by_pod_dns_name_when_srv_gives_no_hostnames(cluster: LocalCluster) -> None:
    async with make_client(cluster, port=cluster.port, statefulset="web") as client:
        assert all(s.ordinal is None for s in client.endpoints())  # A records only
        assert set(await served_by(client, 10, ordinal=1)) == {"web-1"}
        with pytest.raises(OrdinalNotFound):
            await client.get("/", ordinal=5)
    async with make_client(cluster, port=cluster.port) as client:
        with pytest.raises(OrdinalNotFound) as caught:
            await client.get("/", ordinal=1)
        assert "statefulset=" in "".join(getattr(caught.value, "__notes__", []))


async def test_writes_to_one_ordinal_reads_spread(cluster: LocalCluster) -> None:
    async with make_client(cluster, writes_to=0) as client:
        writers = collections.Counter()
        for method in ("POST", "PUT", "PATCH", "DELETE") * 10:
            writers[(await client.request(method, "/w", content=b"x")).json()["pod"]] += 1
        assert set(writers) == {"web-0"}
        readers = await served_by(client, 30)
        assert set(readers) == {"web-0", "web-1", "web-2"}
        # A per-request ordinal overrides the split; a key does not: writes_to wins for writes.
        assert (await client.post("/w", ordinal=2)).json()["pod"] == "web-2"
        keyed = {(await client.post("/w", key=f"k{i}")).json()["pod"] for i in range(30)}
        assert keyed == {"web-0"}


async def test_peak_ewma_steers_away_from_a_slow_pod(cluster: LocalCluster) -> None:
    # Far slower than a loaded CI machine makes the others (a 0.2 s Pod once lost to a fast one
    # whose peak EWMA spiked while both cores were busy).
    cluster.slow("web-1", 0.5)
    async with make_client(cluster, picker="peak_ewma") as client:
        counts = await served_by(client, 100)
    assert counts["web-1"] <= 5, counts


async def test_in_flight_counts_never_leak(cluster: LocalCluster) -> None:
    cluster.slow("web-2", 0.5)
    async with make_client(cluster, picker="least_request") as client:
        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(client.get, "/")
        with anyio.move_on_after(0.1):
            await client.get("/", ordinal=2)  # cancelled while in flight
        cluster.kill("web-0")
        for _ in range(6):
            await client.get("/")  # refused attempts are retried elsewhere
        async with client.stream("GET", "/") as response:
            pass  # body never read: closing the stream still ends the attempt
        assert response.status_code == 200
        assert [s.in_flight for s in client.endpoints()] == [0, 0, 0]


async def test_subset_uses_n_pods_replaces_a_dead_one_and_pins_any(cluster: LocalCluster) -> None:
    # Client index 1 sits at 0.5 on the ring: web-1 (0.5), then web-0 (0.0); web-2 (0.25) is out.
    cluster.reset_stats()
    async with make_client(cluster, subset=Subset(2, client=1)) as client:
        assert set(await served_by(client, 30)) == {"web-0", "web-1"}
        assert cluster.requests_served("web-2") == 0  # never picked, so never connected to
        assert set(await served_by(client, 3, ordinal=2)) == {"web-2"}  # pinning reaches any
        cluster.kill("web-1")

        async def replaced() -> bool:
            return set(await served_by(client, 10)) == {"web-0", "web-2"}

        await eventually(replaced, within=5)


async def test_key_from_a_header_shards_requests_that_carry_no_key(cluster: LocalCluster) -> None:
    # What an SDK does: it sends its own headers and cannot set extensions.
    async with make_client(cluster, key_from=KeyFrom.header("x-session-id")) as client:
        owners: dict[str, set[str]] = collections.defaultdict(set)
        for i in range(120):
            session = f"session-{i % 12}"
            response = await client.get("/", headers={"x-session-id": session})
            owners[session].add(response.json()["pod"])
            # The key is the header's: an explicit key= for the same session agrees.
            if i < 12:
                explicit = await client.get("/", key=session)
                assert explicit.json()["pod"] in owners[session]
        assert all(len(pods) == 1 for pods in owners.values())  # each session sticks
        assert len({pod for pods in owners.values() for pod in pods}) > 1  # sessions spread
        # No header: balanced over every Pod, as without key_from.
        assert len(await served_by(client, 30)) == 3
