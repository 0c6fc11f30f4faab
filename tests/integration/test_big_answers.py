"""Big Services over real DNS: answers past 64 KiB, unchanged answers, the table off the loop."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import pytest

import headlesslb.sync
from headlesslb import AnswerTooLarge, HeadlessTransport, RefreshPolicy
from headlesslb.core.pickers.hashing import ConsistentHash, ShardTable
from headlesslb.testing import LocalCluster

pytestmark = pytest.mark.anyio

QUIET = RefreshPolicy(min_interval=3600, max_interval=3600, first_resolution_timeout=30)
"""Rounds come when the test asks for them."""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the DNS exchange runs on trio in every other integration module, and
    these clusters are big."""
    return "asyncio"


@pytest.fixture(scope="module")
def big() -> Iterator[LocalCluster]:
    """Deployment ``big`` of 1,200 DNS-only Pods: its SRV answer exceeds 64 KiB."""
    with LocalCluster(ttl=5) as cluster:
        cluster.add_deployment("big", 1200, lb=None, serve=False)
        yield cluster


def options(cluster: LocalCluster, **more: object) -> dict[str, object]:
    return {
        "nameservers": [cluster.nameserver],
        "namespace": cluster.namespace,
        "refresh": QUIET,
        **more,
    }


async def test_srv_too_big_falls_back_to_a_records_and_says_so_once(
    big: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    expected = {(p.ip, p.port) for p in big.pods("big")}
    with caplog.at_level(logging.WARNING, logger="headlesslb.dns"):
        async with HeadlessTransport("big-hl", port="http", **options(big)) as transport:  # type: ignore[arg-type]
            await transport.refresher.wait_ready()
            await transport.refresher.refresh()
            assert transport.refresher.last_error is None
            assert {m.key for m in transport.pool.snapshot.members} == expected
    said = [r.getMessage() for r in caplog.records if "does not fit" in r.getMessage()]
    assert len(said) == 1 and "A/AAAA records on the SRV port" in said[0]


def test_the_sync_client_discovers_a_big_service_too(big: LocalCluster) -> None:
    transport = headlesslb.sync.HeadlessTransport("big-hl", port="http", **options(big))  # type: ignore[arg-type]
    with transport:
        portal = transport._host._portal
        assert portal is not None
        portal.call(transport.refresher.wait_ready)
        assert len(transport.pool.snapshot.members) == 1200


async def test_an_unchanged_answer_hands_the_pool_the_same_endpoints(big: LocalCluster) -> None:
    async with HeadlessTransport("big-hl", port=big.port, **options(big)) as transport:  # type: ignore[arg-type]
        await transport.refresher.wait_ready()
        snapshot = transport.pool.snapshot
        await transport.refresher.refresh()
        assert transport.pool.snapshot is snapshot  # nothing rebuilt
        big.scale("big", 1201)
        await transport.refresher.refresh()
        assert len(transport.pool.snapshot.members) == 1201
        big.scale("big", 1200)


async def test_the_hash_table_is_built_before_the_first_keyed_request(big: LocalCluster) -> None:
    sharding = ConsistentHash()
    async with HeadlessTransport(
        "big-hl",
        port=big.port,
        sharding=sharding,
        **options(big),  # type: ignore[arg-type]
    ) as transport:
        await transport.runtime.wait_ready()
        table = transport.balancer.tables.sharding
        assert isinstance(table, ShardTable) and len(table.members) == 1200  # in a worker thread


async def test_more_addresses_than_one_message_carries_is_a_clear_error(
    big: LocalCluster,
) -> None:
    name = f"huge.{big.namespace}.svc.{big.domain}"
    big.add_record(name, "A", [f"10.{i // 250}.{i % 250}.1" for i in range(4200)])
    # The server takes seconds to fit 4,200 records into 64 KiB the first time; after that it
    # answers from the bytes it rendered. Not what is tested here: have it done first.
    ip, port = big.dns_address
    reply = dns.query.tcp(dns.message.make_query(name, "A"), ip, port=port, timeout=60)
    assert reply.flags & dns.flags.TC
    async with HeadlessTransport("huge", port=80, **options(big)) as transport:  # type: ignore[arg-type]
        await transport.refresher.wait_ready()
        error = transport.refresher.last_error
        assert isinstance(error, AnswerTooLarge)
        assert "4,090" in str(error) and "64 KiB" in str(error)
        assert transport.pool.snapshot.members == ()
