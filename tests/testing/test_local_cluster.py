"""LocalCluster over real sockets: dnspython (sync) to its DNS server, httpx (sync) to Pods/LB."""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest

from headlesslb.testing import ClusterError, LocalCluster


@pytest.fixture
def local_cluster(headlesslb_cluster: LocalCluster) -> LocalCluster:
    """The plugin's fresh cluster per test, under a short name."""
    return headlesslb_cluster


def client(**kwargs: object) -> httpx.Client:
    # trust_env=False: never pick up proxy settings, every byte must stay on loopback.
    return httpx.Client(trust_env=False, timeout=5.0, **kwargs)  # type: ignore[arg-type]


@functools.cache
def _fresh_connections() -> httpx.Client:
    # One client (building one costs ~20 ms of SSL set-up), but a new connection per request.
    return client(limits=httpx.Limits(max_keepalive_connections=0))


def get(url: str) -> httpx.Response:
    """GET on a new connection."""
    return _fresh_connections().get(url)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def query(
    cluster: LocalCluster,
    name: str,
    rdtype: str = "A",
    *,
    tcp: bool = False,
    edns: int | None = None,
    timeout: float = 10.0,  # a first 1,000-record answer takes the server a while to render
) -> dns.message.Message:
    ip, port = cluster.dns_address
    if edns is None:
        msg = dns.message.make_query(name, rdtype)
    else:
        msg = dns.message.make_query(name, rdtype, use_edns=0, payload=edns)
    if tcp:
        return dns.query.tcp(msg, ip, port=port, timeout=timeout)
    return dns.query.udp(msg, ip, port=port, timeout=timeout)


def addresses(msg: dns.message.Message) -> set[str]:
    return {rd.address for rrset in msg.answer for rd in rrset if rrset.rdtype == dns.rdatatype.A}


def dns_ips(cluster: LocalCluster, service: str) -> set[str]:
    msg = query(cluster, cluster.fqdn(service), tcp=True)
    return addresses(msg) if msg.rcode() == dns.rcode.NOERROR else set()


# --- addresses and start-up --------------------------------------------------------------


def test_addresses_are_loopback_and_distinct(local_cluster: LocalCluster) -> None:
    pods = local_cluster.add_statefulset("web", 3)
    dns_ip, dns_port = local_cluster.dns_address
    assert local_cluster.nameserver == f"{dns_ip}:{dns_port}"
    assert dns_ip.endswith(".53")
    lb = local_cluster.service("web-lb")
    assert lb.ip is not None and lb.port == local_cluster.port
    ips = [p.ip for p in pods] + [dns_ip, lb.ip]
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("127.0.0.0/8") for ip in ips)
    assert len(set(ips)) == len(ips)
    assert {p.port for p in pods} == {local_cluster.port}
    assert [(p.name, p.hostname, p.ordinal) for p in pods] == [
        ("web-0", "web-0", 0),
        ("web-1", "web-1", 1),
        ("web-2", "web-2", 2),
    ]
    assert local_cluster.url("web-1") == f"http://{pods[1].ip}:{pods[1].port}"
    assert local_cluster.service_url("web-lb", "/x") == f"http://{lb.ip}:{lb.port}/x"


def test_start_is_fast_and_close_is_clean() -> None:
    t0 = time.monotonic()
    cluster = LocalCluster()
    started = time.monotonic() - t0
    proc = cluster.process
    assert proc.is_alive()
    cluster.add_deployment("app", 2)
    url = cluster.url(cluster.pods("app")[0].name)
    assert get(url).status_code == 200
    cluster.close()
    cluster.close()  # twice is fine
    assert cluster.closed
    assert not proc.is_alive()
    assert proc.exitcode == 0
    with pytest.raises(ClusterError):
        cluster.pods()
    with pytest.raises(httpx.ConnectError):
        get(url)
    # Generous: a loaded CI box; a quiet one takes ~0.2 s.
    assert started < 10


def test_child_exits_when_parent_dies(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys
            from headlesslb.testing import LocalCluster
            if __name__ == "__main__":
                c = LocalCluster()
                print(c.pid, flush=True)
                os._exit(0)  # no close(), no atexit: the pipe's EOF must be enough
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.strip())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie reparented to us (pid 1 in a container) still "exists": check its state.
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        except OSError:
            return True

    wait_until(gone, timeout=10)


# --- DNS -----------------------------------------------------------------------------------


def test_headless_a_srv_and_pod_names(local_cluster: LocalCluster) -> None:
    pods = local_cluster.add_statefulset("web", 3, port_name="http")
    fqdn = local_cluster.fqdn("web-hl")
    assert fqdn == "web-hl.default.svc.cluster.local."

    a = query(local_cluster, fqdn)
    assert a.rcode() == dns.rcode.NOERROR and a.flags & dns.flags.AA
    assert addresses(a) == {p.ip for p in pods}
    assert a.answer[0].ttl == 5

    srv = query(local_cluster, f"_http._tcp.{fqdn}", "SRV")
    records = sorted((rd.priority, rd.weight, rd.port, rd.target.to_text()) for rd in srv.answer[0])
    assert records == [(0, 100, local_cluster.port, f"web-{i}.{fqdn}") for i in range(3)]
    glue = {rrset.name.to_text(): rrset[0].address for rrset in srv.additional}
    assert glue == {f"{p.name}.{fqdn}": p.ip for p in pods}

    for pod in pods:
        assert local_cluster.pod_fqdn(pod.name) == f"{pod.name}.{fqdn}"
        assert addresses(query(local_cluster, f"{pod.name}.{fqdn}")) == {pod.ip}
    # Names are case-insensitive.
    assert addresses(query(local_cluster, fqdn.upper())) == {p.ip for p in pods}


def test_deployment_names_are_dashed_ips(local_cluster: LocalCluster) -> None:
    pods = local_cluster.add_deployment("app", 3, headless="app-headless", lb=None)
    assert all(p.name.startswith("app-") and len(p.name) == 9 for p in pods)
    assert all(p.hostname is None and p.ordinal is None for p in pods)
    fqdn = local_cluster.fqdn("app-headless")
    srv = query(local_cluster, local_cluster.srv_name("app-headless"), "SRV")
    targets = {rd.target.to_text() for rd in srv.answer[0]}
    assert targets == {f"{p.ip.replace('.', '-')}.{fqdn}" for p in pods}
    for pod in pods:
        name = local_cluster.pod_fqdn(pod.name)
        assert name == f"{pod.ip.replace('.', '-')}.{fqdn}"
        assert addresses(query(local_cluster, name)) == {pod.ip}
    with pytest.raises(ClusterError):
        local_cluster.service("app-lb")


def test_lb_service_records(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 2, port_name="web")
    lb = local_cluster.service("web-lb")
    assert addresses(query(local_cluster, lb.fqdn)) == {lb.ip}
    srv = query(local_cluster, f"_web._tcp.{lb.fqdn}", "SRV")
    [rd] = list(srv.answer[0])
    assert (rd.port, rd.target.to_text()) == (local_cluster.port, lb.fqdn)
    assert {rrset[0].address for rrset in srv.additional} == {lb.ip}


def test_nxdomain_nodata_refused(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    fqdn = local_cluster.fqdn("web-hl")

    nx = query(local_cluster, "nope.default.svc.cluster.local.")
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    assert nx.authority and nx.authority[0].rdtype == dns.rdatatype.SOA

    for name, rdtype in [(fqdn, "AAAA"), (f"web-0.{fqdn}", "AAAA"), (fqdn, "SRV")]:
        nodata = query(local_cluster, name, rdtype)
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer, (name, rdtype)
    # Empty non-terminals exist too.
    assert query(local_cluster, "default.svc.cluster.local.").rcode() == dns.rcode.NOERROR
    assert query(local_cluster, f"_tcp.{fqdn}", "SRV").rcode() == dns.rcode.NOERROR

    refused = query(local_cluster, "example.com.")
    assert refused.rcode() == dns.rcode.REFUSED


def test_headless_without_ready_pods_is_nxdomain(local_cluster: LocalCluster) -> None:
    local_cluster.add_deployment("app", 0)
    assert query(local_cluster, local_cluster.fqdn("app-hl")).rcode() == dns.rcode.NXDOMAIN
    # The LB Service exists even without endpoints.
    assert query(local_cluster, local_cluster.fqdn("app-lb")).rcode() == dns.rcode.NOERROR


def test_ttl_argument() -> None:
    with LocalCluster(ttl=30, namespace="shop", domain="example.internal") as cluster:
        cluster.add_statefulset("db", 1)
        fqdn = cluster.fqdn("db-hl")
        assert fqdn == "db-hl.shop.svc.example.internal."
        assert query(cluster, fqdn).answer[0].ttl == 30


def test_truncation_and_tcp_for_1100_pods(local_cluster: LocalCluster) -> None:
    # 1,100: an SRV record here is 53 bytes plus its dashed-IP label (9 to 15 characters, by the
    # cluster's random address block), so 1,000 short ones could still fit in 64 KiB.
    pods = local_cluster.add_deployment("big", 1100, lb=None, serve=False)
    assert len({p.ip for p in pods}) == 1100
    fqdn = local_cluster.fqdn("big-hl")

    plain = query(local_cluster, fqdn)
    assert plain.flags & dns.flags.TC and not plain.answer
    edns = query(local_cluster, fqdn, edns=1232)
    assert edns.flags & dns.flags.TC and not edns.answer

    full = query(local_cluster, fqdn, tcp=True)
    assert not full.flags & dns.flags.TC
    assert addresses(full) == {p.ip for p in pods}

    # SRV targets are never compressed: 1,100 dashed-IP targets exceed 64 KiB even over TCP, so
    # (as CoreDNS does) the glue goes, then as many records as fit are sent with TC set.
    srv = query(local_cluster, local_cluster.srv_name("big-hl"), "SRV", tcp=True)
    assert srv.flags & dns.flags.TC and not srv.additional
    assert 900 < len(srv.answer[0]) < 1100


def test_srv_for_1000_statefulset_pods_over_tcp(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("big", 1000, lb=None, serve=False)
    srv = query(local_cluster, local_cluster.srv_name("big-hl"), "SRV", tcp=True)
    assert not srv.flags & dns.flags.TC
    assert len(srv.answer[0]) == 1000  # the answer fits once the glue is dropped
    targets = {rd.target.labels[0].decode() for rd in srv.answer[0]}
    assert targets == {f"big-{i}" for i in range(1000)}


def test_truncation_threshold(local_cluster: LocalCluster) -> None:
    local_cluster.add_deployment("mid", 40, lb=None, serve=False)  # ~650 bytes of A records
    fqdn = local_cluster.fqdn("mid-hl")
    plain = query(local_cluster, fqdn)
    assert plain.flags & dns.flags.TC and not plain.answer
    with_edns = query(local_cluster, fqdn, edns=1232)
    assert not with_edns.flags & dns.flags.TC and len(addresses(with_edns)) == 40
    local_cluster.scale("mid", 10)
    small = query(local_cluster, fqdn)
    assert not small.flags & dns.flags.TC and len(addresses(small)) == 10


def test_tcp_connection_carries_several_queries(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 2)
    ip, port = local_cluster.dns_address
    with socket.create_connection((ip, port), timeout=2) as sock:
        for name in (local_cluster.fqdn("web-hl"), local_cluster.fqdn("web-lb")):
            dns.query.send_tcp(sock, dns.message.make_query(name, "A"))
            reply, _ = dns.query.receive_tcp(sock)
            assert reply.answer


def test_stop_and_start_dns(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    fqdn = local_cluster.fqdn("web-hl")
    local_cluster.stop_dns()
    with pytest.raises((dns.exception.Timeout, ConnectionRefusedError)):
        query(local_cluster, fqdn, timeout=0.3)
    with pytest.raises(ConnectionRefusedError):
        query(local_cluster, fqdn, tcp=True, timeout=1)
    local_cluster.start_dns()
    assert len(addresses(query(local_cluster, fqdn))) == 1
    assert len(addresses(query(local_cluster, fqdn, tcp=True))) == 1


def test_dns_modes(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    fqdn = local_cluster.fqdn("web-hl")
    local_cluster.dns_set_mode("servfail")
    assert query(local_cluster, fqdn).rcode() == dns.rcode.SERVFAIL
    local_cluster.dns_set_mode("refuse")
    assert query(local_cluster, fqdn).rcode() == dns.rcode.REFUSED
    local_cluster.dns_set_mode("drop")
    with pytest.raises(dns.exception.Timeout):
        query(local_cluster, fqdn, timeout=0.3)
    local_cluster.dns_set_mode("normal")
    assert query(local_cluster, fqdn).rcode() == dns.rcode.NOERROR
    with pytest.raises(ClusterError, match="unknown DNS mode"):
        local_cluster.dns_set_mode("bogus")  # type: ignore[arg-type]


def test_dns_tcp_reset_mode_resets_tcp_while_udp_answers(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 2)
    fqdn, other = local_cluster.fqdn("web-hl"), local_cluster.fqdn("web-lb")
    local_cluster.dns_set_mode("tcp_reset", name=fqdn)
    assert len(addresses(query(local_cluster, fqdn))) == 2  # UDP answers as usual
    with pytest.raises(ConnectionResetError):
        query(local_cluster, fqdn, tcp=True, timeout=2)
    assert len(addresses(query(local_cluster, other, tcp=True))) == 1  # only that question
    local_cluster.dns_set_mode("normal")
    assert len(addresses(query(local_cluster, fqdn, tcp=True))) == 2


def test_query_count(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    fqdn = local_cluster.fqdn("web-hl")
    local_cluster.reset_dns_query_count()
    for _ in range(3):
        query(local_cluster, fqdn)
    query(local_cluster, local_cluster.srv_name("web-hl"), "SRV")
    counts = local_cluster.dns_query_count()
    assert counts.total == 4
    assert counts.count(fqdn, "A") == 3
    assert counts.count(fqdn.upper().rstrip("."), "a") == 3
    assert counts.count(local_cluster.srv_name("web-hl"), "SRV") == 1
    assert local_cluster.stats()["dns"]["total"] == 4
    local_cluster.reset_dns_query_count()
    assert local_cluster.dns_query_count().total == 0


def test_raw_records(local_cluster: LocalCluster) -> None:
    name = "v6.default.svc.cluster.local."
    local_cluster.add_record(name, "AAAA", ["::1"], ttl=7)
    reply = query(local_cluster, name, "AAAA")
    assert [rd.address for rd in reply.answer[0]] == ["::1"] and reply.answer[0].ttl == 7
    assert query(local_cluster, name, "A").rcode() == dns.rcode.NOERROR  # NODATA
    local_cluster.remove_record(name, "AAAA")
    assert query(local_cluster, name, "AAAA").rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(ClusterError, match="outside"):
        local_cluster.add_record("example.com.", "A", "127.0.0.1")


# --- Pods ----------------------------------------------------------------------------------


def test_pod_echo(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    with client() as c:
        r = c.post(
            local_cluster.url("web-0", "/items/7?x=1"), content=b"12345", headers={"Host": "web-hl"}
        )
    assert r.status_code == 200 and r.headers["x-pod"] == "web-0"
    body = r.json()
    assert body["pod"] == "web-0" and body["method"] == "POST" and body["path"] == "/items/7"
    assert body["host"] == "web-hl" and body["body_len"] == 5
    health = get(local_cluster.url("web-0", "/healthz"))
    assert (health.status_code, health.text) == (200, "ok")
    assert local_cluster.requests_served("web-0") == 1  # /healthz not counted
    assert local_cluster.stats()["health"]["web-0"] == 1
    local_cluster.reset_stats()
    assert local_cluster.requests_served("web-0") == 0


def test_kill_keeps_dns_and_restart_serves_again(local_cluster: LocalCluster) -> None:
    pods = local_cluster.add_statefulset("web", 3)
    url = local_cluster.url("web-1", "/")
    with client() as c:
        assert c.get(url).status_code == 200  # a kept-alive connection to web-1
        local_cluster.kill("web-1")
        with pytest.raises(httpx.TransportError):
            c.get(url)
    with pytest.raises(httpx.ConnectError):
        get(url)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((pods[1].ip, pods[1].port), timeout=2).close()
    assert dns_ips(local_cluster, "web-hl") == {p.ip for p in pods}
    assert not local_cluster.pod("web-1").alive
    local_cluster.restart("web-1")
    assert local_cluster.pod("web-1").alive
    assert get(url).json()["pod"] == "web-1"


def test_kill_aborts_requests_in_flight(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    local_cluster.slow("web-0", 30)
    url = local_cluster.url("web-0", "/")
    with ThreadPoolExecutor(1) as pool, client() as c:
        pending = pool.submit(c.get, url)
        wait_until(lambda: local_cluster.requests_served("web-0") == 1)
        t0 = time.monotonic()
        local_cluster.kill("web-0")
        with pytest.raises(httpx.TransportError):
            pending.result(timeout=5)
        assert time.monotonic() - t0 < 5


def test_slow(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    url = local_cluster.url("web-0")
    local_cluster.slow("web-0", 0.3)
    t0 = time.monotonic()
    assert get(url).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    local_cluster.slow("web-0", 0)
    t0 = time.monotonic()
    get(url)
    assert time.monotonic() - t0 < 0.3


def test_fail(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    local_cluster.fail("web-0", 503)
    assert get(local_cluster.url("web-0", "/a")).status_code == 503
    assert get(local_cluster.url("web-0", "/healthz")).status_code == 503
    local_cluster.fail("web-0", None)
    assert get(local_cluster.url("web-0", "/healthz")).status_code == 200


def test_reset_mid_response(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    local_cluster.reset("web-0", True)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        get(local_cluster.url("web-0", "/a"))
    local_cluster.reset("web-0", False)
    assert get(local_cluster.url("web-0", "/a")).status_code == 200


def test_stream_sends_events_and_resets_on_request(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    url = local_cluster.url("web-0", "/stream?chunks=3&interval=0.1")
    t0 = time.monotonic()
    with client() as c, c.stream("GET", url) as r:
        assert r.headers["content-type"] == "text/event-stream" and r.headers["x-pod"] == "web-0"
        events = [line for line in r.iter_lines() if line]
    assert time.monotonic() - t0 >= 0.2  # spaced out, not sent at once
    assert events == [f'data: {{"pod": "web-0", "chunk": {i}}}' for i in range(3)]
    with client() as c, c.stream("GET", url + "&reset_after=2") as r:
        got = []
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            got.extend(line for line in r.iter_lines() if line)
    assert len(got) == 2
    local_cluster.reset("web-0", True)  # the Pod control: half the chunks, then a reset
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        get(local_cluster.url("web-0", "/stream?chunks=4&interval=0"))
    assert local_cluster.requests_served("web-0") == 3


def test_scale_statefulset(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 3)
    pods = local_cluster.scale("web", 5)
    assert [p.name for p in pods] == [f"web-{i}" for i in range(5)]
    assert dns_ips(local_cluster, "web-hl") == {p.ip for p in pods}
    assert get(local_cluster.url("web-4")).json()["pod"] == "web-4"
    old_web4 = local_cluster.url("web-4")
    pods = local_cluster.scale("web", 2)
    assert [p.name for p in pods] == ["web-0", "web-1"]
    assert dns_ips(local_cluster, "web-hl") == {p.ip for p in pods}
    with pytest.raises(httpx.ConnectError):
        get(old_web4)
    with pytest.raises(ClusterError, match="no such pod"):
        local_cluster.url("web-4")


def test_scale_deployment(local_cluster: LocalCluster) -> None:
    first = local_cluster.add_deployment("app", 2)
    up = local_cluster.scale("app", 4)
    assert {p.name for p in first} < {p.name for p in up}
    local_cluster.set_ready(first[0].name, False)
    down = local_cluster.scale("app", 3)
    assert first[0].name not in {p.name for p in down}  # not-ready goes first
    assert dns_ips(local_cluster, "app-hl") == {p.ip for p in down}


def test_set_ready(local_cluster: LocalCluster) -> None:
    app = local_cluster.add_deployment("app", 2)
    local_cluster.set_ready(app[0].name, False)
    assert dns_ips(local_cluster, "app-hl") == {app[1].ip}
    assert get(local_cluster.url(app[0].name)).status_code == 200  # still serving
    local_cluster.set_ready(app[0].name, True)
    assert dns_ips(local_cluster, "app-hl") == {p.ip for p in app}
    # StatefulSet headless Services publish not-ready addresses by default...
    web = local_cluster.add_statefulset("web", 2)
    local_cluster.set_ready("web-0", False)
    assert dns_ips(local_cluster, "web-hl") == {p.ip for p in web}
    # ...unless told otherwise.
    db = local_cluster.add_statefulset("db", 2, publish_not_ready=False)
    local_cluster.set_ready("db-0", False)
    assert dns_ips(local_cluster, "db-hl") == {db[1].ip}


def test_delete_and_recreate_services(local_cluster: LocalCluster) -> None:
    pods = local_cluster.add_statefulset("web", 2)
    fqdn = local_cluster.fqdn("web-hl")
    local_cluster.delete_service("web-hl")
    assert query(local_cluster, fqdn).rcode() == dns.rcode.NXDOMAIN
    assert query(local_cluster, f"web-0.{fqdn}").rcode() == dns.rcode.NXDOMAIN
    assert get(local_cluster.url("web-0")).status_code == 200  # Pods keep running
    assert not local_cluster.service("web-hl").exists
    local_cluster.create_service("web-hl")
    assert dns_ips(local_cluster, "web-hl") == {p.ip for p in pods}

    lb_url = local_cluster.service_url("web-lb")
    local_cluster.delete_service("web-lb")
    assert query(local_cluster, local_cluster.fqdn("web-lb")).rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(httpx.ConnectError):
        get(lb_url)
    local_cluster.create_service("web-lb")
    assert local_cluster.service_url("web-lb") == lb_url
    assert get(lb_url).status_code == 200


# --- LB Service ----------------------------------------------------------------------------


def test_lb_keep_alive_sticks_to_one_pod(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 3)
    url = local_cluster.service_url("web-lb", "/")
    with client() as c:
        seen = {c.get(url).headers["x-pod"] for _ in range(20)}
    assert len(seen) == 1
    stats = local_cluster.stats()
    assert sum(stats["lb"].values()) == 1
    assert stats["pods"][seen.pop()] == 20


def test_lb_spreads_connections_and_skips_dead_pods(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 3)
    url = local_cluster.service_url("web-lb", "/")
    seen = {get(url).headers["x-pod"] for _ in range(30)}
    assert len(seen) > 1  # 3 * (1/3)**30 chance of a false failure
    assert sum(local_cluster.stats()["lb"].values()) == 30
    local_cluster.kill("web-0")
    local_cluster.set_ready("web-1", False)
    assert {get(url).headers["x-pod"] for _ in range(10)} == {"web-2"}
    local_cluster.kill("web-2")
    with pytest.raises(httpx.TransportError):
        get(url)


def test_tls_pods_and_lb_passthrough(local_cluster: LocalCluster, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    fqdn = "web-hl.default.svc.cluster.local"
    cert = ca.issue_cert(fqdn, "web-lb.default.svc.cluster.local")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    local_cluster.add_statefulset("web", 2, tls=(str(certfile), str(keyfile)))
    url = local_cluster.url("web-0", "/")
    assert url.startswith("https://")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with client(verify=ctx) as c:
        r = c.get(url, extensions={"sni_hostname": fqdn})
        assert r.json()["pod"] == "web-0"
        lb = c.get(
            local_cluster.service_url("web-lb", "/"),
            extensions={"sni_hostname": "web-lb.default.svc.cluster.local"},
        )
        assert lb.status_code == 200


def test_errors(local_cluster: LocalCluster) -> None:
    local_cluster.add_statefulset("web", 1)
    with pytest.raises(ClusterError, match="already exists"):
        local_cluster.add_statefulset("web", 1)
    with pytest.raises(ClusterError, match="already exists"):
        local_cluster.add_deployment("other", 1, headless="web-hl")
    with pytest.raises(ClusterError, match="no such pod"):
        local_cluster.kill("nope")
    with pytest.raises(ClusterError, match="headless"):
        local_cluster.service_url("web-hl")
    with pytest.raises(ClusterError, match="invalid"):
        local_cluster.add_deployment("Bad_Name", 1)
    # The cluster is still usable after errors.
    assert local_cluster.pods("web")[0].name == "web-0"


def test_module_fixture_is_shared(headlesslb_cluster_module: LocalCluster) -> None:
    assert not headlesslb_cluster_module.closed
    headlesslb_cluster_module.add_deployment("shared", 1)
    assert len(headlesslb_cluster_module.pods("shared")) == 1


def test_rate_limit_answers_429_with_retry_after_and_exempts_probes(
    headlesslb_cluster: LocalCluster,
) -> None:
    headlesslb_cluster.add_statefulset("web", 1)
    url = headlesslb_cluster.url("web-0", "/a")
    headlesslb_cluster.rate_limit("web-0", 0.1, burst=2, retry_after=7)
    assert [get(url).status_code for _ in range(2)] == [200, 200]
    rejected = get(url)
    assert rejected.status_code == 429 and rejected.headers["retry-after"] == "7"
    assert get(headlesslb_cluster.url("web-0", "/healthz")).status_code == 200
    assert headlesslb_cluster.stats()["rejected"] == {"web-0": 1}
    headlesslb_cluster.rate_limit("web-0", 0.1, burst=1, status=503, retry_after=1)
    assert get(url).status_code == 200
    assert get(url).status_code == 503
    headlesslb_cluster.rate_limit("web-0", None)
    assert all(get(url).status_code == 200 for _ in range(5))
    headlesslb_cluster.reset_stats()
    assert headlesslb_cluster.stats()["rejected"] == {"web-0": 0}


def test_cold_start_is_slow_from_the_first_request_then_normal(
    headlesslb_cluster: LocalCluster,
) -> None:
    headlesslb_cluster.add_statefulset("web", 1)
    url = headlesslb_cluster.url("web-0")
    headlesslb_cluster.cold_start("web-0", seconds=0.5, latency=0.3)
    time.sleep(0.6)  # the cold period counts from the first request, not from the call
    t0 = time.monotonic()
    get(url)
    assert time.monotonic() - t0 >= 0.3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # warm once its 0.5 s are over
        t0 = time.monotonic()
        get(url)
        if time.monotonic() - t0 < 0.3:
            break
    else:
        pytest.fail("the Pod never warmed up")


def test_stragglers_make_a_share_of_responses_slower(headlesslb_cluster: LocalCluster) -> None:
    headlesslb_cluster.add_statefulset("web", 1)
    url = headlesslb_cluster.url("web-0")
    headlesslb_cluster.slow("web-0", 0.05)
    headlesslb_cluster.stragglers("web-0", fraction=1.0, factor=6.0)
    t0 = time.monotonic()
    get(url)
    assert time.monotonic() - t0 >= 0.3
    headlesslb_cluster.stragglers("web-0", 0.0)


@pytest.mark.parametrize(
    ("control", "args", "message"),
    [
        ("rate_limit", (0,), "per_second"),
        ("rate_limit", (5,), "status"),
        ("cold_start", (-1, 0.1), "cold_start"),
        ("stragglers", (1.5, 10), "fraction"),
        ("stragglers", (0.1, 0.5), "factor"),
    ],
)
def test_load_controls_refuse_bad_values(
    headlesslb_cluster: LocalCluster, control: str, args: tuple[float, ...], message: str
) -> None:
    headlesslb_cluster.add_statefulset("web", 1)
    kwargs = {"status": 418} if message == "status" else {}
    with pytest.raises(ClusterError, match=message):
        getattr(headlesslb_cluster, control)("web-0", *args, **kwargs)
