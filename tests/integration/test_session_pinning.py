"""The recipe docs/sdks.md gives for MCP: an SDK that builds its own requests keeps a session on
one Pod through an httpx2 request hook that gives every request of the session one key, with
``ConsistentHash`` sharding. (The MCP SDK is not a test dependency: the hook is the part of the
recipe that is ours, and a plain httpx2 client exercises it.)"""

from __future__ import annotations

import collections
import uuid

import httpx2
import pytest

from headlesslb import ConsistentHash
from headlesslb.httpx2 import HeadlessTransport
from headlesslb.testing import LocalCluster


@pytest.mark.anyio
async def test_a_request_hook_keeps_each_session_on_one_pod(cluster: LocalCluster) -> None:
    pods: collections.Counter[str] = collections.Counter()
    for _ in range(12):  # all on one of the three Pods by chance: 3 in 3^12
        key = uuid.uuid4().hex  # one per session

        async def pin(request: httpx2.Request, key: str = key) -> None:
            request.extensions = {**request.extensions, "headlesslb": {"key": key}}

        transport = HeadlessTransport(
            "web-hl", port="http", sharding=ConsistentHash(), **cluster.client_kwargs()
        )
        async with httpx2.AsyncClient(
            transport=transport, base_url="http://web-hl", event_hooks={"request": [pin]}
        ) as http:
            served = {(await http.post("/mcp", json={})).json()["pod"] for _ in range(5)}
        assert len(served) == 1  # every request of the session on one Pod
        pods[served.pop()] += 1
    assert len(pods) > 1  # and the sessions spread over the Pods
