"""DnsDiscovery's reading of DNS answers, fed scripted messages (no sockets).

The wire path (UDP, TCP on truncation, a real server) is covered over the local cluster; these
pin down the shapes of answer the local cluster does not produce.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

import anyio
import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from headlesslb.core.names import expand_service_name
from headlesslb.errors import DiscoveryError
from headlesslb.io.dns import DnsDiscovery, _Answer, answer_from_reply
from headlesslb.io.dnswire import read_reply

pytestmark = pytest.mark.anyio

SVC = "web-hl.default.svc.cluster.local."
SRV = f"_http._tcp.{SVC}"


def _read(response: dns.message.Message, name: str, rdtype: str) -> _Answer:
    """What DnsDiscovery reads from ``response``, through the wire (as a server would send it)."""
    wire = response.to_wire()
    qtype = dns.rdatatype.from_text(rdtype).value
    qname = name.lower()
    return answer_from_reply(read_reply(wire, response.id, qname, qtype), qname, qtype)


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
    return _read(response, name, rdtype)


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
    return _read(response, name, "A")


HANG = object()
"""A scripted answer that never comes (a server that drops the query)."""


class Scripted(DnsDiscovery):
    """DnsDiscovery whose queries are answered from a dict; unknown queries are NXDOMAIN.

    An exception in the dict is raised by that query; ``HANG`` makes it wait forever.
    """

    def __init__(self, answers: dict[tuple[str, str], object], **kwargs: object) -> None:
        super().__init__(expand_service_name(SVC), nameservers=[("127.0.0.1", 53)], **kwargs)  # type: ignore[arg-type]
        self.answers = answers
        self.asked: list[tuple[str, str]] = []

    async def _query(self, name: str, rdtype: int) -> _Answer:
        key = (name, dns.rdatatype.to_text(rdtype))
        self.asked.append(key)
        got = self.answers.get(key)
        if isinstance(got, BaseException):
            raise got
        if got is HANG:
            await anyio.sleep_forever()
        assert got is None or isinstance(got, _Answer)
        return got or nxdomain(name)


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


# -- a partial failure is partial --------------------------------------------------------------
def servfail(name: str, rdtype: str) -> DiscoveryError:
    return DiscoveryError(f"no nameserver could answer {name} {rdtype} (SERVFAIL/REFUSED)")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_dual_stack_keeps_ipv4_when_aaaa_fails(caplog: pytest.LogCaptureFixture) -> None:
    answers: dict[tuple[str, str], object] = {
        (SVC, "A"): answer(SVC, "A", ["10.0.0.1", "10.0.0.2"]),
        (SVC, "AAAA"): servfail(SVC, "AAAA"),
    }
    discovery = Scripted(answers, port=80, ip_family="dual")
    with caplog.at_level(logging.WARNING, logger="headlesslb.dns"):
        resolution = await discovery.resolve()
    assert [e.ip for e in resolution.endpoints] == ["10.0.0.1", "10.0.0.2"]
    assert resolution.partial and resolution.ttl == 5
    (line,) = warnings(caplog)  # once per round, saying what failed
    assert "partial" in line and "AAAA" in line


async def test_one_failing_srv_target_lookup_keeps_the_other_pods() -> None:
    answers: dict[tuple[str, str], object] = {(SRV, "SRV"): answer(SRV, "SRV", srv_records(3))}
    for i in range(3):
        name = f"web-{i}.{SVC}"
        answers[(name, "A")] = answer(name, "A", [f"10.0.0.{i + 1}"])
    answers[(f"web-1.{SVC}", "A")] = servfail(f"web-1.{SVC}", "A")
    resolution = await Scripted(answers, port="http").resolve()
    assert [(e.hostname, e.ordinal) for e in resolution.endpoints] == [("web-0", 0), ("web-2", 2)]
    assert resolution.partial


async def test_every_query_failing_is_one_plain_discovery_error() -> None:
    answers: dict[tuple[str, str], object] = {
        (SVC, "A"): servfail(SVC, "A"),
        (SVC, "AAAA"): servfail(SVC, "AAAA"),
    }
    discovery = Scripted(answers, port=80, ip_family="dual")
    with pytest.raises(DiscoveryError) as info:
        await discovery.resolve()
    assert not isinstance(info.value, BaseExceptionGroup)
    assert "A (SERVFAIL" in str(info.value) and "AAAA" in str(info.value)
    with pytest.raises(DiscoveryError) as info:
        await discovery.resolve_name(SVC, 80)  # the request path (pinned Pods) too
    assert not isinstance(info.value, BaseExceptionGroup)


async def test_resolve_name_keeps_what_answered() -> None:
    pod = f"web-0.{SVC}"
    answers: dict[tuple[str, str], object] = {
        (pod, "A"): answer(pod, "A", ["10.0.0.1"]),
        (pod, "AAAA"): servfail(pod, "AAAA"),
    }
    resolution = await Scripted(answers, port=80, ip_family="dual").resolve_name(pod, 80)
    assert [e.ip for e in resolution.endpoints] == ["10.0.0.1"] and resolution.partial


async def test_resolve_name_skips_and_logs_unusable_addresses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pod = f"web-0.{SVC}"
    discovery = Scripted({(pod, "A"): answer(pod, "A", ["169.254.169.254", "10.0.0.1"])}, port=80)
    with caplog.at_level(logging.WARNING, logger="headlesslb.dns"):
        resolution = await discovery.resolve_name(pod, 80)
    assert [e.ip for e in resolution.endpoints] == ["10.0.0.1"]
    (line,) = warnings(caplog)
    assert "169.254.169.254" in line and "link-local" in line


async def test_a_query_never_answered_costs_only_its_own_answer() -> None:
    answers: dict[tuple[str, str], object] = {
        (SVC, "A"): answer(SVC, "A", ["10.0.0.1"]),
        (SVC, "AAAA"): HANG,
    }
    resolution = await Scripted(answers, port=80, ip_family="dual", timeout=0.3).resolve()
    assert [e.ip for e in resolution.endpoints] == ["10.0.0.1"] and resolution.partial


async def test_timeouts_are_still_discovery_errors() -> None:
    answers: dict[tuple[str, str], object] = {(SVC, "A"): HANG, (SVC, "AAAA"): HANG}
    with pytest.raises(DiscoveryError):
        await Scripted(answers, port=80, ip_family="dual", timeout=0.2).resolve()
    with pytest.raises(DiscoveryError):
        await Scripted({(SRV, "SRV"): HANG}, port="http", timeout=0.2).resolve()


async def test_an_unexpected_error_in_a_query_comes_out_typed() -> None:
    answers: dict[tuple[str, str], object] = {
        (SVC, "A"): answer(SVC, "A", ["10.0.0.1"]),
        (SVC, "AAAA"): RuntimeError("bug"),
    }
    resolution = await Scripted(answers, port=80, ip_family="dual").resolve()
    assert [e.ip for e in resolution.endpoints] == ["10.0.0.1"] and resolution.partial
    with pytest.raises(DiscoveryError, match="bug"):
        await Scripted({(SVC, "A"): RuntimeError("bug")}, port=80).resolve()


# -- nothing from DNS is trusted ---------------------------------------------------------------
BAD_V4 = ["0.0.0.0", "0.1.2.3", "224.0.0.1", "255.255.255.255", "240.0.0.1", "169.254.169.254"]
BAD_V6 = ["::", "fe80::1", "ff02::1", "::ffff:10.0.0.1"]


async def test_addresses_no_pod_can_have_are_skipped_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers: dict[tuple[str, str], object] = {
        (SVC, "A"): answer(SVC, "A", [*BAD_V4, "10.0.0.1", "127.0.0.5"]),
        (SVC, "AAAA"): answer(SVC, "AAAA", [*BAD_V6, "::1", "fd00::1"]),
    }
    discovery = Scripted(answers, port=80, ip_family="dual")
    with caplog.at_level(logging.WARNING, logger="headlesslb.dns"):
        for _ in range(3):  # three rounds
            resolution = await discovery.resolve()
            # Loopback stays allowed: the local cluster's Pods live on 127.x.y.z.
            assert sorted(e.ip for e in resolution.endpoints) == [
                "10.0.0.1",
                "127.0.0.5",
                "::1",
                "fd00::1",
            ]
            assert not resolution.partial
    logged = warnings(caplog)
    assert len(logged) == len(BAD_V4) + len(BAD_V6)  # each bad record once, not every round
    for bad in [*BAD_V4, *BAD_V6]:
        shown = str(ipaddress.ip_address(bad))
        assert sum(f": {shown} (" in line for line in logged) == 1, bad


async def test_srv_port_zero_and_target_dot_are_skipped() -> None:
    srv = [f"0 100 0 web-0.{SVC}", f"0 100 8080 web-1.{SVC}", "0 0 0 ."]
    extra = [f"web-{i}.{SVC} A 10.0.0.{i + 1}" for i in range(2)]
    discovery = Scripted({(SRV, "SRV"): answer(SRV, "SRV", srv, additional=extra)}, port="http")
    resolution = await discovery.resolve()
    assert [(e.ip, e.port, e.ordinal) for e in resolution.endpoints] == [("10.0.0.2", 8080, 1)]
    assert discovery.asked == [(SRV, "SRV")]  # nobody asks for the address of "."


async def test_srv_target_dot_alone_means_no_endpoints() -> None:
    discovery = Scripted({(SRV, "SRV"): answer(SRV, "SRV", ["0 0 0 ."])}, port="http")
    resolution = await discovery.resolve()
    assert resolution.endpoints == ()
    assert discovery.asked == [(SRV, "SRV")]
    assert not resolution.partial


async def test_an_ordinal_no_pod_can_have_is_skipped_not_disabling_ordinals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hosts = ["web-0", "web-1", "web-99999999999999999999", "web-2147483648"]
    srv = [f"0 100 8080 {h}.{SVC}" for h in hosts]
    extra = [f"{h}.{SVC} A 10.0.0.{i + 1}" for i, h in enumerate(hosts)]
    discovery = Scripted({(SRV, "SRV"): answer(SRV, "SRV", srv, additional=extra)}, port="http")
    with caplog.at_level(logging.WARNING, logger="headlesslb.dns"):
        resolution = await discovery.resolve()
    assert [(e.hostname, e.ordinal) for e in resolution.endpoints] == [("web-0", 0), ("web-1", 1)]
    assert len(warnings(caplog)) == 2
    # Named explicitly, the StatefulSet's ordinals are read the same way.
    discovery = Scripted(
        {(SRV, "SRV"): answer(SRV, "SRV", srv, additional=extra)}, port="http", statefulset="web"
    )
    assert [e.ordinal for e in (await discovery.resolve()).endpoints] == [0, 1]


async def test_a_srv_target_that_is_no_dns_label_gives_no_hostname() -> None:
    srv = [f"0 100 8080 web_0.{SVC}", f"0 100 8080 web-1.{SVC}"]
    extra = [f"web_0.{SVC} A 10.0.0.1", f"web-1.{SVC} A 10.0.0.2"]
    discovery = Scripted({(SRV, "SRV"): answer(SRV, "SRV", srv, additional=extra)}, port="http")
    resolution = await discovery.resolve()
    assert [(e.hostname, e.ordinal) for e in resolution.endpoints] == [(None, None), ("web-1", 1)]


async def test_the_memory_of_logged_records_is_bounded() -> None:
    bad = [f"224.0.{i // 250}.{i % 250 + 1}" for i in range(300)]
    discovery = Scripted({(SVC, "A"): answer(SVC, "A", [*bad, "10.0.0.1"])}, port=80)
    for _ in range(2):
        assert [e.ip for e in (await discovery.resolve()).endpoints] == ["10.0.0.1"]
    from headlesslb.io.dns import _MAX_NOTED

    assert _MAX_NOTED < 300 and len(discovery._noted) == _MAX_NOTED


@pytest.mark.parametrize(("ttl", "expected"), [(0, 0.0), (2**31 - 1, 3600.0), (2**31, 0.0)])
async def test_extreme_ttls_are_read_sanely(ttl: int, expected: float) -> None:
    # RFC 2181 §8: a TTL with the top bit set means 0; anything else is capped at an hour.
    discovery = Scripted({(SVC, "A"): answer(SVC, "A", ["10.0.0.1"], ttl=ttl)}, port=80)
    resolution = await discovery.resolve()
    assert resolution.ttl == expected and len(resolution.endpoints) == 1
