"""``headlesslb top`` in a real terminal (a pty, driven by pexpect) against a LocalCluster."""

from __future__ import annotations

import os
import sys

import pexpect

from headlesslb.testing import LocalCluster


def spawn_top(cluster: LocalCluster, *args: str) -> pexpect.spawn:
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    command = [
        "-m",
        "headlesslb.cli",
        "top",
        "web-hl",
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
    top = spawn_top(cluster, "--rate", "30", "--interval", "0.2")
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


def test_top_watch_only_prints_one_table(cluster: LocalCluster) -> None:
    top = spawn_top(cluster, "--rate", "0", "--once", "--interval", "0.1")
    try:
        top.expect(pexpect.EOF)
    finally:
        top.close()
    output = top.before
    assert top.exitstatus == 0, output
    assert all(pod in output for pod in ("web-0", "web-1", "web-2"))
    assert "probe requests sent: 0" in output and "DNS: 3 endpoints" in output
