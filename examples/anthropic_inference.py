"""Anthropic's SDK over headlesslb, blocking: threads sharing one client in front of a fleet of
Anthropic-compatible Pods, on an embedded local cluster.

Run:  python examples/anthropic_inference.py
      (pip install 'headlesslb[httpx2,testing]' anthropic; or after `make test` made .venv)

The blocking SDK takes an ``httpx2.Client``; headlesslb's blocking httpx2 transport goes under
it, starts on the first request (from any thread) and is shared safely by every thread. In a
real cluster, drop the LocalCluster and ``cluster.client_kwargs()``.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx2

from headlesslb import RetryPolicy
from headlesslb.core.retry import IDEMPOTENT_METHODS
from headlesslb.httpx2.sync import HeadlessTransport
from headlesslb.testing import LocalCluster


def main() -> None:
    with LocalCluster() as cluster:
        # Three Pods serving Anthropic's Messages API; each names itself in its answers.
        cluster.add_statefulset(
            "claude", replicas=3, app="headlesslb.testing:inference_app", factory=True
        )
        transport = HeadlessTransport(
            "claude-hl",
            port="http",
            picker="least_request",
            retry=RetryPolicy(deadline=60.0, idempotent_methods=IDEMPOTENT_METHODS | {"POST"}),
            **cluster.client_kwargs(),
        )
        client = anthropic.Anthropic(
            base_url="http://claude-hl",  # the Service's name; the SDK adds /v1/messages
            api_key="unused",
            http_client=httpx2.Client(transport=transport),
            max_retries=0,  # headlesslb retries, on another Pod (docs/sdks.md says why)
        )
        try:

            def ask(question: str) -> str:
                message = client.messages.create(
                    model="headlesslb-echo",
                    max_tokens=3,
                    messages=[{"role": "user", "content": question}],
                )
                block = message.content[0]
                return block.text if block.type == "text" else ""

            with ThreadPoolExecutor(max_workers=6) as threads:
                answers = list(threads.map(ask, [f"question {n}" for n in range(18)]))
            served = collections.Counter(answer.partition(":")[0] for answer in answers)
            print("18 messages from 6 threads, by Pod:", dict(sorted(served.items())))

            with client.messages.stream(
                model="headlesslb-echo",
                max_tokens=6,
                messages=[{"role": "user", "content": "stream please"}],
            ) as stream:
                print("streamed:", "".join(stream.text_stream))
            print("in flight after the stream:", sum(e.in_flight for e in transport.endpoints()))
        finally:
            client.close()  # closes the httpx2 client, which closes the transport


if __name__ == "__main__":  # the local cluster runs in a child process: keep this guard
    main()
