"""``headlesslb demo``: a narrated tour over an embedded local cluster (no Kubernetes needed).

Starts a LocalCluster with StatefulSet ``web`` (headless ``web-hl`` + LB ``web-lb``), sends steady
traffic through one HeadlessClient (least-request balancing) and prints, once a second, which Pod
served how many requests, how many were retried and which Pods are ejected, while the cluster
scales, a Pod dies and comes back, a Pod turns slow, and the headless Service disappears and
comes back.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import httpx

from .aio.client import HeadlessClient
from .core.pool import OutlierPolicy

__all__ = ["run_demo"]

FALLBACK = "(fallback)"
FAILED = "(failed)"
RETRIED = "(retried)"


class _Traffic:
    """Steady GET load from a few concurrent workers; counts who served what, per second."""

    def __init__(self, client: HeadlessClient, rate: float, workers: int = 4) -> None:
        self.client = client
        self.workers = workers
        self.interval = workers / rate
        self.window: collections.Counter[str] = collections.Counter()
        self.total: collections.Counter[str] = collections.Counter()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self.workers):
                tg.start_soon(self._worker)

    async def _worker(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            try:
                response = await self.client.get("/demo")
                info = response.extensions["headlesslb"]
                who = FALLBACK if info["fallback"] else str(response.json()["pod"])
                if response.is_error:
                    who = FAILED
                elif len(info["attempts"]) > 1:
                    self.window[RETRIED] += 1
                    self.total[RETRIED] += 1
            except httpx.HTTPError:
                who = FAILED
            self.window[who] += 1
            self.total[who] += 1

    def take_window(self) -> collections.Counter[str]:
        window, self.window = self.window, collections.Counter()
        return window


def _say(text: str) -> None:
    print(f"\n>>> {text}", flush=True)


def _line(elapsed: float, window: collections.Counter[str], ejected: list[str]) -> str:
    parts = [f"{name}={window[name]:>3}" for name in sorted(window)]
    out = f"  t={elapsed:5.1f}s  " + "  ".join(parts)
    return out + (f"   ejected: {', '.join(ejected)}" if ejected else "")


async def _demo(fast: bool) -> int:
    from .testing import LocalCluster

    # --fast (the suite's run) keeps every phase but shortens the waits: a 1 s TTL makes DNS
    # changes show within a second instead of five.
    phase, tick, ttl = (2.0, 0.5, 1) if fast else (6.0, 1.0, 5)
    start = time.monotonic()
    with LocalCluster(ttl=ttl) as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        _say(
            "Local cluster up: StatefulSet 'web' (3 Pods), headless Service 'web-hl',"
            f" LoadBalancer Service 'web-lb'; DNS at {cluster.nameserver}, TTL {cluster.ttl} s."
        )
        async with HeadlessClient(
            "web-hl",
            port="http",
            fallback="web-lb",
            picker="least_request",
            # Short ejections so the demo shows a Pod coming back within its minute.
            outlier=OutlierPolicy(base_ejection=3.0),
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
                    await anyio.sleep(tick)
                    window = traffic.take_window()
                    ejected = [str(s.hostname) for s in client.endpoints() if not s.healthy]
                    print(_line(time.monotonic() - start, window, ejected), flush=True)
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
                    "Killing web-1's server (DNS still lists it): requests that hit it are"
                    " retried on another Pod, and web-1 is ejected. No request fails."
                )
                cluster.kill("web-1")
                await watch(phase)
                _say("Restarting web-1: when its ejection ends it gets traffic again.")
                cluster.restart("web-1")
                await watch(phase * 2, until=lambda w: w["web-1"] > 0)
                await watch(1)
                _say(
                    "web-2 turns slow (+100 ms): least-request sees its requests pile up and"
                    " sends it far fewer."
                )
                cluster.slow("web-2", 0.1)
                await watch(phase)
                cluster.slow("web-2", 0.0)
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
