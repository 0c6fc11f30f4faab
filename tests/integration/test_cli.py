"""The ``headlesslb`` command: resolve, get, and the demo run end to end."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import headlesslb
from headlesslb import HeadlessClient
from headlesslb.cli import EXIT_ERROR, EXIT_NO_ENDPOINTS, build_parser, main
from headlesslb.core.names import SERVICE_ACCOUNT_NAMESPACE
from headlesslb.errors import ConfigurationError, InvalidServiceName
from headlesslb.testing import LocalCluster

RICH = importlib.util.find_spec("rich") is not None
WITH_TOP = ("resolve", "get", "top") if RICH else ("resolve", "get")
"""The commands that read discovery flags; ``top`` needs rich (the ``top`` extra), which the
minimum-versions run does not install (the main run, which has it, covers ``top``)."""


def _dns(cluster: LocalCluster) -> list[str]:
    return ["--nameserver", cluster.nameserver, "--namespace", "default"]


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


def test_dns_failures_say_what_happened(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on 127.0.0.1:9: the kernel refuses (ICMP port unreachable), and no DNS
    # server answered anything. It was labelled "(SERVFAIL/REFUSED)".
    argv = ["resolve", "web-hl", "--namespace", "default", "--timeout", "0.5"]
    assert main([*argv, "--nameserver", "127.0.0.1:9"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "web-hl.default.svc.cluster.local. A (connection refused): 127.0.0.1:9" in err, err
    assert "SERVFAIL" not in err
    for mode, rcode in (("servfail", "SERVFAIL"), ("refuse", "REFUSED")):
        cluster.dns_set_mode(mode)
        assert main([*argv, "--nameserver", cluster.nameserver]) == EXIT_ERROR
        err = capsys.readouterr().err
        assert f"A (answered {rcode}): {cluster.nameserver} answered {rcode}" in err, err
        assert "connection refused" not in err
    cluster.dns_set_mode("normal")


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


def test_resolve_as_json(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resolve", "web-hl", *_dns(cluster), "--port", "http", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["service"] == "web-hl.default.svc.cluster.local."
    assert document["ttl"] == 1 and document["partial"] is False
    assert sorted(document["endpoints"], key=lambda e: e["ordinal"]) == [
        {"ip": p.ip, "port": p.port, "hostname": p.name, "ordinal": p.ordinal}
        for p in cluster.pods("web")
    ]


@pytest.mark.parametrize("output", ["table", "json"])
def test_resolve_of_a_missing_service_fails(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    code = main(["resolve", "nothing-hl", *_dns(cluster), "-o", output])
    captured = capsys.readouterr()
    assert code == EXIT_NO_ENDPOINTS
    assert "no endpoints for nothing-hl.default.svc.cluster.local." in captured.err
    if output == "json":
        assert json.loads(captured.out)["endpoints"] == []


NXDOMAIN = "no such Service, or none of its Pods is ready (NXDOMAIN"
EMPTY = "the Service exists but DNS lists no IPv6 address of a ready Pod (empty answer)"


@pytest.mark.parametrize("port", ["80", "http"])  # A/AAAA, or SRV then the targets' addresses
def test_nxdomain_and_an_empty_answer_say_different_things(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    # Both said "NXDOMAIN or an empty answer" (resolve) or "0 in DNS" (get) before.
    for command, exit_code in (("resolve", EXIT_NO_ENDPOINTS), ("get", EXIT_ERROR)):
        argv = [command, *_dns(cluster), "--port", port]
        assert main([*argv, "nothing-hl"]) == exit_code
        err = capsys.readouterr().err
        assert NXDOMAIN in err and "empty answer" not in err, err
        # web's Pods have IPv4 addresses only: the name exists, and lists no AAAA record.
        assert main([*argv, "web-hl", "--ip-family", "ipv6"]) == exit_code
        err = capsys.readouterr().err
        assert EMPTY in err and "NXDOMAIN" not in err, err
    argv = ["resolve", *_dns(cluster), "--port", port, "-o", "json"]
    assert main([*argv, "nothing-hl"]) == EXIT_NO_ENDPOINTS
    assert json.loads(capsys.readouterr().out)["nxdomain"] is True
    assert main([*argv, "web-hl", "--ip-family", "ipv6"]) == EXIT_NO_ENDPOINTS
    assert json.loads(capsys.readouterr().out)["nxdomain"] is False


def test_resolve_of_an_empty_service_fails(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    # A port the Service does not have is a mistake worth its own message.
    assert main(["resolve", "web-hl", *_dns(cluster), "--port", "grpc"]) == EXIT_ERROR
    assert "has no port named 'grpc'" in capsys.readouterr().err
    cluster.scale("web", 0)
    assert main(["resolve", "web-hl", *_dns(cluster), "--port", "http"]) == EXIT_NO_ENDPOINTS
    captured = capsys.readouterr()
    assert "0 endpoint(s)" in captured.out
    assert "no endpoints for port 'http' of web-hl" in captured.err


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """``headlesslb`` and each of its subcommands, by name."""
    root = build_parser()
    (commands,) = (a for a in root._actions if isinstance(a, argparse._SubParsersAction))
    return [("", root), *commands.choices.items()]


@pytest.mark.parametrize(
    ("command", "parser"), parsers(), ids=[name or "headlesslb" for name, _ in parsers()]
)
def test_every_option_has_help_that_shows_its_default(
    command: str, parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    # --namespace, --cluster-domain, --ip-family, --resolv-conf, PATH had no help; no default
    # showed but where a help text spelled one out.
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"] if command else ["--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{command} {name}: no help"
        described = " ".join(formatter._format_action(action).split())
        assert described in shown, f"{command} {name}: not in --help"
        if action.nargs == 0 or action.required:
            continue  # a switch is off unless given; a required argument has no default
        assert "default" in described, f"{command} {name}: no default shown: {described}"
    assert "default: None" not in shown and "default: []" not in shown


def test_version_and_python_dash_m() -> None:
    for command in (["-m", "headlesslb", "--version"], ["-m", "headlesslb.cli", "--version"]):
        result = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"headlesslb {headlesslb.__version__}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "0"], "argument --port: port 0 is out of range 1-65535"),
        (["--nameserver", "dns.local"], "argument --nameserver: nameserver 'dns.local'"),
        (["--namespace", "Bad_NS"], "argument --namespace: namespace"),
        (["--timeout", "0"], "argument --timeout: seconds must be"),
        (["--ordinal", "-1"], "argument --ordinal: ordinal must be an int >= 0"),
        (["-H", "no colon"], "argument -H/--header: expected 'Name: value'"),
        (["-X", "GE T"], "argument -X/--request: method"),
        (["--fallback", "http://lb/path"], "argument --fallback: fallback URL"),
        (["--cacert", "/nonexistent.pem"], "argument --cacert: cannot load CA bundle"),
        (["--key", "a", "--ordinal", "1"], "argument --ordinal: not allowed with argument --key"),
    ],
)
def test_cli_messages_name_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["get", "web-hl", "--nameserver", "127.0.0.1:9", *argv])
    assert exited.value.code == EXIT_ERROR
    assert message in capsys.readouterr().err


def test_cli_names_flags_where_the_api_names_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "resolv.conf"
    empty.write_text("search default.svc.cluster.local\n")
    for command in WITH_TOP:  # top said "pass nameservers=[...]" before
        code = main([command, "web-hl", "--namespace", "x", "--resolv-conf", str(empty)])
        assert code == EXIT_ERROR
        err = capsys.readouterr().err
        assert (
            "lists no nameserver: pass --nameserver ip[:port] or set HEADLESSLB_NAMESERVERS\n"
            in err
        ), err
    # The API, for the same mistake, names its keyword argument.
    with pytest.raises(ConfigurationError, match=r"pass nameservers=\['ip:port'") as raised:
        HeadlessClient("web-hl", namespace="x", resolv_conf=str(empty))
    assert raised.value.argument == "nameservers"
    with pytest.raises(ConfigurationError, match=r"^nameservers\[0\]: nameserver 'dns.local'"):
        HeadlessClient("web-hl", namespace="x", nameservers=["dns.local"])


@pytest.mark.parametrize("command", WITH_TOP)
def test_cli_names_the_namespace_flag(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if Path(SERVICE_ACCOUNT_NAMESPACE).exists():
        pytest.skip("running in a Pod: the service-account file gives the namespace")
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")  # no search list: no namespace either
    argv = [command, "web-hl", "--resolv-conf", str(resolv), "--nameserver", "127.0.0.1:9"]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    # The library says "pass namespace=", to its users; the command line, its flag.
    assert "cannot tell the namespace of 'web-hl': pass --namespace, set POD_NAMESPACE" in err
    assert "namespace=" not in err
    with pytest.raises(InvalidServiceName, match="pass namespace=, set") as raised:
        HeadlessClient("web-hl", resolv_conf=str(resolv))
    assert raised.value.argument == "namespace"


def test_get_sends_method_headers_and_data_like_curl(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = tmp_path / "body.txt"
    body.write_bytes(b"0123456789")
    argv = ["get", "web-hl", "/items", *_dns(cluster), "--port", "http", "--ordinal", "2"]
    assert main([*argv, "-d", "a=1", "-d", f"@{body}", "-H", "X-Trace: abc"]) == 0
    echoed = json.loads(capsys.readouterr().out)
    # curl: -d means POST, and repeated -d join with '&'.
    assert (echoed["pod"], echoed["method"], echoed["body_len"]) == ("web-2", "POST", 14)
    assert main([*argv, "-X", "put", "-d", "x"]) == 0
    echoed = json.loads(capsys.readouterr().out)
    assert (echoed["method"], echoed["body_len"]) == ("PUT", 1)
    assert main([*argv, "-X", "DELETE"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "DELETE"


def test_get_over_https_with_a_ca_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("web-hl.default.svc.cluster.local")
    certfile, keyfile, cafile = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=2, tls=(str(certfile), str(keyfile)))
        argv = ["get", "web-hl", "/secure", *_dns(cluster), "--port", "http", "--scheme", "https"]
        assert main([*argv, "--cacert", str(cafile)]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out)["host"] == "web-hl.default.svc.cluster.local"
        assert json.loads(captured.err)["hostname"] in {"web-0", "web-1"}
        # Without the CA the Pods' certificate is not trusted: a typed failure, exit 2.
        assert main(argv) == EXIT_ERROR
        assert "certificate verify failed" in capsys.readouterr().err.lower()
        # --cacert without https would be an option silently ignored: refused.
        plain = ["get", "web-hl", *_dns(cluster), "--cacert", str(cafile)]
        assert main(plain) == EXIT_ERROR
        assert "--cacert verifies https Pods: add --scheme https" in capsys.readouterr().err


@contextlib.contextmanager
def loopback_listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port on 127.0.0.1 standing for "another host": the connections it accepted."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        accepted: list[socket.socket] = []
        yield server.getsockname()[1], accepted
        with contextlib.suppress(BlockingIOError):
            while True:
                connection, _ = server.accept()
                connection.close()
                accepted.append(connection)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        # Another host: sent through the system resolver and plain httpx before, exit 0 or 2.
        ("http://127.0.0.1:{port}/x", "names 127.0.0.1, not the Service web-hl"),
        ("//127.0.0.1:{port}/x", "names 127.0.0.1, not the Service web-hl"),
        # Malformed: sent as GET / (or /x%20y) to a Pod before, exit 0.
        ("://bad", "'://bad' is not a URL: no scheme before '://'"),
        ("x y", "'x y' has a space in it: write it %20"),
        ("/a\x01b", "has a control character (U+0001) in it: write it %01"),
        ("items", "'items' is neither a path nor a URL: a path starts with '/' (/items)"),
        # The Service, but not as the client reaches it.
        ("ftp://web-hl/x", "'ftp://web-hl/x' has scheme ftp: the Pods are reached over http"),
        ("https://web-hl/x", "has scheme https: the Pods are reached over http (--scheme"),
        ("http://web-hl:81/x", "gives port 81: the port is --port's (SRV gives it per Pod)"),
    ],
)
def test_get_refuses_what_is_not_a_path_of_the_service(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], path: str, message: str
) -> None:
    cluster.reset_stats()
    cluster.reset_dns_query_count()
    with loopback_listener() as (port, accepted):
        code = main(["get", "web-hl", path.format(port=port), *_dns(cluster), "--port", "http"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR, err
    assert message in err
    assert len(err.splitlines()) == 1, err
    # Nothing was sent: not to the other host, not to a Pod, not even a DNS query.
    assert accepted == []
    assert all(cluster.requests_served(pod.name) == 0 for pod in cluster.pods("web"))
    assert cluster.dns_query_count().total == 0


@pytest.mark.parametrize(
    "url", ["http://web-hl/items", "http://WEB-HL.default.svc.cluster.local./items"]
)
def test_get_takes_a_url_naming_the_service(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    assert main(["get", "web-hl", url, *_dns(cluster), "--port", "http"]) == 0
    echoed = json.loads(capsys.readouterr().out)
    assert echoed["path"] == "/items"


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
