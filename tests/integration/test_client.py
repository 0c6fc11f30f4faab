"""HeadlessClient end to end over a LocalCluster: real DNS (UDP+TCP) and real HTTP on loopback."""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import Any

import anyio
import dns.flags
import dns.message
import dns.query
import httpx
import pytest

from headlesslb import (
    ConfigurationError,
    DiscoveryError,
    HeadlessClient,
    HeadlessTransport,
    HealthCheck,
    InvalidServiceName,
    NoEndpointsAvailable,
    NotStarted,
)
from headlesslb.core.events import AttemptFinished, EndpointsChanged
from headlesslb.core.names import expand_service_name
from headlesslb.io.dns import DnsDiscovery
from headlesslb.testing import LocalCluster

from .helpers import established_connections, eventually, make_client, served_by

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]


async def test_round_robin_spreads_evenly_where_clusterip_pins(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        counts = await served_by(client, 300)
    assert sorted(counts) == ["web-0", "web-1", "web-2"]
    assert all(99 <= n <= 101 for n in counts.values()), counts

    # Contrast: one keep-alive client through the ClusterIP/LB Service lands on a single Pod.
    lb: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(base_url=cluster.service_url("web-lb")) as plain:
        for _ in range(30):
            lb[(await plain.get("/")).json()["pod"]] += 1
    assert len(lb) == 1


async def test_response_reports_where_it_went(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        response = await client.get("/items/42?x=1")
    info = response.extensions["headlesslb"]
    body = response.json()
    pod = cluster.pod(body["pod"])
    assert info["endpoint"] == f"{pod.ip}:{pod.port}"
    assert info["hostname"] == pod.name and info["ordinal"] == pod.ordinal
    assert info["fallback"] is False and len(info["attempts"]) == 1
    # The caller's request is untouched: the URL and Host header keep the Service name.
    assert str(response.url) == "http://web-hl.default.svc.cluster.local/items/42?x=1"
    assert body["host"] == "web-hl.default.svc.cluster.local"
    assert body["path"] == "/items/42"


async def test_endpoints_view(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        await client.get("/")
        statuses = client.endpoints()
    assert [(s.hostname, s.ordinal) for s in statuses] == [("web-0", 0), ("web-1", 1), ("web-2", 2)]
    assert all(s.healthy and not s.draining and s.in_flight == 0 for s in statuses)
    assert sum(s.requests for s in statuses) == 1


async def test_scale_out_gets_traffic_within_ttl_plus_one_second() -> None:
    with LocalCluster(ttl=5) as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        async with make_client(cluster) as client:
            await served_by(client, 30)
            cluster.scale("web", 5)
            seen: set[str] = set()

            async def new_pods_served() -> bool:
                seen.update(await served_by(client, 5))
                return {"web-3", "web-4"} <= seen

            await eventually(new_pods_served, within=cluster.ttl + 1.0)


async def test_scale_in_stops_traffic_after_next_refresh(cluster: LocalCluster) -> None:
    cluster.scale("web", 5)
    async with make_client(cluster) as client:
        assert len(await served_by(client, 50)) == 5
        cluster.scale("web", 2)
        await client.transport.refresher.refresh()
        assert set(await served_by(client, 50)) == {"web-0", "web-1"}


async def test_connections_to_pods_that_leave_dns_are_closed(cluster: LocalCluster) -> None:
    ips = {p.ip for p in cluster.pods("web")}
    async with make_client(cluster) as client:
        await served_by(client, 6)
        assert established_connections(ips) == 3
        cluster.delete_service("web-hl")  # the Pods keep running; DNS no longer lists them
        await client.transport.refresher.refresh()
        # Keep-alive connections to departed Pods are closed, not left open until they expire.
        await eventually(lambda: established_connections(ips) == 0, within=2)


async def test_deployment_pods_have_no_hostnames() -> None:
    with LocalCluster(ttl=1) as cluster:
        cluster.add_deployment("app", replicas=3, headless="app-headless", lb="app-lb")
        async with make_client(cluster, "app-headless") as client:
            counts = await served_by(client, 30)
            assert len(counts) == 3
            assert all(s.hostname is None and s.ordinal is None for s in client.endpoints())


async def test_int_port_uses_a_records_only(cluster: LocalCluster) -> None:
    async with make_client(cluster, port=cluster.port) as client:
        assert len(await served_by(client, 30)) == 3
        assert all(s.hostname is None for s in client.endpoints())


async def test_thousand_pod_service_is_discovered_completely_over_tcp() -> None:
    with LocalCluster() as cluster:
        cluster.add_statefulset("big", replicas=1000, headless="big-hl", lb=None, serve=False)
        srv = "_http._tcp.big-hl.default.svc.cluster.local."
        ip, port = cluster.dns_address
        udp = dns.query.udp(
            dns.message.make_query(srv, "SRV", use_edns=0, payload=1232), ip, port=port, timeout=5
        )
        assert udp.flags & dns.flags.TC  # the UDP answer cannot hold it: TCP is the only way
        discovery = DnsDiscovery(
            expand_service_name("big-hl", namespace="default"),
            port="http",
            nameservers=[cluster.dns_address],
        )
        cluster.reset_dns_query_count()
        resolution = await discovery.resolve()
        queries = cluster.dns_query_count().total
    assert len({e.key for e in resolution.endpoints}) == 1000
    assert {e.port for e in resolution.endpoints} == {cluster.port}
    assert resolution.ttl == 5
    # The answer is too big for the Pods' addresses to ride along: no per-Pod query storm.
    assert queries <= 4, queries  # SRV and A, each tried over UDP, then TCP


async def test_headless_service_deleted_falls_back_and_returns(cluster: LocalCluster) -> None:
    async with make_client(cluster, fallback="web-lb") as client:
        await served_by(client, 3)
        cluster.delete_service("web-hl")

        async def served_by_fallback() -> bool:
            response = await client.get("/")
            return bool(response.extensions["headlesslb"]["fallback"])

        await eventually(served_by_fallback, within=cluster.ttl + 1.0)
        response = await client.get("/")
        assert response.status_code == 200
        assert response.json()["host"] == "web-lb.default.svc.cluster.local"
        assert response.extensions["headlesslb"]["service"] == "web-lb.default.svc.cluster.local"

        cluster.create_service("web-hl")

        async def back_on_pods() -> bool:
            response = await client.get("/")
            return not response.extensions["headlesslb"]["fallback"]

        await eventually(back_on_pods, within=cluster.ttl + 1.0)


async def test_no_endpoints_and_no_fallback_is_a_typed_error(cluster: LocalCluster) -> None:
    cluster.delete_service("web-hl")
    async with make_client(cluster) as client:
        with anyio.fail_after(5):
            with pytest.raises(NoEndpointsAvailable, match="no fallback"):
                await client.get("/")


async def test_dns_down_keeps_serving_from_the_stale_set(cluster: LocalCluster) -> None:
    async with make_client(cluster, discovery_timeout=0.5) as client:
        await served_by(client, 3)
        cluster.stop_dns()
        ok, _ = await client.transport.refresher.refresh()
        assert not ok and isinstance(client.transport.refresher.last_error, DiscoveryError)
        assert len(await served_by(client, 30)) == 3  # stale beats empty
        cluster.start_dns()
        cluster.scale("web", 4)
        ok, _ = await client.transport.refresher.refresh()
        assert ok and len(client.endpoints()) == 4


@pytest.mark.parametrize("with_fallback", [False, True])
async def test_no_nameserver_at_start(cluster: LocalCluster, with_fallback: bool) -> None:
    # Nothing listens on this loopback address: every DNS query fails.
    kwargs: dict[str, Any] = {"nameservers": ["127.0.0.1:9"], "discovery_timeout": 0.5}
    if with_fallback:
        kwargs["fallback"] = cluster.service_url("web-lb")
    async with make_client(cluster, **kwargs) as client:
        with anyio.fail_after(5):
            if with_fallback:
                response = await client.get("/")
                assert response.extensions["headlesslb"]["fallback"] is True
                assert response.json()["pod"].startswith("web-")
            else:
                with pytest.raises(DiscoveryError, match="cannot discover"):
                    await client.get("/")


@pytest.mark.async_only  # the async httpx transport in a plain httpx.AsyncClient
async def test_plain_httpx_client_with_the_transport(cluster: LocalCluster) -> None:
    transport = HeadlessTransport(
        "web-hl", port="http", nameservers=[cluster.nameserver], namespace="default"
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://web-hl") as client:
        pods = {(await client.get("/")).json()["pod"] for _ in range(6)}
        with pytest.raises(httpx.TransportError):  # our errors stay catchable the httpx way
            await client.get("/", extensions={"headlesslb": {"ordinal": 9}})
    assert pods == {"web-0", "web-1", "web-2"}


async def test_leaving_the_context_leaves_no_task_or_socket(cluster: LocalCluster) -> None:
    ips = {p.ip for p in cluster.pods("web")}
    client = make_client(cluster, health=HealthCheck(interval=0.1))
    async with client:
        await served_by(client, 9)
        assert established_connections(ips) >= 3  # keep-alive connections (and probes')
        assert client.transport.refresher.running
        assert client.transport.health is not None and client.transport.health.running
    assert established_connections(ips) == 0
    assert not client.transport.running
    assert not client.transport.refresher.running
    assert not client.transport.health.running
    with pytest.raises(NotStarted, match="was closed"):
        await client.get("/")


@pytest.mark.async_only  # a client never entered: the async API itself
async def test_client_used_outside_async_with(cluster: LocalCluster) -> None:
    # As the sync client, and as an SDK's httpx client: the first request starts discovery.
    client = make_client(cluster)
    assert not client.transport.running
    assert (await client.get("/")).status_code == 200
    assert client.transport.running
    await client.aclose()
    assert not client.transport.running
    with pytest.raises(NotStarted, match="closed"):
        await client.get("/")
    transport = HeadlessTransport("web-hl", nameservers=[cluster.nameserver], namespace="default")
    async with httpx.AsyncClient(transport=transport) as plain:
        pass
    with pytest.raises(NotStarted, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", "http://web-hl/"))
    del plain


@pytest.mark.async_only  # the async transport's own lifecycle
async def test_a_transport_never_entered_starts_on_its_first_requests_once(
    cluster: LocalCluster,
) -> None:
    # An SDK builds its httpx client and never enters it: the first requests, arriving
    # together, start one runtime and wait for its first answer; the client's aclose stops it.
    transport = HeadlessTransport(
        "web-hl", port="http", nameservers=[cluster.nameserver], namespace="default"
    )
    plain = httpx.AsyncClient(transport=transport, base_url="http://web-hl")
    cluster.reset_dns_query_count()
    responses: list[httpx.Response] = []

    async def get() -> None:
        responses.append(await plain.get("/"))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(get)
    assert [r.status_code for r in responses] == [200] * 20
    assert {r.extensions["headlesslb"]["hostname"] for r in responses} == {
        p.name for p in cluster.pods("web")
    }
    assert transport.running and transport.refresher.running
    assert cluster.dns_query_count().count(cluster.srv_name("web-hl"), "SRV") == 1  # one round
    await plain.aclose()
    assert not transport.running and not transport.refresher.running
    with pytest.raises(NotStarted, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", "http://web-hl/"))


@pytest.mark.async_only
async def test_open_starts_a_module_level_client_once(cluster: LocalCluster) -> None:
    client = make_client(cluster)
    opened = await asyncio_gather_open(client, 5)
    assert opened == [client] * 5 and client.transport.running
    assert (await client.get("/")).status_code == 200
    await client.aclose()
    with pytest.raises(NotStarted, match="closed"):
        await client.open()


async def asyncio_gather_open(client: HeadlessClient, n: int) -> list[HeadlessClient]:
    """``client.open()`` from ``n`` tasks at once."""
    results: list[HeadlessClient] = []

    async def open_it() -> None:
        results.append(await client.open())

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(open_it)
    return results


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"service": "web_hl"}, InvalidServiceName, "DNS-1123"),
        (
            {"service": "web-hl", "namespace": None, "resolv_conf": "/nonexistent"},
            InvalidServiceName,
            "namespace",
        ),
        ({"port": 0}, ConfigurationError, "out of range"),
        ({"port": "not_a_port"}, ConfigurationError, "IANA"),
        ({"nameservers": ["dns.example"]}, ConfigurationError, "not an IP address"),
        ({"nameservers": ["127.0.0.1:70000"]}, ConfigurationError, "port"),
        ({"nameservers": []}, ConfigurationError, "empty"),
        ({"scheme": "ftp"}, ConfigurationError, "scheme"),
        ({"fallback": "ftp://x"}, ConfigurationError, "fallback URL"),
        ({"fallback": "Bad_Name"}, InvalidServiceName, "DNS-1123"),
        ({"ip_family": "ipv5"}, ConfigurationError, "ip_family"),
        ({"writes_to": -1}, ConfigurationError, "writes_to"),
    ],
)
def test_bad_configuration_is_rejected_up_front(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {
        "service": "web-hl",
        "namespace": "default",
        "nameservers": ["127.0.0.1:53"],
        **kwargs,
    }
    service = args.pop("service")
    with pytest.raises(error, match=match):
        HeadlessTransport(service, **args)


async def test_bad_routing_options_are_rejected(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        with pytest.raises(ConfigurationError, match="ordinal"):
            await client.get("/", ordinal=-1)
        with pytest.raises(ConfigurationError, match="key"):
            await client.get("/", key=1.5)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="unknown"):
            await client.http.get("/", extensions={"headlesslb": {"shard": 1}})


async def test_other_hosts_are_not_balanced(cluster: LocalCluster) -> None:
    """A URL for another host (say, a redirect elsewhere) goes there, as plain httpx would."""
    async with make_client(cluster) as client:
        for name in ("web-hl", "web-hl.default", "web-hl.default.svc"):
            response = await client.get(f"http://{name}/")
            assert "headlesslb" in response.extensions  # all spellings of the Service balance
        direct = await client.get(cluster.url("web-2", "/direct"))
        assert direct.json()["pod"] == "web-2"
        assert "headlesslb" not in direct.extensions


async def test_routing_options_in_extensions_are_kept(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        pods = {
            (await client.get("/", extensions={"headlesslb": {"ordinal": 1}})).json()["pod"]
            for _ in range(6)
        }
        assert pods == {"web-1"}
        # Keyword arguments win over the extension.
        response = await client.get("/", ordinal=2, extensions={"headlesslb": {"ordinal": 1}})
        assert response.json()["pod"] == "web-2"


async def test_clients_of_one_service_share_one_runtime(
    cluster: LocalCluster, client_flavor: str
) -> None:
    """Four clients of one Service and configuration: one refresher, pool and health checker
    (async: on the loop; sync: on one thread), DNS and probes as for one client; the first to
    close leaves the others working, the last stops it. A fifth, configured otherwise, runs its
    own."""
    from headlesslb.aio.host import _RUNTIMES as async_runtimes
    from headlesslb.io.shared import answers
    from headlesslb.sync.host import _RUNTIMES as sync_runtimes

    def discovery_threads() -> int:
        return sum(t.name == "headlesslb discovery" for t in threading.enumerate())

    fqdn = cluster.fqdn("web-hl")
    check = HealthCheck(interval=0.2)
    seen: list[list[object]] = [[] for _ in range(4)]
    threads = discovery_threads()
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                make_client(cluster, port=cluster.port, health=check, observers=[box.append])
            )
            for box in seen
        ]
        other = await stack.enter_async_context(
            make_client(cluster, port=cluster.port, health=HealthCheck(interval=0.3))
        )
        for client in clients:
            await client.get("/")
        runtime = clients[0].transport.runtime
        assert all(c.transport.runtime is runtime for c in clients)
        assert all(c.transport.pool is runtime.pool for c in clients)
        assert other.transport.runtime is not runtime
        if client_flavor == "sync":
            assert discovery_threads() == threads + 2  # one per runtime, not one per client
        # Membership reaches every client's observers; each client's requests only its own.
        for box in seen:
            assert any(isinstance(e, EndpointsChanged) and len(e.added) == 3 for e in box)
            assert sum(isinstance(e, AttemptFinished) for e in box) == 1

        refresher, health = runtime.refresher, runtime.health
        own_health = other.transport.runtime.health
        cluster.reset_stats()
        rounds, probe_rounds, other_rounds = refresher.rounds, health.rounds, own_health.rounds
        await eventually(lambda: health.rounds >= probe_rounds + 3, within=5)
        probes = sum(cluster.stats()["health"].values())
        other_rounds = own_health.rounds - other_rounds
        # Probes at the Pods: this runtime's rounds and the other's, 3 Pods each, give or take
        # a round in flight at either end; four unshared clients would have sent 4x.
        shared_rounds = health.rounds - probe_rounds
        assert probes <= 3 * (shared_rounds + other_rounds + 4), (probes, shared_rounds)
        asked = cluster.dns_query_count().count(fqdn, "A")
        assert asked <= 2 * (refresher.rounds - rounds + 2), asked  # two runtimes' rounds

        await clients[0].aclose()
        assert refresher.running and health.running
        for client in clients[1:]:
            assert (await client.get("/")).status_code == 200
        await eventually(lambda: refresher.rounds > rounds + 1, within=4)
    assert not refresher.running and not health.running
    assert len(async_runtimes) == len(sync_runtimes) == len(answers) == 0
    await eventually(lambda: discovery_threads() == threads, within=2)
