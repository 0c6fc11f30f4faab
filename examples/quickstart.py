"""Quickstart: balance requests over a headless Service's Pods, on an embedded local cluster.

Run:  .venv/bin/python examples/quickstart.py   (after `make demo` or `make test` made .venv)

In a real cluster, drop the LocalCluster and the nameservers/namespace arguments: headlesslb reads
the Pod's /etc/resolv.conf and namespace like any in-cluster client.
"""

from __future__ import annotations

import collections

import anyio

from headlesslb import HeadlessClient
from headlesslb.testing import LocalCluster


async def main() -> None:
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        async with HeadlessClient(
            "web-hl",
            port="http",  # SRV _http._tcp.web-hl...: per-Pod port, hostname and ordinal
            fallback="web-lb",  # the ClusterIP/LB Service, used when discovery has nothing
            nameservers=[cluster.nameserver],  # the local cluster's DNS instead of resolv.conf
            namespace=cluster.namespace,
        ) as client:
            served: collections.Counter[str] = collections.Counter()
            for _ in range(30):
                response = await client.get("/hello")
                served[response.json()["pod"]] += 1
            print("30 requests, balanced:", dict(sorted(served.items())))

            response = await client.get("/hello")
            print("last one went to:", response.extensions["headlesslb"]["endpoint"])

            for endpoint in client.endpoints():
                print(
                    f"  {endpoint.hostname} {endpoint.ip}:{endpoint.port}"
                    f" requests={endpoint.requests} healthy={endpoint.healthy}"
                )


if __name__ == "__main__":  # the local cluster runs in a child process: keep this guard
    anyio.run(main)
