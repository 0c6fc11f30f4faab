"""DnsDiscovery's reading of DNS answers, fed scripted messages (no sockets).

The wire path (UDP, TCP on truncation, a real server) is covered over the local cluster; these
pin down the shapes of answer the local cluster does not produce.
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from headlesslb.dns import DnsDiscovery, _Answer
from headlesslb.errors import DiscoveryError
from headlesslb.names import expand_service_name

pytestmark = pytest.mark.anyio

SVC = "web-hl.default.svc.cluster.local."
SRV = f"_http._tcp.{SVC}"


def answer(
    name: str, rdtype: str, records: Iterable[str], *, additional: Iterable[str] = (), ttl: int = 5
) -> _Answer:
    """An answer for (name, rdtype); ``additional`` holds 'name A ip' lines."""
    query = dns.message.make_query(name, rdtype)
    response = dns.message.make_response(query)
    values = list(records)
    rrset = dns.rrset.from_text_list(name, ttl, "IN", rdtype, values) if values else None
    if rrset is not None:
        response.answer.append(rrset)
    for line in additional:
        owner, kind, value = line.split()
        response.additional.append(dns.rrset.from_text(owner, ttl, "IN", kind, value))
    return _Answer(rrset, response)


def nxdomain(name: str, soa_ttl: int = 30, minimum: int = 10) -> _Answer:
    query = dns.message.make_query(name, "A")
    response = dns.message.make_response(query)
    response.authority.append(
        dns.rrset.from_text(
            "cluster.local.",
            soa_ttl,
            "IN",
            "SOA",
            f"ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 {minimum}",
        )
    )
    return _Answer(None, response)


class Scripted(DnsDiscovery):
    """DnsDiscovery whose queries are answered from a dict; unknown queries are NXDOMAIN."""

    def __init__(self, answers: dict[tuple[str, str], _Answer], **kwargs: object) -> None:
        super().__init__(expand_service_name(SVC), nameservers=[("127.0.0.1", 53)], **kwargs)  # type: ignore[arg-type]
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType, backend: object) -> _Answer:
        key = (name, rdtype.name)
        self.asked.append(key)
        return self.answers.get(key) or nxdomain(name)


def srv_records(n: int, set_name: str = "web") -> list[str]:
    return [f"0 100 8080 {set_name}-{i}.{SVC}" for i in range(n)]


async def test_srv_with_addresses_in_additional_section() -> None:
    extra = [f"{set_}-{i}.{SVC} A 10.0.0.{i + 1}" for i, set_ in enumerate(["web"] * 3)]
    discovery = Scripted(
        {(SRV, "SRV"): answer(SRV, "SRV", srv_records(3), additional=extra)}, port="http"
    )
    resolution = await discovery.resolve()
    assert [(e.ip, e.port, e.hostname, e.ordinal) for e in resolution.endpoints] == [
        ("10.0.0.1", 8080, "web-0", 0),
        ("10.0.0.2", 8080, "web-1", 1),
        ("10.0.0.3", 8080, "web-2", 2),
    ]
    assert discovery.asked == [(SRV, "SRV")]  # one query per refresh
    assert resolution.ttl == 5


async def test_srv_without_additional_resolves_a_few_targets_one_by_one() -> None:
    answers = {(SRV, "SRV"): answer(SRV, "SRV", srv_records(3), ttl=30)}
    for i in range(3):
        name = f"web-{i}.{SVC}"
        answers[(name, "A")] = answer(name, "A", [f"10.0.0.{i + 1}"], ttl=7)
    discovery = Scripted(answers, port="http")
    resolution = await discovery.resolve()
    assert [e.ordinal for e in resolution.endpoints] == [0, 1, 2]
    assert resolution.ttl == 7  # the smallest TTL of every record used
    assert len(discovery.asked) == 4


async def test_many_srv_targets_without_addresses_cost_one_more_query() -> None:
    answers = {
        (SRV, "SRV"): answer(SRV, "SRV", srv_records(40)),
        (SVC, "A"): answer(SVC, "A", [f"10.0.1.{i}" for i in range(40)]),
    }
    discovery = Scripted(answers, port="http")
    resolution = await discovery.resolve()
    assert len(resolution.endpoints) == 40
    assert {e.port for e in resolution.endpoints} == {8080}
    assert discovery.asked == [(SRV, "SRV"), (SVC, "A")]  # no per-Pod storm


async def test_mixed_case_names_still_match() -> None:
    srv = [f"0 100 8080 WEB-{i}.Web-HL.default.svc.cluster.local." for i in range(2)]
    extra = [f"web-{i}.web-hl.DEFAULT.svc.cluster.local. A 10.0.0.{i + 1}" for i in range(2)]
    discovery = Scripted({(SRV, "SRV"): answer(SRV, "SRV", srv, additional=extra)}, port="http")
    resolution = await discovery.resolve()
    assert [(e.hostname, e.ordinal) for e in resolution.endpoints] == [("web-0", 0), ("web-1", 1)]
    assert len(discovery.asked) == 1


async def test_deployment_targets_named_after_addresses_have_no_hostname() -> None:
    srv = [f"0 100 80 10-0-0-{i}.{SVC}" for i in (1, 2)]
    extra = [f"10-0-0-{i}.{SVC} A 10.0.0.{i}" for i in (1, 2)]
    discovery = Scripted({(SRV, "SRV"): answer(SRV, "SRV", srv, additional=extra)}, port="http")
    resolution = await discovery.resolve()
    assert [(e.hostname, e.ordinal) for e in resolution.endpoints] == [(None, None), (None, None)]


async def test_nxdomain_is_empty_with_the_negative_ttl() -> None:
    discovery = Scripted({}, port=80)
    resolution = await discovery.resolve()
    assert resolution.endpoints == ()
    assert resolution.ttl == 10  # min(SOA TTL, SOA minimum): RFC 2308


async def test_nodata_is_empty() -> None:
    discovery = Scripted({(SVC, "A"): answer(SVC, "A", [])}, port=80)
    assert (await discovery.resolve()).endpoints == ()


async def test_a_wrong_port_name_is_an_error_not_an_empty_service() -> None:
    discovery = Scripted({(SVC, "A"): answer(SVC, "A", ["10.0.0.1"])}, port="grpc")
    with pytest.raises(DiscoveryError, match="no port named 'grpc'"):
        await discovery.resolve()


async def test_dual_stack_asks_for_both_families() -> None:
    answers = {
        (SVC, "A"): answer(SVC, "A", ["10.0.0.1"]),
        (SVC, "AAAA"): answer(SVC, "AAAA", ["fd00::1"]),
    }
    discovery = Scripted(answers, port=80, ip_family="dual")
    resolution = await discovery.resolve()
    assert [e.authority for e in resolution.endpoints] == ["10.0.0.1:80", "[fd00::1]:80"]
