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

Then (``--rolling``, on by default) a rolling update of another Deployment's ``--pods`` Pods
under ``--roll-rate`` (200) requests per second through an EndpointSlices client: each old
Pod is replaced by a new one listed ready, marked terminating (still serving) for ``--drain``
seconds, then removed from the slice and stopped. Reported: failed requests, requests
retried, and requests started after the client showed a Pod terminating that went to it.

    python benchmarks/endpointslices.py [--trials 20] [--rate 50] [--workers 5] [--ttl 5]
        [--no-rolling] [--roll-rate 200] [--roll-workers 10] [--drain 1]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _common import kubeapi_binaries, print_table, write_results

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


def slice_entries(pods: list[PodInfo], terminating: PodInfo | None = None) -> list[dict[str, Any]]:
    return [
        endpoint(
            p.ip,
            ready=p != terminating,
            serving=True,
            terminating=p == terminating,
            target_ref={"kind": "Pod", "name": p.name},
        )
        for p in pods
    ]


class Recorder:
    """A steady load recording every request: when it started, where it went, how it ended."""

    def __init__(self, client: HeadlessClient, rate: float, workers: int) -> None:
        self.client = client
        self.interval = workers / rate
        self.workers = workers
        self.records: list[tuple[float, str | None, bool, int]] = []
        """(start, endpoint, ok, attempts) per request."""

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for index in range(self.workers):
                tg.start_soon(self._worker, index)

    async def _worker(self, index: int) -> None:
        next_at = time.monotonic() + index * self.interval / self.workers
        while True:
            start = time.monotonic()
            try:
                response = await self.client.get("/")
                report = response.extensions["headlesslb"]
                ok = response.status_code == 200
                self.records.append((start, report["endpoint"], ok, len(report["attempts"])))
            except Exception:
                self.records.append((start, None, False, 0))
            next_at += self.interval
            await anyio.sleep(max(0.0, next_at - time.monotonic()))


async def rolling(args: argparse.Namespace, bed: KubeAPI, cluster: LocalCluster) -> dict[str, Any]:
    """A rolling update of Deployment ``roll`` under ``--roll-rate`` req/s: for each old Pod, a
    new one is started and listed ready, the old one marked terminating (still serving) and,
    ``--drain`` seconds later, removed from the slice and stopped (as after a preStop sleep)."""
    old = cluster.add_deployment("roll", args.pods, headless=None, lb=None)
    port = old[0].port
    listed = list(old)
    bed.create_slice(
        NAMESPACE,
        "roll-1",
        service="roll",
        endpoints=slice_entries(listed),
        ports=[endpoint_port(port, name="http")],
    )
    api = KubeAPIConfig(bed.base_url, token=bed.token, ca_file=str(bed.ca_file))
    client = HeadlessClient(
        "roll", port="http", namespace=NAMESPACE, discovery=EndpointSlices(api=api)
    )
    recorder = Recorder(client, args.roll_rate, args.roll_workers)
    seen: dict[str, float] = {}
    async with client, anyio.create_task_group() as tg:
        tg.start_soon(recorder.run)
        await anyio.sleep(args.warmup)
        for count, victim in enumerate(old, start=1):
            pods = await anyio.to_thread.run_sync(cluster.scale, "roll", args.pods + count)
            new = pods[-1]
            listed.append(new)
            await anyio.to_thread.run_sync(
                bed.set_endpoints, NAMESPACE, "roll-1", slice_entries(listed, victim)
            )
            with anyio.fail_after(10):
                while not any(s.ip == victim.ip and s.terminating for s in client.endpoints()):
                    await anyio.sleep(0.002)
            seen[f"{victim.ip}:{victim.port}"] = time.monotonic()
            await anyio.sleep(args.drain)
            listed.remove(victim)
            await anyio.to_thread.run_sync(
                bed.set_endpoints, NAMESPACE, "roll-1", slice_entries(listed)
            )
            with anyio.fail_after(10):
                while any(s.ip == victim.ip for s in client.endpoints()):
                    await anyio.sleep(0.002)
            await anyio.to_thread.run_sync(cluster.kill, victim.name)
        await anyio.sleep(1.0)
        tg.cancel_scope.cancel()
    records = recorder.records
    after_seen = sum(1 for start, where, _, _ in records if where in seen and start > seen[where])
    span = records[-1][0] - records[0][0] if records else 0.0
    return {
        "discovery": "endpointslices",
        "pods_replaced": len(old),
        "requests": len(records),
        "rate_req_s": len(records) / span if span else math.nan,
        "failed": sum(1 for _, _, ok, _ in records if not ok),
        "retried": sum(1 for *_, attempts in records if attempts > 1),
        "to_terminating_after_seen": after_seen,
    }


async def main(args: argparse.Namespace) -> None:
    paths = kubeapi_binaries("endpointslices.py")
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

        roll = await rolling(args, bed, cluster) if args.rolling else None

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
    if roll is not None:
        print_table([roll], title="Rolling update, terminating Pods drained")
    write_results(
        "endpointslices",
        rows,
        target={"endpointslices_p95_s": 1.0, "failed": 0, "to_terminating_after_seen": 0},
        params=vars(args),
        delays=delays,
        listed=seen,
        rolling=roll,
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
    parser.add_argument("--rolling", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--roll-rate", type=float, default=200.0, help="requests/s")
    parser.add_argument("--roll-workers", type=int, default=10)
    parser.add_argument("--drain", type=float, default=1.0, help="seconds terminating")
    anyio.run(main, parser.parse_args())
