"""``headlesslb demo``: a narrated tour over an embedded local cluster (no Kubernetes needed).

Starts a LocalCluster with StatefulSet ``web`` (headless ``web-hl`` + LB ``web-lb``), sends steady
traffic through one HeadlessClient and prints, once a second, which Pod served how many requests,
while the cluster scales and the headless Service disappears and comes back.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import httpx

from .client import HeadlessClient

__all__ = ["run_demo"]

FALLBACK = "(fallback)"
FAILED = "(failed)"


class _Traffic:
    """Steady GET load; counts who served what in the current one-second window."""

    def __init__(self, client: HeadlessClient, rate: float) -> None:
        self.client = client
        self.interval = 1.0 / rate
        self.window: collections.Counter[str] = collections.Counter()
        self.total: collections.Counter[str] = collections.Counter()

    async def run(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            try:
                response = await self.client.get("/demo")
                info = response.extensions["headlesslb"]
                who = FALLBACK if info["fallback"] else str(response.json()["pod"])
                if response.is_error:
                    who = FAILED
            except httpx.HTTPError:
                who = FAILED
            self.window[who] += 1
            self.total[who] += 1

    def take_window(self) -> collections.Counter[str]:
        window, self.window = self.window, collections.Counter()
        return window


def _say(text: str) -> None:
    print(f"\n>>> {text}", flush=True)


def _line(elapsed: float, window: collections.Counter[str]) -> str:
    parts = [f"{name}={window[name]:>3}" for name in sorted(window)]
    return f"  t={elapsed:5.1f}s  " + "  ".join(parts)


async def _demo(fast: bool) -> int:
    from .testing import LocalCluster

    phase = 4.0 if fast else 6.0
    start = time.monotonic()
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        _say(
            "Local cluster up: StatefulSet 'web' (3 Pods), headless Service 'web-hl',"
            f" LoadBalancer Service 'web-lb'; DNS at {cluster.nameserver}, TTL {cluster.ttl} s."
        )
        async with HeadlessClient(
            "web-hl",
            port="http",
            fallback="web-lb",
            nameservers=[cluster.nameserver],
            namespace=cluster.namespace,
            cluster_domain=cluster.domain,
        ) as client:
            traffic = _Traffic(client, rate=40.0)

            async def watch(
                seconds: float, until: Callable[[collections.Counter[str]], bool] | None = None
            ) -> None:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    await anyio.sleep(1.0)
                    window = traffic.take_window()
                    print(_line(time.monotonic() - start, window), flush=True)
                    if until is not None and until(window):
                        return

            async def script() -> None:
                _say("Steady traffic through HeadlessClient('web-hl'): every Pod gets its share.")
                await watch(phase)
                _say("Scaling web to 5 Pods: new Pods get traffic at the next DNS refresh.")
                cluster.scale("web", 5)
                await watch(phase * 2, until=lambda w: w["web-3"] > 0 and w["web-4"] > 0)
                await watch(2)
                _say(
                    "Deleting the headless Service web-hl: DNS says NXDOMAIN, traffic moves to"
                    " the fallback LoadBalancer Service web-lb."
                )
                cluster.delete_service("web-hl")
                await watch(phase * 2, until=lambda w: w[FALLBACK] > 0 and len(w) == 1)
                await watch(2)
                _say("Recreating web-hl: traffic returns to the Pods directly.")
                cluster.create_service("web-hl")
                await watch(phase * 2, until=lambda w: w[FALLBACK] == 0 and len(w) >= 5)
                await watch(2)

            await _race(traffic.run, script)
            totals = traffic.total
            _say("Done. Requests per target over the whole demo:")
            for name in sorted(totals):
                print(f"  {name:<12} {totals[name]:>5}")
            print(f"  failed requests: {totals[FAILED]}")
            return 0 if totals[FAILED] == 0 else 1


async def _race(
    background: Callable[[], Coroutine[Any, Any, None]],
    foreground: Callable[[], Coroutine[Any, Any, None]],
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(background)
        await foreground()
        tg.cancel_scope.cancel()


def run_demo(fast: bool = False) -> int:
    """Run the demo; returns the process exit code."""
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        print(
            "the demo needs the local cluster: pip install 'headlesslb[testing]'", file=sys.stderr
        )
        return 2
    return anyio.run(_demo, fast)
