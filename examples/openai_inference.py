"""OpenAI's SDK over headlesslb: an inference client balancing over a fleet of OpenAI-compatible
Pods (vLLM, TGI, llama.cpp behind a headless Service), on an embedded local cluster.

Run:  python examples/openai_inference.py
      (pip install 'headlesslb[httpx2,testing]' openai; or after `make test` made .venv)

The SDK takes an httpx2 client; headlesslb's httpx2 transport goes under it. The SDK never
enters its client, so the transport starts on the first request. Its ``max_retries=0`` leaves the
retries to headlesslb, which retries on another Pod within one deadline and a retry budget
(docs/sdks.md says why, and what to set instead when you keep the SDK's).

In a real cluster, drop the LocalCluster and ``cluster.client_kwargs()``: headlesslb reads the
Pod's /etc/resolv.conf and namespace like any in-cluster client.
"""

from __future__ import annotations

import collections

import anyio
import httpx2
import openai
from openai.types.chat import ChatCompletionMessageParam

from headlesslb import RetryPolicy
from headlesslb.core.retry import IDEMPOTENT_METHODS
from headlesslb.httpx2 import HeadlessTransport
from headlesslb.testing import ClientKwargs, LocalCluster

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Which Pod are you?"}]

# --8<-- [start:client]
SERVICE = "vllm-hl"  # the headless Service in front of the inference Pods


def inference_client(
    discovery: ClientKwargs | None = None,
) -> tuple[openai.AsyncOpenAI, HeadlessTransport]:
    """The OpenAI SDK over headlesslb's httpx2 transport, balancing over ``vllm-hl``'s Pods.

    ``discovery`` points it at a local cluster's DNS; in a Pod, leave it out."""
    transport = HeadlessTransport(
        SERVICE,
        port="http",
        picker="least_request",  # a long generation or stream keeps its Pod busy
        # Generation has no side effect: a POST may be retried on another Pod, under one
        # deadline for the whole call (until the answer's headers).
        retry=RetryPolicy(deadline=60.0, idempotent_methods=IDEMPOTENT_METHODS | {"POST"}),
        **(discovery or {}),
    )
    client = openai.AsyncOpenAI(
        base_url=f"http://{SERVICE}/v1",  # the Service's name: its Pods answer
        api_key="unused",
        http_client=httpx2.AsyncClient(transport=transport),  # never entered: starts on use
        max_retries=0,  # headlesslb retries, on another Pod (docs/sdks.md says why)
    )
    return client, transport
    # --8<-- [end:client]


async def main() -> None:
    with LocalCluster() as cluster:
        # Three Pods serving an OpenAI-compatible API; each names itself in its answers.
        cluster.add_deployment(
            "vllm", replicas=3, app="headlesslb.testing:inference_app", factory=True
        )
        client, transport = inference_client(cluster.client_kwargs())
        try:
            served: collections.Counter[str] = collections.Counter()

            async def ask() -> None:
                completion = await client.chat.completions.create(
                    model="headlesslb-echo", messages=PROMPT, max_completion_tokens=4
                )
                text = completion.choices[0].message.content or ""
                served[text.partition(":")[0]] += 1

            async with anyio.create_task_group() as group:
                for _ in range(24):
                    group.start_soon(ask)
            print("24 chat completions, by Pod:", dict(sorted(served.items())))

            stream = await client.chat.completions.create(
                model="headlesslb-echo", messages=PROMPT, max_completion_tokens=8, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            print("streamed:", text)

            for endpoint in transport.endpoints():
                print(
                    f"  {endpoint.ip}:{endpoint.port} requests={endpoint.requests}"
                    f" in_flight={endpoint.in_flight}"
                )
        finally:
            await client.close()  # closes the httpx2 client, which closes the transport


if __name__ == "__main__":  # the local cluster runs in a child process: keep this guard
    anyio.run(main)
