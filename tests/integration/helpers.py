"""Helpers for integration tests over a LocalCluster (real DNS, real HTTP, loopback only)."""

from __future__ import annotations

import collections
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from headlesslb import HeadlessClient
from headlesslb.testing import LocalCluster


def make_client(cluster: LocalCluster, service: str = "web-hl", **kwargs: Any) -> HeadlessClient:
    """A client aimed at the cluster's DNS, named port ``http``."""
    kwargs.setdefault("port", "http")
    kwargs.setdefault("namespace", cluster.namespace)
    kwargs.setdefault("cluster_domain", cluster.domain)
    kwargs.setdefault("nameservers", [cluster.nameserver])
    return HeadlessClient(service, **kwargs)


async def served_by(
    client: HeadlessClient, n: int, path: str = "/", **kwargs: Any
) -> collections.Counter[str]:
    """Send ``n`` sequential GETs and count the Pod names that answered."""
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        response = await client.get(path, **kwargs)
        assert response.status_code == 200, response.text
        counts[response.json()["pod"]] += 1
    return counts


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], *, within: float, every: float = 0.05
) -> float:
    """Poll ``check`` until True; fail after ``within`` seconds. Returns the time taken."""
    start = anyio.current_time()
    with anyio.fail_after(within):
        while not await _result(check()):
            await anyio.sleep(every)
    return anyio.current_time() - start


def established_connections(ips: set[str]) -> int:
    """This process's ESTABLISHED TCP connections to any of ``ips`` (read from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    wanted = {_hex_ip(ip) for ip in ips}
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote_ip = fields[2].split(":")[0]
            if fields[3] == "01" and fields[9] in inodes and remote_ip in wanted:
                count += 1
    return count


def _hex_ip(ip: str) -> str:
    return "".join(f"{int(part):02X}" for part in reversed(ip.split(".")))


async def _result(value: Awaitable[bool] | bool) -> bool:
    return await value if inspect.isawaitable(value) else bool(value)
