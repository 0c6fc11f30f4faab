"""OpenAI's SDK sharding conversations over an inference fleet by a session header: each
conversation's turns go to the Pod whose prefix cache holds it, with no headlesslb call in the
request code (the SDK cannot set headlesslb's request extensions; it can send a header).

Run:  python examples/openai_sessions.py
      (pip install 'headlesslb[httpx2,testing]' openai)

The fleet is the local cluster's inference timing model (headlesslb/testing/_inference_model.py:
a prefix cache per Pod, keyed by conversation); the usage's ``cached_tokens`` shows each turn
after the first served from its Pod's cache. In a real cluster, drop the LocalCluster and
``cluster.client_kwargs()``; vLLM's prefix cache is keyed by the prompt's own tokens, which one
conversation's turns share.
"""

from __future__ import annotations

import collections

import anyio
import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from headlesslb import ConsistentHash, KeyFrom, LeastLoaded
from headlesslb.httpx2 import HeadlessTransport
from headlesslb.testing import ClientKwargs, LocalCluster

SERVICE = "llm-hl"


# --8<-- [start:client]
def session_client(discovery: ClientKwargs | None = None) -> openai.AsyncOpenAI:
    """The OpenAI SDK over headlesslb: a request with an ``x-session-id`` header goes to that
    conversation's Pod (Maglev, bounded so a hot conversation cannot swamp one Pod); one without
    goes to the less loaded of two Pods by their own reports (vLLM's ``num_requests_waiting``)."""
    transport = HeadlessTransport(
        SERVICE,
        port="http",
        key_from=KeyFrom.header("x-session-id"),
        sharding=ConsistentHash(balance_factor=1.25),
        picker=LeastLoaded(metric="num_requests_waiting"),
        **(discovery or {}),
    )
    return openai.AsyncOpenAI(
        base_url=f"http://{SERVICE}/v1",
        api_key="unused",
        http_client=httpx2.AsyncClient(transport=transport),
        max_retries=0,  # headlesslb retries, on another Pod
    )
    # --8<-- [end:client]


# --8<-- [start:requests]
async def chat(client: openai.AsyncOpenAI, session: str, turns: int) -> list[tuple[str, int]]:
    """``turns`` turns of one conversation: (the Pod that served it, its cached tokens)."""
    history: list[ChatCompletionMessageParam] = [{"role": "system", "content": "word " * 500}]
    served = []
    for turn in range(turns):
        history.append({"role": "user", "content": f"question {turn} " * 40})
        raw = await client.chat.completions.with_raw_response.create(
            model="any",
            messages=history,
            max_tokens=16,
            extra_headers={"x-session-id": session},  # the SDK's own way to add a header
        )
        completion = raw.parse()
        usage = completion.usage
        cached = 0
        if usage is not None and usage.prompt_tokens_details is not None:
            cached = usage.prompt_tokens_details.cached_tokens or 0
        served.append((raw.headers["x-pod"], cached))
        history.append({"role": "assistant", "content": completion.choices[0].message.content})
    return served
    # --8<-- [end:requests]


async def main() -> None:
    with LocalCluster() as cluster:
        cluster.add_statefulset(
            "llm", replicas=3, app="headlesslb.testing._inference_model:app", factory=True
        )
        client = session_client(cluster.client_kwargs())
        try:
            results: dict[str, list[tuple[str, int]]] = {}

            async def conversation(name: str) -> None:
                results[name] = await chat(client, name, turns=4)

            async with anyio.create_task_group() as group:
                for n in range(6):
                    group.start_soon(conversation, f"conversation-{n}")
            pods: collections.Counter[str] = collections.Counter()
            for name, turns in sorted(results.items()):
                pods.update(pod for pod, _ in turns)
                print(name, " ".join(f"{pod}(cached {cached})" for pod, cached in turns))
            print("turns by Pod:", dict(sorted(pods.items())))
        finally:
            await client.close()


if __name__ == "__main__":  # the local cluster runs in a child process: keep this guard
    anyio.run(main)
