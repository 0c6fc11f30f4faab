"""The ``headlesslb`` command: resolve, get, and the demo run end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from headlesslb.cli import main
from headlesslb.testing import LocalCluster


def test_resolve_prints_a_table(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "resolve",
            "web-hl",
            "--nameserver",
            cluster.nameserver,
            "--namespace",
            "default",
            "--port",
            "http",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "web-hl.default.svc.cluster.local.: 3 endpoint(s)" in out
    lines = out.splitlines()
    assert lines[1].split() == ["IP", "PORT", "HOSTNAME", "ORDINAL", "TTL"]
    rows = {tuple(line.split()) for line in lines[3:]}
    assert rows == {(p.ip, str(p.port), p.name, str(p.ordinal), "1") for p in cluster.pods("web")}


def test_resolve_reports_errors_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "web_hl", "--nameserver", "127.0.0.1:9", "--namespace", "x"]) == 2
    assert "InvalidServiceName" in capsys.readouterr().err
    code = main(
        ["resolve", "web-hl", "--nameserver", "127.0.0.1:9", "--namespace", "x", "--timeout", "0.3"]
    )
    assert code == 2
    assert "DiscoveryError" in capsys.readouterr().err


def test_get_pins_an_ordinal(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "get",
            "web-hl",
            "/hello",
            "--nameserver",
            cluster.nameserver,
            "--namespace",
            "default",
            "--port",
            "http",
            "--ordinal",
            "1",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert '"pod": "web-1"' in captured.out.replace('":"', '": "')


@pytest.mark.slow
def test_demo_runs_to_completion() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "headlesslb.cli", "demo", "--fast"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed requests: 0" in result.stdout
    assert "(fallback)" in result.stdout
    assert "web-4" in result.stdout
