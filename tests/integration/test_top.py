"""``headlesslb top`` in a real terminal (a pty, driven by pexpect) against a LocalCluster."""

from __future__ import annotations

import os
import sys

import pexpect

from headlesslb.testing import LocalCluster


def spawn_top(cluster: LocalCluster, *args: str, service: str = "web-hl") -> pexpect.spawn:
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    command = [
        "-m",
        "headlesslb.cli",
        "top",
        service,
        "--port",
        "http",
        "--nameserver",
        cluster.nameserver,
        "--namespace",
        cluster.namespace,
        *args,
    ]
    return pexpect.spawn(sys.executable, command, env=env, encoding="utf-8", timeout=15)


def test_top_shows_a_killed_pod_ejected_live(cluster: LocalCluster) -> None:
    top = spawn_top(cluster, "--probe", "/", "--rate", "30", "--interval", "0.2")
    try:
        for pod in ("web-0", "web-1", "web-2"):
            top.expect(pod)
        top.expect("healthy")
        top.expect("DNS: 3 endpoints")
        cluster.kill("web-1")
        # The row's state turns to "ejected (n.n s)", and the change is listed under the table.
        top.expect(r"ejected \(\d+\.\d s\)")
        top.expect("web-1 [0-9.:]+ ejected: connection refused")
        top.sendintr()
        top.expect(pexpect.EOF)
    finally:
        top.close(force=True)
    assert top.exitstatus == 130, (top.exitstatus, top.signalstatus)


def run_top(cluster: LocalCluster, *args: str, service: str = "web-hl") -> str:
    top = spawn_top(cluster, *args, service=service)
    try:
        top.expect(pexpect.EOF)
    finally:
        top.close()
    output: str = top.before
    assert top.exitstatus == 0, output
    return output


def test_top_only_observes_by_default(cluster: LocalCluster) -> None:
    # It sent 10 GETs a second by default before: kubectl top and htop only observe.
    cluster.reset_stats()
    output = run_top(cluster, "--once", "--interval", "0.5")
    assert sum(cluster.requests_served(pod.name) for pod in cluster.pods("web")) == 0
    assert all(pod in output for pod in ("web-0", "web-1", "web-2"))
    assert "DNS: 3 endpoints" in output and "observing: no request sent" in output
    assert "REQ/S" not in output  # no column only top's own requests would fill


def test_top_probes_only_when_asked(cluster: LocalCluster) -> None:
    cluster.reset_stats()
    output = run_top(cluster, "--once", "--interval", "0.5", "--probe", "/ping", "--rate", "20")
    assert "REQ/S" in output and "probes: GET /ping, 20/s" in output
    assert sum(cluster.requests_served(pod.name) for pod in cluster.pods("web")) > 0


def test_top_rate_without_probe_is_refused(cluster: LocalCluster) -> None:
    top = spawn_top(cluster, "--once", "--rate", "5")
    top.expect(pexpect.EOF)
    top.close()
    assert top.exitstatus == 2
    assert "--rate is how often --probe sends" in top.before


def test_top_tells_nxdomain_from_an_empty_answer(cluster: LocalCluster) -> None:
    # Both were "DNS: 0 endpoints" before.
    output = " ".join(run_top(cluster, "--once", "--interval", "0.1", service="nothing-hl").split())
    assert "DNS: 0 endpoints: no such Service, or none of its Pods is ready (NXDOMAIN" in output
    output = " ".join(
        run_top(cluster, "--once", "--interval", "0.1", "--ip-family", "ipv6").split()
    )
    assert "DNS: 0 endpoints: the Service exists but DNS lists no IPv6 address" in output
    assert "(empty answer)" in output


def test_top_shows_the_pods_reported_load_when_asked() -> None:
    with LocalCluster() as cluster:
        cluster.add_statefulset(
            "lb", replicas=1, app="tests.integration.apps.orca_app:make", factory=True
        )
        args = ("--once", "--interval", "0.6", "--probe", "/", "--rate", "20")
        output = run_top(cluster, *args, "--load", "num_requests_waiting", service="lb-hl")
        assert "LOAD" in output and "the Pods' reported num_requests_waiting" in output
        assert "1 (0 s ago)" in output  # what the honest Pod reports, as of the last probe
        assert "LOAD" not in run_top(cluster, *args, service="lb-hl")  # only when asked


def test_top_load_without_probe_is_refused(cluster: LocalCluster) -> None:
    top = spawn_top(cluster, "--once", "--load", "num_requests_waiting")
    top.expect(pexpect.EOF)
    top.close()
    assert top.exitstatus == 2
    assert "--load shows what the Pods report" in top.before
