"""A nameserver with an IPv6 zone id, over a real DNS server: a LocalCluster's (on loopback),
relayed onto a link-local address of this machine.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from headlesslb import RefreshPolicy
from headlesslb.testing import LocalCluster

from .helpers import make_client

pytestmark = pytest.mark.anyio

QUIET = RefreshPolicy(min_interval=3600, max_interval=3600)
"""Rounds come when the test asks for them."""


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the exchange itself runs on trio in every other integration module."""
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
