"""Zone-aware picking against zone-unaware, side by side in one run, on EndpointSlices.

Real requests through real clients to real Pods: a LocalCluster Deployment (HTTP servers on
127.x.y.z) listed, zone by zone, in an EndpointSlice on the kubeapi bed (etcd and Kubernetes'
own API machinery, built by ``make kubeapi``). Each layout gives zones ``a``, ``b`` and ``c`` a
number of Pods (``3/3/3``, ``2/4/3``) and runs three fleets of three async clients at once,
one client per zone, on the same Pods (``share_discovery=False``: each client is a process of its
own zone, with its own watch and round robin, as in a cluster):

- ``zone``: zone-aware, ``EndpointSlices(zone=<its zone>)`` (``max_zone_overload`` 1.5, the
  default);
- ``flat``: zone-unaware, the same client without ``zone=``;
- ``stay``: zone-aware that never spills while a local Pod is ready (``max_zone_overload``
  1000): what spilling saves the last local Pods.

Each fleet carries ``--per-pod`` requests per second per Pod of the Service from
``--workers`` workers per client. Its clients' rates follow the Pods (zone ``a`` of ``2/4/3``
sends 2/9 of the requests), as the zone rule assumes; a layout ending in ``:even`` gives each
zone's client the same rate instead, which the rule does not assume.

Scenarios, one row each, for zone ``a`` with ``L`` Pods: all healthy; ``k`` of the ``L`` local
Pods not ready, for every ``k`` < ``L`` (listed ``ready: false``, and answering 503 once the
clients have seen it, so a request that reached one would show); the local zone down (every
local Pod not ready and its server stopped); recovered (all ready again). Each row waits until
every client lists the new Pods, then measures ``--seconds``. Columns, ``_<fleet>`` for each:

- ``a_local``: the share (%) of zone ``a``'s client's attempts that went to zone ``a``'s Pods;
- ``local``: the same over the whole fleet (each client in its own zone);
- ``max_mean``: the busiest Pod's attempts (from every client of the fleet) over the mean of
  the Pods that are ready: 1.00 is even, 1.33 a Pod with a third more than its share;
- ``a_pods_mean``: zone ``a``'s ready Pods' mean over the same mean (their load against
  balanced);
- ``failed``: requests that did not get a 200, from the change to the end of the row;
  ``unready``: attempts of any fleet that reached a not-ready or stopped Pod while measured.

``rule`` is what the zone rule computes for zone ``a``'s client (``headlesslb/core/zones.py``):
``(local Pods / local ready) × (ready / Pods)``; it stays in its zone while that is at most 1.5.

    python benchmarks/zones.py [--layouts 3/3/3,2/4/3,2/4/3:even] [--seconds 4] [--per-pod 15]
        [--workers 4]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
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
ZONES = ("a", "b", "c")
MAX_OVERLOAD = 1.5
NEVER = 1000.0
MODES = {"zone": MAX_OVERLOAD, "flat": None, "stay": NEVER}
"""Each fleet's ``max_zone_overload``; None: no zone."""


@dataclass
class Layout:
    name: str
    pods: dict[str, int]
    """Pods per zone."""
    weights: dict[str, float]
    """Each zone's client's share of the fleet's requests."""

    @classmethod
    def parse(cls, text: str) -> Layout:
        counts, _, clients = text.partition(":")
        pods = dict(zip(ZONES, map(int, counts.split("/")), strict=True))
        if clients not in ("", "even") or min(pods.values()) < 1:
            raise ValueError(f"a layout is like 3/3/3 or 2/4/3:even, not {text!r}")
        total = sum(pods.values())
        weights = {z: 1 / len(ZONES) if clients else pods[z] / total for z in ZONES}
        return cls(text, pods, weights)


@dataclass
class Record:
    start: float
    ok: bool
    attempts: list[str]
    """``ip:port`` of every attempt, in order."""


@dataclass
class Fleet:
    """One client per zone, each a steady load, every request recorded."""

    mode: str
    clients: dict[str, HeadlessClient]
    rates: dict[str, float]
    workers: int
    records: dict[str, list[Record]] = field(default_factory=dict)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for zone, client in self.clients.items():
                self.records[zone] = []
                interval = self.workers / self.rates[zone]
                for index in range(self.workers):
                    tg.start_soon(self._worker, zone, client, interval, index)

    async def _worker(self, zone: str, client: HeadlessClient, interval: float, index: int) -> None:
        records = self.records[zone]
        next_at = time.monotonic() + index * interval / self.workers
        while True:
            start = time.monotonic()
            try:
                response = await client.get("/")
                attempts = [a["endpoint"] for a in response.extensions["headlesslb"]["attempts"]]
                records.append(Record(start, response.status_code == 200, attempts))
            except Exception:
                records.append(Record(start, False, []))
            next_at += interval
            await anyio.sleep(max(0.0, next_at - time.monotonic()))


@dataclass
class Scenario:
    name: str
    not_ready: int
    """Local Pods not ready (answering 503)."""
    down: bool = False
    """Every local Pod not ready and stopped."""


def scenarios(local: int) -> list[Scenario]:
    made = [Scenario("all healthy", 0)]
    made += [Scenario(f"{k} of {local} local not ready", k) for k in range(1, local)]
    made += [Scenario("local zone down", local, down=True), Scenario("recovered", 0)]
    return made


def key(pod: PodInfo) -> str:
    return f"{pod.ip}:{pod.port}"


def entries(zone_of: dict[str, str], pods: list[PodInfo], unready: set[str]) -> list[Any]:
    return [
        endpoint(
            p.ip,
            ready=key(p) not in unready,
            zone=zone_of[key(p)],
            target_ref={"kind": "Pod", "name": p.name},
        )
        for p in pods
    ]


def measure(
    fleet: Fleet,
    zone_of: dict[str, str],
    ready: set[str],
    unready: set[str],
    changed: float,
    start: float,
    end: float,
) -> dict[str, Any]:
    """One fleet's figures over [start, end) (failures over [changed, end))."""
    load = dict.fromkeys(ready, 0)
    requests = failed = local = attempts = unready_hits = 0
    a_local = a_attempts = 0
    for zone, records in fleet.records.items():
        for record in records:
            if changed <= record.start < end and not record.ok:
                failed += 1
            if not start <= record.start < end:
                continue
            requests += 1
            for where in record.attempts:
                attempts += 1
                if where in load:
                    load[where] += 1
                if where in unready:
                    unready_hits += 1
                same = zone_of.get(where) == zone
                local += same
                if zone == "a":
                    a_attempts += 1
                    a_local += same
    mean = sum(load.values()) / len(load)
    a_pods = [n for where, n in load.items() if zone_of[where] == "a"]
    return {
        "requests": requests,
        "a_local": 100 * a_local / a_attempts if a_attempts else math.nan,
        "local": 100 * local / attempts if attempts else math.nan,
        "max_mean": max(load.values()) / mean if mean else math.nan,
        "a_pods_mean": (sum(a_pods) / len(a_pods)) / mean if a_pods and mean else None,
        "failed": failed,
        "unready": unready_hits,
        "per_pod": {f"{zone_of[w]} {w}": n for w, n in sorted(load.items())},
    }


async def run_layout(
    args: argparse.Namespace, bed: KubeAPI, cluster: LocalCluster, layout: Layout, index: int
) -> list[dict[str, Any]]:
    service = f"zones{index}"
    total = sum(layout.pods.values())
    pods = await anyio.to_thread.run_sync(
        lambda: cluster.add_deployment(service, total, headless=None, lb=None)
    )
    zone_of: dict[str, str] = {}
    by_zone: dict[str, list[PodInfo]] = {}
    rest = iter(pods)
    for zone in ZONES:
        by_zone[zone] = [next(rest) for _ in range(layout.pods[zone])]
        zone_of.update((key(p), zone) for p in by_zone[zone])
    local = by_zone["a"]
    await anyio.to_thread.run_sync(
        lambda: bed.create_slice(
            NAMESPACE,
            f"{service}-1",
            service=service,
            endpoints=entries(zone_of, pods, set()),
            ports=[endpoint_port(pods[0].port, name="http")],
        )
    )
    api = KubeAPIConfig(bed.base_url, token=bed.token, ca_file=str(bed.ca_file))
    rates = {z: args.per_pod * total * layout.weights[z] for z in ZONES}
    fleets = {
        mode: Fleet(
            mode,
            {
                zone: HeadlessClient(
                    service,
                    port="http",
                    namespace=NAMESPACE,
                    discovery=EndpointSlices(api=api)
                    if overload is None
                    else EndpointSlices(api=api, zone=zone, max_zone_overload=overload),
                    share_discovery=False,
                )
                for zone in ZONES
            },
            rates,
            args.workers,
        )
        for mode, overload in MODES.items()
    }
    clients = [c for fleet in fleets.values() for c in fleet.clients.values()]
    rows: list[dict[str, Any]] = []

    async def seen(count: int) -> None:
        with anyio.fail_after(10):
            while any(len(c.endpoints()) != count for c in clients):
                await anyio.sleep(0.005)

    unready: set[str] = set()
    stopped: set[str] = set()
    async with anyio.create_task_group() as tg:
        for client in clients:
            await tg.start(_serve, client)
        await seen(total)
        for fleet in fleets.values():
            tg.start_soon(fleet.run)
        await anyio.sleep(args.warmup)
        for scenario in scenarios(len(local)):
            changed = time.monotonic()
            now_unready = {key(p) for p in local[: scenario.not_ready]}
            # A Pod coming back serves before it is listed ready; one going leaves the list
            # before it fails (as readiness does it: the client is never asked to route to it).
            for pod in local:
                if key(pod) in unready - now_unready:
                    if key(pod) in stopped:
                        await anyio.to_thread.run_sync(cluster.restart, pod.name)
                        stopped.discard(key(pod))
                    await anyio.to_thread.run_sync(cluster.fail, pod.name, None)
            await anyio.to_thread.run_sync(
                bed.set_endpoints, NAMESPACE, f"{service}-1", entries(zone_of, pods, now_unready)
            )
            await seen(total - len(now_unready))
            for pod in local:
                if key(pod) in now_unready - unready:
                    await anyio.to_thread.run_sync(cluster.fail, pod.name, 503)
                if scenario.down and key(pod) not in stopped:
                    await anyio.to_thread.run_sync(cluster.kill, pod.name)
                    stopped.add(key(pod))
            unready = now_unready
            start = time.monotonic()
            await anyio.sleep(args.seconds)
            end = time.monotonic()
            ready = {key(p) for p in pods} - unready
            local_ready = len(local) - len(unready)
            rule = (len(local) / local_ready) * (len(ready) / total) if local_ready else None
            row: dict[str, Any] = {
                "layout": layout.name,
                "scenario": scenario.name,
                "ready": "/".join(
                    str(sum(1 for p in by_zone[z] if key(p) in ready)) for z in ZONES
                ),
                "rule": rule,
            }
            figures = {
                mode: measure(fleet, zone_of, ready, unready, changed, start, end)
                for mode, fleet in fleets.items()
            }
            for name in ("requests", "a_local", "local", "max_mean", "a_pods_mean", "failed"):
                for mode in MODES:
                    row[f"{name}_{mode}"] = figures[mode][name]
            row["unready"] = sum(figures[mode]["unready"] for mode in MODES)
            row["per_pod"] = {mode: figures[mode]["per_pod"] for mode in MODES}
            rows.append(row)
            print(
                f"{layout.name} {scenario.name}: a_local {row['a_local_zone']:.1f} % "
                f"/ {row['a_local_flat']:.1f} %, max/mean {row['max_mean_zone']:.2f} "
                f"/ {row['max_mean_flat']:.2f} / {row['max_mean_stay']:.2f} (zone / flat / stay), "
                f"failed {sum(row[f'failed_{mode}'] for mode in MODES)}"
            )
        tg.cancel_scope.cancel()
    await anyio.to_thread.run_sync(cluster.delete_workload, service)
    return rows


async def _serve(client: HeadlessClient, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Open ``client``, hand it over, close it when cancelled."""
    async with client:
        task_status.started()
        await anyio.sleep_forever()


async def main(args: argparse.Namespace) -> None:
    os.environ.pop("HEADLESSLB_ZONE", None)  # the zone-unaware fleet must not pick one up
    layouts = [Layout.parse(text) for text in args.layouts.split(",")]
    paths = kubeapi_binaries("zones.py")
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        try:
            bed = KubeAPI(paths["server"], paths["etcd"], workdir=Path(workdir)).start()
        except Exception as exc:
            sys.exit(f"zones.py needs the kubeapi bed, which did not start: {exc}")
        try:
            with LocalCluster() as cluster:
                rows = []
                for index, layout in enumerate(layouts):
                    rows += await run_layout(args, bed, cluster, layout, index)
        finally:
            bed.stop()
    shown = ("layout", "scenario", "ready", "rule", "requests_zone", "requests_flat")
    shown += tuple(f"{n}_{m}" for n in ("a_local", "max_mean", "a_pods_mean") for m in MODES)
    shown += ("local_zone", "local_flat", "failed_zone", "failed_flat", "failed_stay", "unready")
    print_table(
        [{k: row[k] for k in shown} for row in rows],
        title="zone: zone-aware; flat: zone-unaware; stay: zone-aware, never spilling",
    )
    print(f"\n{time.monotonic() - began:.0f} s")
    write_results(
        "zones",
        rows,
        target={"a_local_zone_healthy_%": 90, "failed": 0, "unready": 0},
        modes=MODES,
        params=vars(args) | {"max_zone_overload": MAX_OVERLOAD},
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", default="3/3/3,2/4/3,2/4/3:even")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured per row")
    parser.add_argument("--per-pod", type=float, default=15.0, help="req/s per Pod, per fleet")
    parser.add_argument("--workers", type=int, default=4, help="per client")
    parser.add_argument("--warmup", type=float, default=1.0)
    anyio.run(main, parser.parse_args())
