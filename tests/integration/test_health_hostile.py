"""Active health checks against hostile Pods: real sockets that misbehave at the byte level,
next to the real (uvicorn) Pods of a LocalCluster.

A hostile Pod must fail its probes and be marked unhealthy after exactly ``unhealthy_threshold``
probes, while every round completes and the good Pods stay healthy throughout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio
import httpx
import pytest

from headlesslb import HealthCheck, OutlierPolicy
from headlesslb.core.endpoint import Endpoint, Resolution
from headlesslb.core.pool import Pool
from headlesslb.io.health import HealthChecker, probe_once
from headlesslb.testing import LocalCluster
from tests.hostile.raw_pod import RawPod

from .helpers import eventually, make_client, served_by

pytestmark = pytest.mark.anyio

FAILING_MODES = ["trickle", "garbage", "huge_headers", "close_mid_headers", "reset", "silent"]
SRV = "_http._tcp.web-hl.default.svc.cluster.local."


@pytest.fixture
def hostile() -> Iterator[dict[str, RawPod]]:
    """One hostile Pod per failing mode, ``web-9`` … on 127.77.9.x, stopped afterwards."""
    with contextlib.ExitStack() as stack:
        pods = {
            mode: stack.enter_context(RawPod(mode, host=f"127.77.9.{i + 1}", name=f"web-{9 + i}"))
            for i, mode in enumerate(FAILING_MODES)
        }
        yield pods
        for pod in pods.values():
            assert not pod.errors, pod.errors


async def test_hostile_pods_fail_within_their_threshold_and_good_ones_stay_healthy(
    cluster: LocalCluster, hostile: dict[str, RawPod]
) -> None:
    good = [Endpoint(p.ip, p.port, p.name, p.ordinal) for p in cluster.pods("web")]
    bad = {mode: Endpoint(pod.ip, pod.port, pod.name) for mode, pod in hostile.items()}
    check = HealthCheck(interval=0.05, timeout=0.5, unhealthy_threshold=2, healthy_threshold=1)
    with RawPod("endless_body", host="127.77.9.100", name="web-20") as endless:
        streaming = Endpoint(endless.ip, endless.port, endless.name)
        pool = Pool()
        pool.update(Resolution((*good, *bad.values(), streaming), ttl=5))
        results: dict[tuple[str, int], list[bool]] = {}
        flips: list[tuple[tuple[str, int], bool, int]] = []
        set_health = pool.set_health

        def record_flip(key: tuple[str, int], ok: bool) -> None:
            flips.append((key, ok, len(results.get(key, []))))
            set_health(key, ok)

        pool.set_health = record_flip  # type: ignore[method-assign]

        async with httpx.AsyncClient(trust_env=False) as client:

            async def send(endpoint: Endpoint, request: httpx.Request) -> httpx.Response:
                return await client.send(request, stream=True)

            async def probe(endpoint: Endpoint) -> bool:
                return await probe_once(send, endpoint, check)

            checker = HealthChecker(check, pool, probe)
            observe = checker.tracker.observe

            def record(key: tuple[str, int], passed: bool) -> bool | None:
                results.setdefault(key, []).append(passed)  # every verdict, timeouts included
                return observe(key, passed)

            checker.tracker.observe = record  # type: ignore[method-assign]
            async with anyio.create_task_group() as tg:
                await tg.start(checker.run)
                states = lambda: {s.key: s for s in pool.snapshot.members}  # noqa: E731
                await eventually(
                    lambda: not any(states()[e.key].health_ok for e in bad.values()), within=30
                )
                rounds = checker.rounds
                await eventually(lambda: checker.rounds >= rounds + 2, within=30)  # still going
                tg.cancel_scope.cancel()

        # Each hostile Pod failed every probe and flipped after exactly unhealthy_threshold.
        for mode, endpoint in bad.items():
            assert results[endpoint.key] and not any(results[endpoint.key]), mode
            assert flips.count((endpoint.key, False, check.unhealthy_threshold)) == 1, mode
        # The good Pods were never marked unhealthy and are healthy now.
        assert not [f for f in flips if f[0] in {e.key for e in good}]
        assert all(states()[e.key].health_ok for e in good)
        assert all(len(results[e.key]) >= 4 for e in good)
        # An endless 200 passes by its status, but the probe hangs up after a bounded read
        # instead of reading on until the timeout (which would have failed it): it passed each time.
        assert results[streaming.key] and all(results[streaming.key])
        endless.wait_until(lambda p: p.peer_closed >= len(results[streaming.key]))
    health = cluster.stats()["health"]
    assert all(health[e.hostname] >= 4 for e in good)


async def test_hostile_pods_in_dns_are_health_checked_out(
    cluster: LocalCluster, hostile: dict[str, RawPod]
) -> None:
    for pod in hostile.values():
        target = f"{pod.name}.web-hl.default.svc.cluster.local."
        cluster.add_record(target, "A", pod.ip)
        cluster.add_record(SRV, "SRV", f"0 100 {pod.port} {target}")
    check = HealthCheck(interval=0.1, timeout=1.0, unhealthy_threshold=2)
    # No panic mode: with 3 good Pods of 9, it would send traffic to the hostile ones.
    outlier = OutlierPolicy(panic_threshold=0)
    hostile_names = {pod.name for pod in hostile.values()}
    async with make_client(cluster, health=check, outlier=outlier) as client:

        def verdicts() -> dict[str, bool]:
            return {s.hostname or "": s.healthy for s in client.endpoints()}

        async def hostile_out() -> bool:
            seen = verdicts()
            return hostile_names <= set(seen) and not any(seen[name] for name in hostile_names)

        await eventually(hostile_out, within=30)
        assert all(verdicts()[name] for name in ("web-0", "web-1", "web-2"))
        served = await served_by(client, 12)  # every one a 200
        assert set(served) <= {"web-0", "web-1", "web-2"}
    assert all(pod.requests >= check.unhealthy_threshold for pod in hostile.values())
