"""Deterministic subsetting: max/mean Pod load, connections per client, moves on scaling.

A pure simulation (no sockets) through the same code the pool runs (``Subsetter.choose``): C
clients each use N Pods; a Pod's load is how many clients use it (each client spreads its
requests evenly over its N, as round robin does). For each client identity mode (an ordinal,
a hashed Pod name, random) and each kind of Pod (StatefulSet ordinals, Deployment addresses)
it prints max/mean load, the connections a client holds (with 10 % of Pods ejected too) and
the assignments moved when the Service scales out and in by one Pod and by 10 %, against the
ideal (the fewest moves that keep the load even: the new Pods' share, or the removed Pods').
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter

from _common import print_table, write_results

from headlesslb.core.endpoint import Endpoint
from headlesslb.core.snapshot import EndpointState
from headlesslb.core.subset import Subset, Subsetter

Key = tuple[str, int]


def pod_states(count: int, kind: str, rng: random.Random) -> list[EndpointState]:
    if kind == "ordinal":
        return [
            EndpointState(Endpoint(f"10.1.{i // 250}.{i % 250}", 80, f"web-{i}", i))
            for i in range(count)
        ]
    ips = set()
    while len(ips) < count:
        ips.add(f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return [EndpointState(Endpoint(ip, 80)) for ip in sorted(ips)]


def client_subsetters(count: int, size: int, mode: str, rng: random.Random) -> list[Subsetter]:
    def identity(c: int) -> Subset:
        if mode == "ordinal":
            return Subset(size, client=f"worker-{c}")
        if mode == "name":
            return Subset(size, client=f"worker-7d9f8c{rng.randrange(10**6):06d}-x{c:x}")
        return Subset(size)

    return [Subsetter(size, identity(c).place({}, rng)) for c in range(count)]


def assign(
    clients: list[Subsetter], members: list[EndpointState], ejected: int = 0
) -> tuple[list[frozenset[Key]], int, int]:
    ordered = tuple(sorted(members, key=lambda s: s.key))
    usable = frozenset(ordered[ejected:])  # eject the first `ejected` by address
    out, conns, watched = [], 0, 0
    for subsetter in clients:
        chosen, in_use = subsetter.choose(ordered, usable)
        out.append(frozenset(s.key for s in chosen))
        conns, watched = max(conns, len(chosen)), max(watched, len(in_use))
    return out, conns, watched


def moved(before: list[frozenset[Key]], after: list[frozenset[Key]]) -> int:
    return sum(len(b - a) for a, b in zip(before, after, strict=True))


def evaluate(c: int, s: int, n: int, mode: str, kind: str, seed: int) -> dict[str, object]:
    started = time.perf_counter()
    rng = random.Random(seed)
    clients = client_subsetters(c, n, mode, rng)
    members = pod_states(s, kind, rng)
    base, conns, _ = assign(clients, members)
    load = Counter(k for a in base for k in a)
    loads = [load[m.key] for m in members]
    _, conns_ejected, watched = assign(clients, members, ejected=s // 10)
    row: dict[str, object] = {
        "clients×pods": f"{c}×{s}",
        "N": n,
        "client id": mode,
        "pods": kind,
        "max/mean": round(max(loads) / (sum(loads) / len(loads)), 3),
        "conns/client": conns,
        "conns, 10% ejected": conns_ejected,
        "probed/client": watched,
    }
    for step in (1, max(1, s // 10)):
        grown = (
            members + pod_states(s + step, kind, rng)[s:]
            if kind == "ordinal"
            else (
                members
                + [
                    p
                    for p in pod_states(s + 4 * step, kind, rng)
                    if p.key not in {m.key for m in members}
                ][:step]
            )
        )
        out, _, _ = assign(clients, grown)
        ideal_out = step * c * n / (s + step)
        row[f"+{step} /ideal"] = round(moved(base, out) / ideal_out, 2)
        gone = members[-step:] if kind == "ordinal" else rng.sample(members, step)
        gone_keys = {g.key for g in gone}
        shrunk, _, _ = assign(clients, [m for m in members if m.key not in gone_keys])
        ideal_in = sum(load[k] for k in gone_keys) or 1
        row[f"-{step} /ideal"] = round(moved(base, shrunk) / ideal_in, 2)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=10, help="N, Pods per client")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = [
        evaluate(c, s, args.size, mode, kind, args.seed)
        for c, s in ((100, 100), (1000, 500))
        for kind in ("ordinal", "address")
        for mode in ("ordinal", "name", "random")
    ]
    for row in rows:  # the two scale steps differ by size: one column pair each
        for k in list(row):
            if k.startswith(("+", "-")) and k[1:].split()[0] not in ("1",):
                row[k.replace(k[1:].split()[0], "10%")] = row.pop(k)
        row["seconds"] = row.pop("seconds")
    print_table(
        rows,
        title=f"Deterministic subsetting, N={args.size}: Pod load, connections, moves on "
        "scaling (/ideal 1.0 is minimal; target max/mean <= 1.1 at 100x100)",
    )
    write_results(
        "subsetting",
        rows,
        target={"max/mean (100×100, N=10, ordinal clients)": "<= 1.1"},
        params=vars(args),
    )


if __name__ == "__main__":
    main()
