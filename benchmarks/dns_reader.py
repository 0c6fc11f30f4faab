"""The DNS reply reader against dnspython's parser, per record, on the same replies.

Discovery reads every answer with its own reader (``headlesslb/io/dnswire.py``) rather than
dnspython's ``dns.message.from_wire``, which builds a ``Name``, an ``Rdata`` and several enums per
record. This measures both on replies a Service of N Pods gets: an A answer, and an SRV answer
with its glue A records (what a named port asks). Rounds alternate between the two parsers, and
the figure is the median per record over the rounds.

    python benchmarks/dns_reader.py [--sizes 100,1000] [--rounds 15]

SRV answers stop at 500 Pods: with glue, more do not fit in 64 KiB.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from _common import print_table, write_results

from headlesslb.io import dnswire

FQDN = "web-hl.default.svc.cluster.local."
SRV_MAX = 500
"""SRV with glue for more Pods passes 64 KiB (DNS falls back to A records there)."""


def _reply(n: int, srv: bool) -> tuple[bytes, int, int]:
    """(wire, query id, qtype) of an answer for ``n`` Pods: A, or SRV with glue A records."""
    qtype = dns.rdatatype.SRV if srv else dns.rdatatype.A
    qname = f"_http._tcp.{FQDN}" if srv else FQDN
    query = dns.message.make_query(qname, qtype)
    reply = dns.message.make_response(query)
    ips = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(1, n + 1)]
    if srv:
        names = [f"{ip.replace('.', '-')}.{FQDN}" for ip in ips]
        answer = dns.rrset.from_text_list(
            qname, 5, "IN", "SRV", [f"0 100 8080 {name}" for name in names]
        )
        reply.answer = [answer]
        reply.additional = [
            dns.rrset.from_text_list(name, 5, "IN", "A", [ip])
            for name, ip in zip(names, ips, strict=True)
        ]
    else:
        reply.answer = [dns.rrset.from_text_list(qname, 5, "IN", "A", ips)]
    return reply.to_wire(max_size=65535), query.id, qtype


def _per_record_us(parse: Callable[[], object], records: int, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        parse()
    return (time.perf_counter() - start) / repeat / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for srv in (False, True):
            if srv:
                n = min(n, SRV_MAX)
            wire, qid, qtype = _reply(n, srv)
            qname = f"_http._tcp.{FQDN}" if srv else FQDN
            records = n * 2 if srv else n
            repeat = max(1, 20_000 // records)
            ours, theirs = [], []
            for _ in range(args.rounds):  # alternating, so drift on a noisy machine hits both
                read = functools.partial(dnswire.read_reply, wire, qid, qname, qtype)
                ours.append(_per_record_us(read, records, repeat))
                parse = functools.partial(dns.message.from_wire, wire)
                theirs.append(_per_record_us(parse, records, max(1, repeat // 20)))
            rows.append(
                {
                    "answer": "SRV + glue A" if srv else "A",
                    "pods": n,
                    "records": records,
                    "reader_us_per_record": statistics.median(ours),
                    "dnspython_us_per_record": statistics.median(theirs),
                    "reader_us_per_pod": statistics.median(ours) * records / n,
                    "dnspython_us_per_pod": statistics.median(theirs) * records / n,
                    "ratio": statistics.median(theirs) / statistics.median(ours),
                }
            )
    print_table(rows, title="DNS reply parsing, µs per record (median of alternating rounds)")
    write_results("dns_reader", rows, params={"rounds": args.rounds})


if __name__ == "__main__":
    main()
