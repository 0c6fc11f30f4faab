"""examples/openai_sessions.py: OpenAI's SDK shards conversations by a header it sends, each
conversation's turns on one Pod and, after its first, served from that Pod's prefix cache."""

from __future__ import annotations

import pytest

pytest.importorskip("openai")
pytest.importorskip("httpx2")

from openai_sessions import chat, session_client

from headlesslb.testing import LocalCluster

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the OpenAI SDK's async client runs on asyncio


async def test_conversations_stick_to_their_pod_and_hit_its_cache() -> None:
    with LocalCluster() as cluster:
        cluster.add_statefulset(
            "llm", replicas=3, app="headlesslb.testing._inference_model:app", factory=True
        )
        client = session_client(cluster.client_kwargs())
        try:
            pods = set()
            for n in range(8):
                turns = await chat(client, f"conversation-{n}", turns=3)
                assert len({pod for pod, _ in turns}) == 1  # one Pod per conversation
                assert turns[0][1] == 0 and all(cached > 0 for _, cached in turns[1:])
                pods.add(turns[0][0])
            assert len(pods) > 1  # conversations spread over the Pods
        finally:
            await client.close()
