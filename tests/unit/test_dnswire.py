"""The lean DNS reply reader: same records as dnspython reads, and hostile bytes fail typed."""

from __future__ import annotations

import contextlib
import random
import struct

import dns.message
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headlesslb.io.dnswire import (
    AAAA,
    SRV,
    A,
    MalformedReply,
    address_text,
    build_query,
    read_reply,
    reading,
)

SVC = "web-hl.default.svc.cluster.local."


def reply_wire(
    rdtype: str, values: list[str], *, name: str = SVC, ttl: int = 5
) -> tuple[int, bytes]:
    query = dns.message.make_query(name, rdtype)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text_list(name, ttl, "IN", rdtype, values))
    return response.id, response.to_wire()


def test_a_records_read_as_dnspython_reads_them() -> None:
    ips = [f"10.{i // 250}.{i % 250}.7" for i in range(1000)]
    qid, wire = reply_wire("A", ips, ttl=30)
    reply = read_reply(wire, qid, SVC, A)
    assert sorted(address_text(r) for r in reply.addresses[SVC]) == sorted(ips)
    assert reply.answer_ttl[SVC] == 30 and reply.rcode == 0 and not reply.truncated


def test_aaaa_and_srv_records() -> None:
    qid, wire = reply_wire("AAAA", ["fd00::1", "::1"])
    assert {address_text(r) for r in read_reply(wire, qid, SVC, AAAA).addresses[SVC]} == {
        "fd00::1",
        "::1",
    }
    srv_name = f"_http._tcp.{SVC}"
    qid, wire = reply_wire("SRV", [f"0 100 8080 WEB-{i}.{SVC}" for i in range(3)], name=srv_name)
    reply = read_reply(wire, qid, srv_name, SRV)
    assert sorted(reply.srv[srv_name]) == [(f"web-{i}.{SVC}", 8080) for i in range(3)]


def test_names_are_read_case_folded_and_escaped() -> None:
    # A label with a dot inside must never read as two labels.
    query = dns.message.make_query(SVC, "A")
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(SVC, 5, "IN", "A", "10.0.0.1"))
    odd = "_http._tcp." + SVC
    response.additional.append(dns.rrset.from_text(r"a\.b." + odd, 5, "IN", "A", "10.0.0.2"))
    reply = read_reply(response.to_wire(), response.id, SVC, A)
    assert list(reply.additional) == ["a\\046b." + odd]


def test_cname_chains_are_followed_within_the_answer() -> None:
    query = dns.message.make_query(SVC, "A")
    response = dns.message.make_response(query)
    target = "real.default.svc.cluster.local."
    response.answer.append(dns.rrset.from_text(SVC, 5, "IN", "CNAME", target))
    response.answer.append(dns.rrset.from_text(target, 5, "IN", "A", "10.0.0.9"))
    reply = read_reply(response.to_wire(), response.id, SVC, A)
    assert reply.final_name(SVC) == target
    assert [address_text(r) for r in reply.addresses[target]] == ["10.0.0.9"]


def test_a_reply_to_another_question_or_id_is_refused() -> None:
    qid, wire = reply_wire("A", ["10.0.0.1"])
    with pytest.raises(MalformedReply, match="ID"):
        read_reply(wire, (qid + 1) % 65536, SVC, A)
    with pytest.raises(MalformedReply, match="not"):
        read_reply(wire, qid, "other.default.svc.cluster.local.", A)
    with pytest.raises(MalformedReply):
        read_reply(wire, qid, SVC, AAAA)


def test_a_compression_loop_is_malformed_not_a_hang() -> None:
    query = build_query(SVC, A, 7, None)
    header = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0)
    question = query[12:]
    # The answer's owner name points at itself.
    at = 12 + len(question)
    record = struct.pack("!H", 0xC000 | at) + struct.pack("!HHIH", A, 1, 5, 4) + b"\x0a\0\0\x01"
    with pytest.raises(MalformedReply, match="backwards"):
        read_reply(header + question + record, 7, SVC, A)


def test_reading_pauses_between_steps_of_a_big_answer() -> None:
    qid, wire = reply_wire("A", [f"10.0.{i // 250}.{i % 250}" for i in range(1000)])
    steps = reading(wire, qid, SVC, A)
    pauses = 0
    while True:
        try:
            next(steps)
            pauses += 1
        except StopIteration as done:
            assert len(done.value.addresses[SVC]) == 1000
            break
    assert pauses == 3  # 1,000 records in steps of 256


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_hostile_bytes_raise_malformed_reply_only(data: st.DataObject) -> None:
    qid, wire = reply_wire("A", [f"10.0.0.{i}" for i in range(1, 20)])
    mutated = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    with contextlib.suppress(MalformedReply):
        read_reply(bytes(mutated[:cut] if data.draw(st.booleans()) else mutated), qid, SVC, A)


def test_random_garbage_never_escapes_typed() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
        with contextlib.suppress(MalformedReply):
            read_reply(blob, int.from_bytes(blob[:2] or b"\0\0", "big"), SVC, A)
