"""Shared discovery: DNS queries at the server for K clients of one Service in one process.

K async transports for the same Service run on one event loop for ``--seconds`` against the
LocalCluster's DNS server (TTL ``--ttl``), with ``share_discovery`` on (the default) and off, in
alternating rounds; the server counts the queries it received. Off, each client asks on its own
schedule (K × one client's queries); on, the clients share one answer per TTL.

    python benchmarks/shared_discovery.py [--seconds 4] [--rounds 2] [--ttl 1]
"""

from __future__ import annotations

import argparse
import statistics

import anyio
from _common import print_table, write_results

from headlesslb import HeadlessTransport
from headlesslb.testing import LocalCluster


async def _queries(cluster: LocalCluster, clients: int, share: bool, seconds: float) -> int:
    """DNS queries the server received while ``clients`` transports ran ``seconds``."""
    transports = [
        HeadlessTransport(
            "svc-hl",
            port=cluster.port,
            share_discovery=share,
            **cluster.client_kwargs(),
        )
        for _ in range(clients)
    ]
    for transport in transports:
        await transport.__aenter__()
    for transport in transports:
        await transport.runtime.wait_ready()
    cluster.reset_dns_query_count()
    await anyio.sleep(seconds)
    asked = cluster.dns_query_count().total
    for transport in transports:
        await transport.aclose()
    return asked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ttl", type=int, default=1)
    args = parser.parse_args()
    sizes = (1, 4, 16)
    measured: dict[tuple[int, bool], list[int]] = {(k, s): [] for k in sizes for s in (True, False)}
    with LocalCluster(ttl=args.ttl) as cluster:
        cluster.add_deployment("svc", 3, lb=None, serve=False)

        async def run() -> None:
            for number in range(args.rounds):
                for k in sizes:
                    # Alternate which goes first, so drift in machine load hits both alike.
                    order = (True, False) if number % 2 == 0 else (False, True)
                    for share in order:
                        measured[(k, share)].append(await _queries(cluster, k, share, args.seconds))

        anyio.run(run)
    rows: list[dict[str, object]] = []
    for k in sizes:
        on = statistics.mean(measured[(k, True)])
        off = statistics.mean(measured[(k, False)])
        rows.append(
            {
                "clients": k,
                "queries_shared": on,
                "queries_unshared": off,
                "queries_per_s_shared": round(on / args.seconds, 2),
                "queries_per_s_unshared": round(off / args.seconds, 2),
                "unshared_over_shared": round(off / on, 2) if on else None,
            }
        )
    print_table(
        rows,
        title=f"DNS queries at the server over {args.seconds:g} s, TTL {args.ttl} s"
        f" (mean of {args.rounds} rounds)",
    )
    write_results(
        "shared_discovery",
        rows,
        params=vars(args),
        raw={f"{k}-{'shared' if s else 'unshared'}": v for (k, s), v in measured.items()},
        note="one process, one event loop; the machine is shared with other agents' work",
    )


if __name__ == "__main__":
    main()
