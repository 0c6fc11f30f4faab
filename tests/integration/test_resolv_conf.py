"""resolv.conf's options over real DNS servers: two LocalClusters' (on loopback), each asked as
one of the client's nameservers, their query counts telling who was asked how often.

The options come from a resolv.conf file (``resolv_conf=``); the servers from ``nameservers=``,
since resolv.conf takes no port and the clusters' DNS servers listen on ephemeral ones. Rounds
come when the test asks for them (``refresher.refresh()``), one SRV query each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from headlesslb import RefreshPolicy
from headlesslb.testing import LocalCluster

from .helpers import eventually, make_client

pytestmark = pytest.mark.anyio

QUIET = RefreshPolicy(min_interval=3600, max_interval=3600)
"""Rounds come when the test asks for them."""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: these tests wait out DNS timeouts, and the exchange itself runs on trio in
    every other integration module."""
    return "asyncio"


@pytest.fixture(scope="module")
def two() -> Iterator[tuple[LocalCluster, LocalCluster]]:
    """Two clusters, each with StatefulSet ``web`` ×2 behind ``web-hl``: two DNS servers."""
    with LocalCluster(ttl=1) as first, LocalCluster(ttl=1) as second:
        for cluster in (first, second):
            cluster.add_statefulset("web", replicas=2, headless="web-hl", lb=None)
        yield first, second


@pytest.fixture(autouse=True)
def dns_back_to_normal(two: tuple[LocalCluster, LocalCluster]) -> Iterator[None]:
    yield
    for cluster in two:
        cluster.dns_set_mode("normal")


def client(servers: tuple[LocalCluster, ...], tmp_path: Path, options: str, **kwargs: Any) -> Any:
    """A client of ``web-hl`` asking ``servers`` in order, with a resolv.conf of ``options``."""
    path = tmp_path / "resolv.conf"
    path.write_text(f"options {options}\n")
    return make_client(
        servers[0],
        nameservers=[cluster.nameserver for cluster in servers],
        resolv_conf=str(path),
        share_discovery=False,
        refresh=QUIET,
        **kwargs,
    )


def queries(cluster: LocalCluster) -> int:
    return cluster.dns_query_count().total


@dataclasses.dataclass
class Round:
    ok: bool
    took: float
    asked: list[int]
    """Queries each server received."""
    error: str


async def one_round(
    servers: tuple[LocalCluster, ...],
    tmp_path: Path,
    options: str,
    *,
    dropping: tuple[LocalCluster, ...] = (),
    meanwhile: Callable[[int], Awaitable[None]] | None = None,
) -> Round:
    """One discovery round of a client with these resolv.conf ``options``, once its first
    round is in, while the ``dropping`` servers answer nothing; ``meanwhile`` runs beside it,
    given the first server's query count before the round."""
    async with client(servers, tmp_path, options) as c:
        refresher = c.transport.refresher
        await refresher.wait_ready()
        for cluster in dropping:
            cluster.dns_set_mode("drop")
        before = [queries(cluster) for cluster in servers]
        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            if meanwhile is not None:
                tg.start_soon(meanwhile, before[0])
            ok, _ = await refresher.refresh()
        took = time.monotonic() - start
        asked = [queries(cluster) - n for cluster, n in zip(servers, before, strict=True)]
        return Round(ok, took, asked, str(refresher.last_error))


async def test_rotate_spreads_queries_over_the_nameservers(
    two: tuple[LocalCluster, LocalCluster], tmp_path: Path
) -> None:
    first, second = two
    async with client(two, tmp_path, "rotate") as c:
        await c.transport.refresher.wait_ready()
        before = [queries(first), queries(second)]
        for _ in range(10):
            ok, _ = await c.transport.refresher.refresh()
            assert ok
        asked = [queries(first) - before[0], queries(second) - before[1]]
    # One query a round, each starting at the next server: they take turns.
    assert sum(asked) == 10 and min(asked) >= 4, asked


async def test_attempts_retry_a_dropped_query(
    two: tuple[LocalCluster, LocalCluster], tmp_path: Path
) -> None:
    first, _ = two

    async def answer_after_three_tries(start: int) -> None:
        await eventually(lambda: queries(first) - start >= 3, within=5)
        first.dns_set_mode("normal")

    got = await one_round(
        (first,),
        tmp_path,
        "timeout:1 attempts:5",
        dropping=(first,),
        meanwhile=answer_after_three_tries,
    )
    # Three tries dropped, a second each; the fourth answered. Without attempts:5 the round
    # would have given up after 3 s.
    assert got.ok and 2.9 <= got.took < 4.5, got
    assert got.asked == [4]


async def test_timeout_bounds_each_try(
    two: tuple[LocalCluster, LocalCluster], tmp_path: Path
) -> None:
    first, _ = two
    got = await one_round((first,), tmp_path, "timeout:1 attempts:1", dropping=(first,))
    assert not got.ok and 0.9 <= got.took < 1.8, got
    assert got.asked == [1]
    assert "no answer in 1 attempt of 1 s" in got.error


async def test_a_dropped_query_fails_over_after_the_timeout(
    two: tuple[LocalCluster, LocalCluster], tmp_path: Path
) -> None:
    first, _ = two
    got = await one_round(two, tmp_path, "timeout:2 attempts:1", dropping=(first,))
    # The first server is given its 2 s, then the second answers.
    assert got.ok and 1.9 <= got.took < 3.0, got
    assert got.asked == [1, 1]


async def test_each_attempt_asks_every_server(
    two: tuple[LocalCluster, LocalCluster], tmp_path: Path
) -> None:
    got = await one_round(two, tmp_path, "timeout:1 attempts:2", dropping=two)
    # Two passes over two servers, a second each: the round is long enough for all four.
    assert not got.ok and 3.9 <= got.took < 5.0, got
    assert got.asked == [2, 2]


# -- a nameserver with a zone id ----------------------------------------------------------------
def _link_local() -> tuple[str, str] | None:
    """A link-local IPv6 address of this machine, and its interface's name."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) == 6 and fields[3] == "20":  # scope: link
            return str(ipaddress.IPv6Address(bytes.fromhex(fields[0]))), fields[5]
    return None


@contextlib.contextmanager
def relay(upstream: tuple[str, int], ip: str, interface: str) -> Iterator[int]:
    """A UDP DNS relay listening on ``[ip%interface]``, passing queries to ``upstream``."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        listener.bind((ip, 0, 0, socket.if_nametoindex(interface)))
    except OSError as exc:
        listener.close()
        pytest.skip(f"cannot listen on {ip}%{interface}: {exc}")
    listener.settimeout(0.1)
    stop = threading.Event()

    def run() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(2)
            while not stop.is_set():
                try:
                    query, asker = listener.recvfrom(65535)
                    up.sendto(query, upstream)
                    reply, _ = up.recvfrom(65535)
                except TimeoutError:
                    continue
                listener.sendto(reply, asker)

    thread = threading.Thread(target=run, name="link-local-dns-relay", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


async def test_a_nameserver_with_a_zone_id_is_asked_on_its_interface(
    two: tuple[LocalCluster, LocalCluster],
) -> None:
    found = _link_local()
    if found is None:
        pytest.skip("no link-local IPv6 address on this machine")
    ip, interface = found
    first, _ = two
    with relay(first.dns_address, ip, interface) as port:
        async with make_client(
            first,
            nameservers=[f"[{ip}%{interface}]:{port}"],
            share_discovery=False,
            refresh=QUIET,
        ) as c:
            ok, _ = await c.transport.refresher.refresh()
            assert ok, c.transport.refresher.last_error
            assert len(c.endpoints()) == 2
