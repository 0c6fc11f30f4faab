"""How requests spread over Pods: keep-alive clients through the ClusterIP/LB Service vs
headlesslb over the headless Service, side by side on one local cluster.

A ClusterIP Service (kube-proxy; here the local cluster's connection-level balancer) picks a Pod
per *connection*: a keep-alive client sends every request of its connection to one Pod. For each
scenario, ``clients`` clients each send ``requests`` sequential requests; the table shows the
share of the busiest and idlest Pod and how many Pods a client reached. Alternating rounds,
same cluster. The numbers are request counts, not timings: noise on a shared machine does not
change them.

Run: .venv/bin/python benchmarks/clusterip_spread.py
"""

from __future__ import annotations

import collections

import httpx
from _common import print_table, write_results

from headlesslb.sync import HeadlessClient
from headlesslb.testing import LocalCluster

PODS = 5
CLIENTS = 8
REQUESTS = 50
ROUNDS = 3


def _row(scenario: str, per_client: list[collections.Counter[str]]) -> dict[str, object]:
    total: collections.Counter[str] = collections.Counter()
    for counts in per_client:
        total.update(counts)
    requests = sum(total.values())
    shares = [total.get(f"web-{n}", 0) / requests for n in range(PODS)]
    return {
        "scenario": scenario,
        "requests": requests,
        "busiest_pod_pct": round(100 * max(shares), 1),
        "idlest_pod_pct": round(100 * min(shares), 1),
        "ideal_pct": round(100 / PODS, 1),
        "pods_per_client_mean": round(sum(len(c) for c in per_client) / len(per_client), 2),
        "clients_on_one_pod": sum(len(c) == 1 for c in per_client),
    }


def main() -> None:
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=PODS)
        lb_url = cluster.service_url("web-lb")
        runs: dict[str, list[collections.Counter[str]]] = {"cluster_ip": [], "headlesslb": []}
        for _ in range(ROUNDS):
            for _ in range(CLIENTS):
                counts: collections.Counter[str] = collections.Counter()
                with httpx.Client(base_url=lb_url, trust_env=False, timeout=10) as client:
                    for _ in range(REQUESTS):
                        counts[client.get("/").json()["pod"]] += 1
                runs["cluster_ip"].append(counts)
            for _ in range(CLIENTS):
                counts = collections.Counter()
                with HeadlessClient("web-hl", port="http", **cluster.client_kwargs()) as client:
                    for _ in range(REQUESTS):
                        counts[client.get("/").json()["pod"]] += 1
                runs["headlesslb"].append(counts)
    rows = [
        _row("keep-alive httpx.Client via web-lb (ClusterIP)", runs["cluster_ip"]),
        _row("headlesslb.sync.HeadlessClient via web-hl", runs["headlesslb"]),
    ]
    print_table(rows, title=f"{CLIENTS * ROUNDS} clients x {REQUESTS} requests over {PODS} Pods")
    write_results(
        "clusterip_spread",
        rows,
        params={"pods": PODS, "clients": CLIENTS * ROUNDS, "requests_per_client": REQUESTS},
        target={"headlesslb.busiest_pod_pct": f"= {100 / PODS:g} (every Pod gets its share)"},
    )


if __name__ == "__main__":
    main()
