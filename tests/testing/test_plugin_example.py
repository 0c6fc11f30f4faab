"""The pytest plugin as the docs show it (docs/how-to/testing.md includes this file's section)."""

from __future__ import annotations

# --8<-- [start:example]
import pytest

from headlesslb import HeadlessClient
from headlesslb.testing import LocalCluster


@pytest.mark.anyio
@pytest.mark.headlesslb_cluster(ttl=1)
async def test_my_client(headlesslb_cluster: LocalCluster) -> None:
    headlesslb_cluster.add_statefulset("web", replicas=3)
    async with HeadlessClient("web-hl", port="http", **headlesslb_cluster.client_kwargs()) as c:
        assert (await c.get("/", ordinal=1)).json()["pod"] == "web-1"


# --8<-- [end:example]
