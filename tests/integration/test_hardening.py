"""Regression tests for the request path's hardening: TLS and ports decided by the client, no
traffic after close, caches under the refresh policy, routing precedence, lifecycle from any task.

Each test failed before its fix; all run on asyncio and trio over a real LocalCluster.
"""

from __future__ import annotations

import collections
import time

import anyio
import httpx
import pytest

from headlesslb import (
    HeadlessClient,
    HealthCheck,
    InvalidRequest,
    NoEndpointsAvailable,
    OrdinalNotFound,
    RefreshPolicy,
    RequestOptions,
    RetryPolicy,
)
from headlesslb.errors import ClientClosed, ConfigurationError
from headlesslb.testing import LocalCluster

from .helpers import established_connections, eventually, make_client, served_by

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]

FQDN = "web-hl.default.svc.cluster.local"


def _pod_ips(cluster: LocalCluster) -> set[str]:
    return {p.ip for p in cluster.pods("web")}


def _served(cluster: LocalCluster) -> int:
    return sum(cluster.requests_served(p.name) for p in cluster.pods("web"))


# -- 1. the client's scheme decides TLS, never the URL ------------------------------------------
async def test_http_url_on_an_https_client_is_refused_before_a_byte_leaves(
    cluster: LocalCluster,
) -> None:
    # The Pods here speak plain HTTP: before the fix this request *succeeded*, proving it went out
    # in clear text although the client was configured for TLS.
    async with make_client(cluster, scheme="https") as client:
        with pytest.raises(InvalidRequest, match="over https"):
            await client.get(f"http://{FQDN}/secret", headers={"authorization": "Bearer x"})
        with pytest.raises(InvalidRequest):
            await client.get("http://web-hl/secret")
    assert _served(cluster) == 0


async def test_https_url_on_an_http_client_is_refused(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        with pytest.raises(InvalidRequest, match="over http"):
            await client.get(f"https://{FQDN}/")
        assert (await client.get("/")).status_code == 200
    assert _served(cluster) == 1


async def test_fallback_url_scheme_decides_tls_for_the_fallback(cluster: LocalCluster) -> None:
    lb = cluster.service("web-lb")
    cluster.delete_service("web-hl")
    # Pods would be reached over https, but the fallback URL says http: it is honoured.
    async with make_client(cluster, scheme="https", fallback=f"http://{lb.ip}:{lb.port}") as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.extensions["headlesslb"]["fallback"] is True
    assert response.json()["host"] == f"{lb.ip}:{lb.port}"


def test_fallback_url_parts_that_cannot_be_honoured_are_refused() -> None:
    for spec in (
        "http://web-lb:8080/api",
        "http://web-lb:8080/?x=1",
        "http://user:pw@web-lb:8080",
        "http://web-lb#frag",
        "ftp://web-lb",
    ):
        with pytest.raises(ConfigurationError, match="fallback URL"):
            make_client(_NoCluster(), fallback=spec)


class _NoCluster:
    """Enough of a LocalCluster for constructing a client (nothing is sent)."""

    namespace = "default"
    domain = "cluster.local."
    nameserver = "127.0.0.1:53"


# -- 2. nothing is sent after close --------------------------------------------------------------
async def test_request_in_flight_at_close_fails_and_is_not_retried(cluster: LocalCluster) -> None:
    for pod in cluster.pods("web"):
        cluster.slow(pod.name, 6)
    outcome: dict[str, object] = {}
    client = make_client(cluster, retry=RetryPolicy(max_attempts=3))
    async with anyio.create_task_group() as tg:
        await client.__aenter__()

        async def request() -> None:
            started = time.monotonic()
            try:
                await client.get("/")
            except httpx.TransportError as exc:
                outcome["error"] = exc
            outcome["took"] = time.monotonic() - started

        tg.start_soon(request)
        await eventually(lambda: _served(cluster) == 1, within=5)
        await client.aclose()
    assert isinstance(outcome.get("error"), httpx.TransportError), outcome
    assert outcome["took"] < 4  # the slow Pods would have answered after 6 s
    await anyio.sleep(0.1)  # the cluster counts a request once it arrives: give a retry time
    assert _served(cluster) == 1  # no retry on another Pod
    assert established_connections(_pod_ips(cluster)) == 0


async def test_no_connection_is_opened_after_close(cluster: LocalCluster) -> None:
    client = make_client(cluster)
    async with client:
        await client.get("/")
    transport = client.transport
    with pytest.raises(ClientClosed):
        await transport._sender.send_to(
            httpx.Request("GET", f"http://{FQDN}/"), "127.0.0.1", 1, scheme=b"http", sni=None
        )
    assert established_connections(_pod_ips(cluster)) == 0


# -- 5. request-path DNS caches obey the refresh policy -----------------------------------------
FAST = RefreshPolicy(min_interval=0.2, max_interval=0.5)


async def test_pod_by_name_cache_is_capped_by_the_refresh_policy() -> None:
    with LocalCluster(ttl=3600) as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        async with make_client(
            cluster, port=cluster.port, statefulset="web", refresh=FAST
        ) as client:
            with pytest.raises(OrdinalNotFound):
                await client.get("/", ordinal=3)  # cached as missing, SOA minimum 3600 s
            cluster.scale("web", 4)

            async def pinned_reaches_web_3() -> bool:
                try:
                    return (await client.get("/", ordinal=3)).json()["pod"] == "web-3"
                except OrdinalNotFound:
                    return False

            await eventually(pinned_reaches_web_3, within=5)


async def test_pod_by_name_cache_drops_an_address_that_refuses() -> None:
    with LocalCluster(ttl=3600) as cluster:
        cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        async with make_client(cluster, port=cluster.port, statefulset="web") as client:
            assert (await client.get("/", ordinal=1)).json()["pod"] == "web-1"
            old_ip = cluster.pod("web-1").ip
            cluster.scale("web", 1)
            cluster.scale("web", 2)  # web-1 comes back on a new address
            assert cluster.pod("web-1").ip != old_ip
            response = await client.get("/", ordinal=1)  # the old address refuses: look again
            assert response.json()["pod"] == "web-1"


async def test_concurrent_pod_by_name_lookups_share_one_query(cluster: LocalCluster) -> None:
    async with make_client(cluster, port=cluster.port, statefulset="web") as client:
        await client.get("/")
        cluster.reset_dns_query_count()
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(_pinned_get, client, 2)
        pods = collections.Counter()
        for _ in range(5):
            pods[(await client.get("/", ordinal=2)).json()["pod"]] += 1
    assert pods == {"web-2": 5}
    assert cluster.dns_query_count().count(f"web-2.{FQDN}", "A") == 1


async def test_fallback_address_cache_is_capped_and_dropped_on_refusal() -> None:
    with LocalCluster(ttl=3600) as cluster:
        cluster.add_statefulset("web", replicas=2, headless="web-hl", lb="web-lb")
        cluster.delete_service("web-hl")
        lb_name = "web-lb.default.svc.cluster.local"
        async with make_client(
            cluster, port=cluster.port, fallback="web-lb", refresh=FAST
        ) as client:
            assert (await client.get("/")).extensions["headlesslb"]["fallback"] is True
            first = cluster.dns_query_count().count(lb_name, "A")

            async def looked_up_again() -> bool:
                await client.get("/")
                return cluster.dns_query_count().count(lb_name, "A") > first

            await eventually(looked_up_again, within=3)  # not after 3600 s
            cluster.delete_service("web-lb")  # its address now refuses connections
            before = cluster.dns_query_count().count(lb_name, "A")
            with pytest.raises(httpx.TransportError):
                await client.get("/")
            with pytest.raises(httpx.TransportError):
                await client.get("/")
            assert cluster.dns_query_count().count(lb_name, "A") > before


# -- 6. writes_to wins for writes ----------------------------------------------------------------
async def test_writes_to_wins_over_key_for_writes(cluster: LocalCluster) -> None:
    async with make_client(cluster, writes_to=0) as client:
        writers = {(await client.post("/", key=f"user-{i}")).json()["pod"] for i in range(20)}
        readers = {(await client.get("/", key=f"user-{i}")).json()["pod"] for i in range(20)}
        explicit = (await client.post("/", ordinal=2)).json()["pod"]
    assert writers == {"web-0"}
    assert len(readers) > 1  # reads still shard by key
    assert explicit == "web-2"  # an explicit ordinal= is the most specific: it wins


# -- 7. closing from another task ----------------------------------------------------------------
@pytest.mark.async_only  # tasks of one loop; the sync client: any thread (test_fork.py)
async def test_client_opened_in_one_task_can_be_closed_from_another(
    cluster: LocalCluster,
) -> None:
    client = make_client(cluster, health=HealthCheck(interval=0.2))
    opened = anyio.Event()

    async def open_lazily() -> None:  # a request handler that opens the client, then ends
        await client.__aenter__()
        assert (await client.get("/")).status_code == 200
        opened.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(open_lazily)
    await opened.wait()
    assert (await client.get("/")).status_code == 200  # used from yet another task
    transport = client.transport
    assert transport.refresher.running and transport.health is not None

    async def shutdown_hook() -> None:
        await client.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(shutdown_hook)
    assert not transport.refresher.running and not transport.health.running
    assert transport.runtime.clients == 0  # detached, and its runtime stopped (above)
    count = cluster.dns_query_count().total
    await anyio.sleep(1.5)  # longer than the TTL: a live refresher would query again
    assert cluster.dns_query_count().total == count
    await client.aclose()  # again: nothing happens


async def test_closing_from_another_task_while_the_owner_is_inside_async_with(
    cluster: LocalCluster,
) -> None:
    client = make_client(cluster)
    async with client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.aclose)
        assert not client.transport.running
        with pytest.raises(Exception, match="closed"):
            await client.get("/")
    assert not client.transport.refresher.running


# -- 8. start_unhealthy: never-probed Pods get no traffic, panic included ------------------------
async def test_start_unhealthy_pods_get_no_traffic_even_in_panic(cluster: LocalCluster) -> None:
    check = HealthCheck(interval=0.2, timeout=0.5, start_unhealthy=True)
    cluster.fail("web-1", 503)
    cluster.fail("web-2", 503)
    async with make_client(cluster, health=check) as client:
        await eventually(lambda: any(s.healthy for s in client.endpoints()), within=5)
        # One of three admitted is below the 50 % panic threshold: still only web-0.
        assert set(await served_by(client, 20)) == {"web-0"}
        with pytest.raises(NoEndpointsAvailable, match="health check"):
            await client.get("/", ordinal=1)


async def test_start_unhealthy_with_no_pod_passing_is_no_endpoints(cluster: LocalCluster) -> None:
    check = HealthCheck(interval=0.2, timeout=0.5, start_unhealthy=True)
    for pod in cluster.pods("web"):
        cluster.fail(pod.name, 503)
    async with make_client(cluster, health=check) as client:
        await eventually(lambda: client.transport.health.rounds >= 2, within=5)  # type: ignore[union-attr]
        with pytest.raises(NoEndpointsAvailable):
            await client.get("/")
    assert _served(cluster) == 0


# -- 9. every spelling of the Service; ports decided by the client -------------------------------
async def test_absolute_fqdn_with_trailing_dot_is_the_service(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        response = await client.get(f"http://{FQDN}./x")
    assert response.extensions["headlesslb"]["hostname"] in {"web-0", "web-1", "web-2"}


async def test_a_url_naming_another_port_is_refused(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:  # named port: the number comes from SRV
        with pytest.raises(InvalidRequest, match="another port"):
            await client.get(f"http://{FQDN}:{cluster.port}/")
    async with make_client(cluster, port=cluster.port) as client:
        assert (await client.get(f"http://{FQDN}:{cluster.port}/")).status_code == 200
        with pytest.raises(InvalidRequest, match=f"its port {cluster.port}"):
            await client.get(f"http://{FQDN}:{cluster.port + 1}/")
    assert _served(cluster) == 1


# -- 10. RequestOptions validated like the mapping; options never vanish --------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"ordinal": True},
        {"ordinal": -1},
        {"ordinal": 2**31},
        {"ordinal": 1.0},
        {"key": 1.5},
        {"key": True},
        {"key": "\ud800"},
        {"key": 10**5000},
        {"idempotent": "yes"},
        {"read_body": 1},
        {"key": "a", "ordinal": 1},
    ],
)
def test_request_options_objects_are_validated_like_the_mapping(
    options: dict[str, object],
) -> None:
    with pytest.raises(InvalidRequest):
        RequestOptions(**options)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        RequestOptions.from_extension(options)


async def test_routing_options_for_another_host_raise(cluster: LocalCluster) -> None:
    async with make_client(cluster) as client:
        with pytest.raises(InvalidRequest, match="routing options"):
            await client.get("http://127.0.0.1:9/", key="user-1")
        with pytest.raises(InvalidRequest, match="routing options"):
            await client.http.get(
                "http://127.0.0.1:9/", extensions={"headlesslb": RequestOptions(ordinal=1)}
            )


# -- 16. a departed Pod's connections close when its last request ends ---------------------------
async def test_departed_pod_connections_close_when_the_last_request_ends(
    cluster: LocalCluster,
) -> None:
    async with make_client(cluster, statefulset="web") as client:
        await served_by(client, 6)
        leaving = cluster.pod("web-2")
        cluster.slow("web-2", 1.0)
        async with client.stream("GET", "/", ordinal=2) as response:
            cluster.scale("web", 2)
            await client.transport.refresher.refresh()
            assert (leaving.ip, leaving.port) in client.transport._sender.addresses  # in flight
            await response.aread()
        assert (leaving.ip, leaving.port) not in client.transport._sender.addresses
        assert established_connections({leaving.ip}) == 0


async def _pinned_get(client: object, ordinal: int) -> None:
    response = await client.get("/", ordinal=ordinal)  # type: ignore[attr-defined]
    assert response.status_code == 200


# -- 11. every argument of the client and the transport is checked at construction -------------
@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("discovery_timeout", float("nan")),
        ("discovery_timeout", 0),
        ("discovery_timeout", "3"),
        ("writes_to", True),
        ("writes_to", 2**31),
        ("writes_to", 1.0),
        ("scheme", "HTTPS"),
        ("scheme", ["http"]),
        ("retry", {"max_attempts": 2}),
        ("refresh", 5),
        ("outlier", "strict"),
        ("health", True),
        ("limits", 10),
        ("rng", 42),
        ("sharding", "jump"),
        ("resolv_conf", 7),
        ("namespace", 5),
        ("namespace", "Not_A_Label"),
        ("statefulset", "web.x"),
        ("statefulset", "w" * 53),
        ("verify", 1),
        ("http2", "yes"),
        ("clock", 0.0),
        ("timeout", float("inf")),
        ("timeout", -1),
        ("follow_redirects", 1),
        ("fallback", 80),
        ("nameservers", ["127.0.0.1:0"]),
        ("nameservers", [53]),
        ("port", 0),
        ("port", True),
    ],
)
def test_every_argument_is_validated_at_construction(argument: str, value: object) -> None:
    kwargs: dict[str, object] = {
        "namespace": "default",
        "nameservers": ["127.0.0.1:53"],
        argument: value,
    }
    with pytest.raises(ConfigurationError, match=argument.split("_")[0]):
        HeadlessClient("web-hl", **kwargs)  # type: ignore[arg-type]


async def test_start_unhealthy_first_request_waits_for_the_first_probes(
    cluster: LocalCluster,
) -> None:
    check = HealthCheck(interval=30, timeout=0.5, start_unhealthy=True)
    async with make_client(cluster, health=check) as client:
        response = await client.get("/")  # not NoEndpointsAvailable: the probes came first
    assert response.status_code == 200
