"""Hostile and partly broken DNS over a real LocalCluster (UDP/TCP): partial failures stay partial,
and values no Pod can have are skipped, never failing a round or a request.

One cluster serves the whole module; every test uses its own workload and Service names, and the
DNS server's modes are reset after each test.
"""

from __future__ import annotations

import itertools
import logging
import traceback
from collections.abc import Awaitable, Callable, Iterator

import pytest

from headlesslb import DiscoveryError, NoEndpointsAvailable, RefreshPolicy
from headlesslb.core.names import expand_service_name
from headlesslb.io.dns import DnsDiscovery
from headlesslb.testing import ClusterError, LocalCluster

from .helpers import make_client, served_by

pytestmark = pytest.mark.anyio

_numbers = itertools.count(1)


QUIET = RefreshPolicy(min_interval=3600, max_interval=3600)
"""Rounds come when the test asks for them."""


def unique(prefix: str) -> str:
    """A workload name no other test (nor the other backend's run) uses."""
    return f"{prefix}{next(_numbers)}"


@pytest.fixture(scope="module")
def hostile() -> Iterator[LocalCluster]:
    with LocalCluster(ttl=1) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def dns_back_to_normal(hostile: LocalCluster) -> Iterator[None]:
    yield
    hostile.dns_set_mode("normal")


def discovery(cluster: LocalCluster, service: str, **kwargs: object) -> DnsDiscovery:
    kwargs.setdefault("port", cluster.port)
    return DnsDiscovery(
        expand_service_name(cluster.fqdn(service)),
        nameservers=[cluster.dns_address],
        **kwargs,  # type: ignore[arg-type]
    )


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_aaaa_servfail_in_dual_stack_keeps_the_ipv4_pods(
    hostile: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("dual")
    hostile.add_statefulset(name, 2, lb=None)
    hostile.dns_set_mode("servfail", rdtype="AAAA")
    with caplog.at_level(logging.WARNING, logger="headlesslb"):
        async with make_client(
            hostile, f"{name}-hl", port=hostile.port, ip_family="dual"
        ) as client:
            served = await served_by(client, 4)
            assert len(client.endpoints()) == 2
    assert set(served) == {f"{name}-0", f"{name}-1"}
    logged = messages(caplog)
    assert any("partial DNS answer" in m and "AAAA" in m for m in logged), logged
    assert not any("unexpectedly" in m for m in logged), logged


async def test_a_pod_name_failing_fails_only_requests_pinned_to_it(hostile: LocalCluster) -> None:
    name = unique("pin")
    hostile.add_statefulset(name, 3, lb=None)
    hostile.dns_set_mode("servfail", name=hostile.pod_fqdn(f"{name}-1"), rdtype="AAAA")
    hostile.dns_set_mode("servfail", name=hostile.pod_fqdn(f"{name}-2"))
    async with make_client(
        hostile, f"{name}-hl", port=hostile.port, statefulset=name, ip_family="dual"
    ) as client:
        # Pinned Pods are looked up by their own names (no SRV with a numeric port): the AAAA
        # failure costs nothing when A answers...
        response = await client.get("/", ordinal=1)
        assert response.json()["pod"] == f"{name}-1"
        # ...and a name that fails altogether is a plain, typed DiscoveryError.
        with pytest.raises(DiscoveryError) as info:
            await client.get("/", ordinal=2)
        assert not isinstance(info.value, BaseExceptionGroup)
        assert (await client.get("/", ordinal=0)).json()["pod"] == f"{name}-0"


def _chain(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None and len(chain) < 1000:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _frames(error: BaseException) -> int:
    return sum(len(traceback.extract_tb(e.__traceback__)) for e in _chain(error))


async def _raised(
    attempt: Callable[[], Awaitable[object]], times: int
) -> list[tuple[BaseException, int]]:
    """What each of ``times`` calls of ``attempt`` raised (every call must raise), with the
    frames of its traceback and chain when it was caught."""
    raised = []
    for _ in range(times):
        try:
            await attempt()
        except Exception as exc:  # kept to compare, the type is checked after
            raised.append((exc, _frames(exc)))
        else:
            raise AssertionError("the request was expected to fail")
    return raised


def assert_each_raise_is_its_own(raised: list[tuple[BaseException, int]]) -> None:
    """A new exception for every request, none of which grows: the one raised by the lookup
    and the ones raised while it is remembered each have one size of traceback and chain."""
    errors = [exc for exc, _ in raised]
    assert len({id(e) for e in errors}) == len(errors), "one exception object raised again"
    assert len({frames for _, frames in raised}) <= 2, [frames for _, frames in raised]
    assert max(len(_chain(e)) for e in errors) <= 3


@pytest.mark.both_clients
async def test_a_remembered_lookup_failure_is_a_new_exception_for_every_request(
    hostile: LocalCluster,
) -> None:
    # A failed request-path lookup is remembered for a second; raising that one object for
    # every request chained every raiser's frames onto its traceback (24,000 frames after
    # 2,000 requests). Both lookups: a Pod by name (SERVFAIL) and the fallback (NXDOMAIN).
    name = unique("again")
    hostile.add_statefulset(name, 2, lb=None, serve=False)
    hostile.dns_set_mode("servfail", name=hostile.pod_fqdn(f"{name}-1"))
    async with make_client(hostile, f"{name}-hl", port=hostile.port, statefulset=name) as client:
        pinned = await _raised(lambda: client.get("/", ordinal=1), 20)
    assert all(isinstance(e, DiscoveryError) for e, _ in pinned), pinned[0]
    assert_each_raise_is_its_own(pinned)

    async with make_client(
        hostile, f"{name}-none", port=hostile.port, fallback=f"{name}-gone"
    ) as client:
        fallen = await _raised(lambda: client.get("/"), 20)
    assert all(isinstance(e, NoEndpointsAvailable) for e, _ in fallen), fallen[0]
    assert all("fallback Service" in str(e) for e, _ in fallen)
    assert_each_raise_is_its_own(fallen)


async def test_dns_that_drops_aaaa_costs_only_the_aaaa_answer(hostile: LocalCluster) -> None:
    name = unique("drop")
    pods = hostile.add_statefulset(name, 2, lb=None)
    hostile.dns_set_mode("drop", rdtype="AAAA")  # as some broken middleboxes do
    resolution = await discovery(hostile, f"{name}-hl", ip_family="dual", timeout=0.5).resolve()
    assert sorted(e.ip for e in resolution.endpoints) == sorted(p.ip for p in pods)
    assert resolution.partial


async def test_records_no_pod_can_have_are_skipped(
    hostile: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    name = unique("bad")
    pods = hostile.add_statefulset(name, 2, lb=None)
    service = f"{name}-hl"
    fqdn = hostile.fqdn(service)
    bad_v4 = ["0.0.0.0", "169.254.169.254", "224.0.0.1", "255.255.255.255", "240.0.0.1"]
    hostile.add_record(fqdn, "A", bad_v4)
    hostile.add_record(fqdn, "AAAA", ["::", "fe80::1", "ff02::1", "::ffff:127.0.0.1"])
    huge = f"{name}-99999999999999999999.{fqdn}"
    hostile.add_record(huge, "A", "127.0.0.2")
    hostile.add_record(
        hostile.srv_name(service),
        "SRV",
        [f"0 100 0 {name}-0.{fqdn}", "0 0 0 .", f"0 100 {hostile.port} {huge}"],
    )
    real = {(p.ip, p.port) for p in pods}
    with caplog.at_level(logging.WARNING, logger="headlesslb"):
        # Named port: SRV, with port 0, the target "." and an impossible ordinal among the Pods.
        async with make_client(hostile, service, ip_family="dual") as client:
            assert set(await served_by(client, 4)) == {f"{name}-0", f"{name}-1"}
            assert {(s.ip, s.port) for s in client.endpoints()} == real
            assert sorted(s.ordinal for s in client.endpoints()) == [0, 1]
            assert (await client.get("/", ordinal=1)).json()["pod"] == f"{name}-1"
        # Numeric port: the Service's A/AAAA records, with addresses no Pod can have.
        async with make_client(hostile, service, port=hostile.port, ip_family="dual") as client:
            assert set(await served_by(client, 4)) == {f"{name}-0", f"{name}-1"}
            assert {(s.ip, s.port) for s in client.endpoints()} == real
    assert not any("discovery failed" in m for m in messages(caplog))
    # A bad record that stays in DNS is logged once per discovery, not every round.
    caplog.clear()
    numeric = discovery(hostile, service, ip_family="dual")
    with caplog.at_level(logging.WARNING, logger="headlesslb.dns"):
        for _ in range(3):
            resolution = await numeric.resolve()
            assert {e.key for e in resolution.endpoints} == real and not resolution.partial
    assert len(messages(caplog)) == len(bad_v4) + 4


async def test_extreme_ttls_over_the_wire(hostile: LocalCluster) -> None:
    name = unique("ttl")
    hostile.add_statefulset(name, 1, lb=None)
    fqdn = hostile.fqdn(f"{name}-hl")
    hostile.add_record(f"zero.{fqdn}", "A", "127.0.0.3", ttl=0)
    hostile.add_record(f"max.{fqdn}", "A", "127.0.0.4", ttl=2**31 - 1)
    dns = discovery(hostile, f"{name}-hl")
    zero = await dns.resolve_name(f"zero.{fqdn}", 80)
    assert zero.ttl == 0 and [e.ip for e in zero.endpoints] == ["127.0.0.3"]
    top = await dns.resolve_name(f"max.{fqdn}", 80)
    assert top.ttl == 3600 and [e.ip for e in top.endpoints] == ["127.0.0.4"]


async def test_dns_modes_select_by_type_and_name(hostile: LocalCluster) -> None:
    name = unique("sel")
    hostile.add_statefulset(name, 2, lb=None)
    first, second = hostile.pod_fqdn(f"{name}-0"), hostile.pod_fqdn(f"{name}-1")
    hostile.add_record(first, "AAAA", "::1")
    v4 = discovery(hostile, f"{name}-hl")
    v6 = discovery(hostile, f"{name}-hl", ip_family="ipv6")

    hostile.dns_set_mode("servfail", rdtype="AAAA")
    assert len((await v4.resolve_name(first, 80)).endpoints) == 1
    with pytest.raises(DiscoveryError, match="SERVFAIL"):
        await v6.resolve_name(first, 80)

    hostile.dns_set_mode("refuse", name=second.upper())  # names match in any case
    with pytest.raises(DiscoveryError):
        await v4.resolve_name(second, 80)
    assert len((await v4.resolve_name(first, 80)).endpoints) == 1

    # The most specific setting wins; the mode alone resets the whole server.
    hostile.dns_set_mode("drop")
    hostile.dns_set_mode("normal", name=first, rdtype="AAAA")
    assert [e.ip for e in (await v6.resolve_name(first, 80)).endpoints] == ["::1"]
    hostile.dns_set_mode("normal")
    assert len((await v4.resolve_name(second, 80)).endpoints) == 1
    assert len((await v6.resolve_name(first, 80)).endpoints) == 1

    with pytest.raises(ClusterError, match="unknown DNS mode"):
        hostile.dns_set_mode("bogus", rdtype="A")  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="selector"):
        hostile.dns_set_mode("servfail", rdtype="NOPE")


async def test_a_question_gone_over_to_tcp_is_asked_over_udp_when_tcp_fails(
    hostile: LocalCluster,
) -> None:
    # After one answer too big for UDP a question goes straight to TCP. When the server's TCP
    # side then fails while UDP answers, every round used to fail and the Pod list froze.
    name = unique("tcp")
    hostile.add_deployment(name, 100, lb=None, serve=False)  # 100 A records: past 1,232 bytes
    fqdn = hostile.fqdn(f"{name}-hl")
    hostile.reset_dns_query_count()
    async with make_client(hostile, f"{name}-hl", port=hostile.port, refresh=QUIET) as client:
        refresher, pool = client.transport.refresher, client.transport.pool
        await refresher.wait_ready()
        assert len(pool.snapshot.members) == 100
        assert hostile.dns_query_count().count(fqdn, "A") == 2  # truncated over UDP, then TCP

        hostile.dns_set_mode("tcp_reset", name=fqdn)
        assert not (await refresher.refresh())[0]  # still too big for UDP: the failure stands
        assert isinstance(refresher.last_error, DiscoveryError)
        assert len(pool.snapshot.members) == 100

        pods = hostile.scale(name, 3)
        ok, _ = await refresher.refresh()
        assert ok and refresher.last_error is None
        assert {s.key for s in pool.snapshot.members} == {(p.ip, p.port) for p in pods}
        hostile.reset_dns_query_count()
        assert (await refresher.refresh())[0]
        assert hostile.dns_query_count().count(fqdn, "A") == 1  # UDP first again
