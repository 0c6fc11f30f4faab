"""New Pod to first request: EndpointSlice discovery and DNS discovery side by side, one run.

A LocalCluster (DNS TTL ``--ttl``, 5 s: the CoreDNS default) runs Deployment ``web`` behind the
headless Service ``web-hl``; the kubeapi bed (etcd and Kubernetes' own API machinery, built by
``make kubeapi``) holds an EndpointSlice of Service ``web`` listing the same Pods. Two async
clients run at once, each carrying ``--rate`` requests per second from ``--workers`` workers:
one on DNS (``HeadlessClient("web-hl", port="http")``), one on EndpointSlices
(``discovery=EndpointSlices(...)``).

Each of ``--trials`` trials scales the Deployment up by one Pod (``scale`` returns once it
listens: it is in DNS from then on) and, at once, adds it to the slice, as the EndpointSlice
controller would once the Pod is ready; the clock starts when ``scale`` returns. The trial ends
when both clients have had a response from the new Pod (or after ``--timeout``); a random
pause (up to one TTL) before each trial keeps trials from starting in step with the DNS
client's refreshes. Per discovery: the time from the Pod's start until the client lists it
(``listed_p95_s``, polled every 10 ms) and until its first response from it (p50 / p95 / max
over the trials: listing plus the wait for the Pod's turn in round robin, about
``pods / rate`` seconds at most), and failed requests. On a cluster the EndpointSlice
controller's own delay comes on top for both (CoreDNS reads the same slices), so the
difference is what the client adds.

    python benchmarks/endpointslices.py [--trials 20] [--rate 50] [--workers 5] [--ttl 5]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _common import print_table, write_results

from headlesslb import EndpointSlices, HeadlessClient, KubeAPIConfig
from headlesslb.testing import LocalCluster, PodInfo
from headlesslb.testing._kubeapi import KubeAPI, endpoint, endpoint_port

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "default"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, nearest rank (with 20 trials, p95 is the 19th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def binaries() -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "kubeapi" / "build.py"), "--offline", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"the kubeapi bed is not built (make kubeapi): {result.stderr.strip()}")
    manifest = json.loads(result.stdout)
    return {"server": manifest["server"], "etcd": manifest["etcd"]}


class Load:
    """One client's steady load; notes when each Pod first answered it."""

    def __init__(self, client: HeadlessClient, rate: float, workers: int) -> None:
        self.client = client
        self.interval = workers / rate
        self.workers = workers
        self.first: dict[str, float] = {}
        self.requests = 0
        self.failed = 0

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for index in range(self.workers):
                tg.start_soon(self._worker, index)

    async def _worker(self, index: int) -> None:
        next_at = time.monotonic() + index * self.interval / self.workers
        while True:
            try:
                response = await self.client.get("/")
                endpoint = response.extensions["headlesslb"]["endpoint"]
                self.requests += 1
                if response.status_code != 200:
                    self.failed += 1
                elif endpoint is not None and endpoint not in self.first:
                    self.first[endpoint] = time.monotonic()
            except Exception:
                self.requests += 1
                self.failed += 1
            next_at += self.interval
            await anyio.sleep(max(0.0, next_at - time.monotonic()))


def slice_entries(pods: list[PodInfo]) -> list[dict[str, Any]]:
    return [endpoint(p.ip, target_ref={"kind": "Pod", "name": p.name}) for p in pods]


async def main(args: argparse.Namespace) -> None:
    paths = binaries()
    with (
        tempfile.TemporaryDirectory() as workdir,
        KubeAPI(paths["server"], paths["etcd"], workdir=Path(workdir)) as bed,
        LocalCluster(ttl=args.ttl) as cluster,
    ):
        pods = cluster.add_deployment("web", args.pods, lb=None)
        port = pods[0].port
        await anyio.to_thread.run_sync(
            lambda: bed.create_slice(
                NAMESPACE,
                "web-1",
                service="web",
                endpoints=slice_entries(pods),
                ports=[endpoint_port(port, name="http")],
            )
        )
        api = KubeAPIConfig(bed.base_url, token=bed.token, ca_file=str(bed.ca_file))
        dns_client = HeadlessClient("web-hl", port="http", **cluster.client_kwargs(NAMESPACE))
        slices_client = HeadlessClient(
            "web", port="http", namespace=NAMESPACE, discovery=EndpointSlices(api=api)
        )
        loads = {
            "dns": Load(dns_client, args.rate, args.workers),
            "endpointslices": Load(slices_client, args.rate, args.workers),
        }
        delays: dict[str, list[float]] = {name: [] for name in loads}
        missed: dict[str, int] = dict.fromkeys(loads, 0)
        seen: dict[str, list[float]] = {name: [] for name in loads}
        seen_at: dict[str, float] = {}
        rng = random.Random(args.seed)
        async with dns_client, slices_client, anyio.create_task_group() as tg:
            for load in loads.values():
                tg.start_soon(load.run)
            await anyio.sleep(args.warmup)
            for trial in range(args.trials):
                # A random phase: trials that began right after the DNS client's refresh (the
                # previous trial ends when it sees a Pod) would all wait a whole TTL.
                await anyio.sleep(rng.uniform(0, args.ttl))
                pods = await anyio.to_thread.run_sync(cluster.scale, "web", args.pods + trial + 1)
                started = time.monotonic()
                new = pods[-1]
                await anyio.to_thread.run_sync(
                    bed.set_endpoints, NAMESPACE, "web-1", slice_entries(pods)
                )
                key = f"{new.ip}:{new.port}"
                deadline = started + args.timeout
                while time.monotonic() < deadline and not all(
                    key in load.first for load in loads.values()
                ):
                    now = time.monotonic()
                    for name, load in loads.items():
                        if name not in seen_at and any(
                            s.ip == new.ip for s in load.client.endpoints()
                        ):
                            seen_at[name] = now
                    await anyio.sleep(0.01)
                for name, load in loads.items():
                    if key in load.first:
                        delays[name].append(load.first[key] - started)
                        seen[name].append(seen_at.get(name, load.first[key]) - started)
                    else:
                        missed[name] += 1
                seen_at.clear()
                print(
                    f"trial {trial + 1}: "
                    + ", ".join(
                        f"{name} {load.first.get(key, math.nan) - started:.3f} s"
                        for name, load in loads.items()
                    )
                )
            tg.cancel_scope.cancel()

    rows = [
        {
            "discovery": name,
            "trials": args.trials,
            "listed_p95_s": percentile(seen[name], 95),
            "p50_s": percentile(delays[name], 50),
            "p95_s": percentile(delays[name], 95),
            "max_s": max(delays[name], default=math.nan),
            "missed": missed[name],
            "requests": loads[name].requests,
            "failed": loads[name].failed,
        }
        for name in loads
    ]
    print_table(rows, title=f"New Pod to first response (s), DNS TTL {args.ttl} s")
    write_results(
        "endpointslices",
        rows,
        target={"endpointslices_p95_s": 1.0, "failed": 0},
        params=vars(args),
        delays=delays,
        listed=seen,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--pods", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s per client")
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=1)
    anyio.run(main, parser.parse_args())
