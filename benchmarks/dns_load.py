"""Fleet DNS load: queries/s and bytes/s at the DNS server for K clients, TTL T, N Pods.

**The model.** Each client (each process; the client objects here use ``share_discovery=False``,
each standing for a client Pod, see ``benchmarks/shared_discovery.py``) asks one
question per refresh round: A for a numeric port. A round comes every ``clamp(T, 1, 30)`` seconds
shortened by up to 10 % jitter, so on average every ``0.95 × clamp(T, 1, 30)`` s. An answer larger
than the 1,232-byte EDNS payload (more than ~75 Pods) is asked over TCP directly after the first
round (one truncated UDP reply once per client), so one round is one query either way. The
server sends ``12 + question + N × 16`` bytes per A answer (plus an 11-byte OPT record over UDP,
plus TCP's 2-byte length prefix). Hence, for the fleet::

    queries/s = K / (0.95 × clamp(T))        bytes/s = queries/s × answer bytes

**The check.** ``P`` client processes with ``C`` async clients each (K = P × C) refresh against
the LocalCluster's DNS server for ``--seconds``; the server counts the queries it received and the
bytes it sent. The measured rates are compared with the model's for the same K, T and N.

    python benchmarks/dns_load.py [--processes 4] [--clients 2] [--seconds 12] [--ttl 1]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from multiprocessing.synchronize import Event

import anyio
from _common import print_table, write_results

from headlesslb import HeadlessTransport
from headlesslb.testing import LocalCluster

_JITTER_MEAN = 0.95
"""Mean of 1 − U(0, 0.1): RefreshPolicy's default jitter shortens each delay by 5 % on average."""
_HEADER = 12
_OPT = 11
_A_RECORD = 16  # compressed owner name (2) + type, class, TTL, length (10) + address (4)
_EDNS_PAYLOAD = 1232


def answer_bytes(fqdn: str, pods: int, *, tcp: bool) -> int:
    """Bytes the server sends for one A answer listing ``pods`` addresses."""
    question = len(fqdn.rstrip(".")) + 2 + 4  # labels + root, type and class
    size = _HEADER + question + pods * _A_RECORD
    return size + 2 if tcp else size + _OPT


def model(clients: int, ttl: float, pods: int, fqdn: str) -> dict[str, float]:
    """The fleet's steady-state load at the DNS server."""
    period = _JITTER_MEAN * min(max(ttl, 1.0), 30.0)
    tcp = answer_bytes(fqdn, pods, tcp=False) > _EDNS_PAYLOAD
    size = answer_bytes(fqdn, pods, tcp=tcp)
    qps = clients / period
    return {"queries_per_s": qps, "bytes_per_s": qps * size, "answer_bytes": size}


def _client_process(
    nameserver: str, namespace: str, port: int, clients: int, ready: Event, stop: Event
) -> None:
    async def run() -> None:
        transports = [
            HeadlessTransport(
                "fleet-hl",
                port=port,
                nameservers=[nameserver],
                namespace=namespace,
                share_discovery=False,  # each stands for a client Pod of the fleet
            )
            for _ in range(clients)
        ]
        for transport in transports:
            await transport.__aenter__()
        for transport in transports:
            await transport.runtime.wait_ready()
        ready.set()
        while not stop.is_set():
            await anyio.sleep(0.05)
        for transport in transports:
            await transport.aclose()

    anyio.run(run)


def _measure(
    cluster: LocalCluster, processes: int, clients: int, seconds: float
) -> tuple[float, float, int]:
    """(queries/s, bytes/s, TCP replies) at the server while the clients refresh."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    readies = [ctx.Event() for _ in range(processes)]
    procs = [
        ctx.Process(
            target=_client_process,
            args=(cluster.nameserver, cluster.namespace, cluster.port, clients, ready, stop),
        )
        for ready in readies
    ]
    for proc in procs:
        proc.start()
    try:
        for ready in readies:
            if not ready.wait(120):
                raise RuntimeError("a client process did not get ready")
        time.sleep(1.0)  # past every client's first round (UDP, then TCP)
        cluster.reset_dns_query_count()
        start = time.monotonic()
        time.sleep(seconds)
        counts = cluster.dns_query_count()
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
    return counts.total / elapsed, counts.bytes_sent / elapsed, counts.tcp_replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--clients", type=int, default=2, help="clients per process")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--ttl", type=int, default=1)
    parser.add_argument("--pods", type=int, default=200)
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    fqdn = "web-hl.default.svc.cluster.local."
    # The table: fleets of client Pods × workers, CoreDNS's TTL and longer ones.
    for k in (100, 800, 8000):
        for ttl in (5, 30):
            for pods in (10, 100, 1000, 4000):
                m = model(k, ttl, pods, fqdn)
                rows.append(
                    {
                        "clients": k,
                        "ttl_s": ttl,
                        "pods": pods,
                        "answer_bytes": int(m["answer_bytes"]),
                        "queries_per_s": round(m["queries_per_s"], 1),
                        "kbytes_per_s": round(m["bytes_per_s"] / 1e3, 1),
                    }
                )
    print_table(rows, title="Fleet DNS load at the server (model)")
    k = args.processes * args.clients
    with LocalCluster(ttl=args.ttl) as cluster:
        cluster.add_deployment("fleet", args.pods, lb=None, serve=False)
        measured_qps, measured_bps, tcp_replies = _measure(
            cluster, args.processes, args.clients, args.seconds
        )
        predicted = model(k, args.ttl, args.pods, cluster.fqdn("fleet-hl"))
    check = [
        {
            "clients": k,
            "processes": args.processes,
            "ttl_s": args.ttl,
            "pods": args.pods,
            "model_qps": round(predicted["queries_per_s"], 2),
            "measured_qps": round(measured_qps, 2),
            "qps_ratio": round(measured_qps / predicted["queries_per_s"], 3),
            "model_kbps": round(predicted["bytes_per_s"] / 1e3, 2),
            "measured_kbps": round(measured_bps / 1e3, 2),
            "bytes_ratio": round(measured_bps / predicted["bytes_per_s"], 3),
            "tcp_replies": tcp_replies,
        }
    ]
    print_table(check, title="Model vs a measured run against the LocalCluster DNS server")
    write_results(
        "dns_load",
        rows,
        params=vars(args),
        check=check,
        model="queries/s = K / (0.95 × clamp(TTL, 1, 30)); bytes/s = queries/s × answer bytes",
    )


if __name__ == "__main__":
    main()
