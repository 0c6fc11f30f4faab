"""Service names: parsing, expansion, resolv.conf, namespace detection, ordinals, ports."""

from __future__ import annotations

from pathlib import Path

import pytest

from headlesslb.core.names import (
    ResolvConf,
    detect_namespace,
    expand_service_name,
    load_resolv_conf,
    nameservers_from,
    parse_nameserver,
    parse_port,
    split_ordinal,
)
from headlesslb.errors import ConfigurationError, InvalidServiceName

POD_RESOLV_CONF = """\
search shop.svc.cluster.local svc.cluster.local cluster.local
nameserver 10.96.0.10
options ndots:5
"""


@pytest.mark.parametrize(
    ("name", "fqdn"),
    [
        ("web-hl", "web-hl.default.svc.cluster.local."),
        ("web-hl.shop", "web-hl.shop.svc.cluster.local."),
        ("web-hl.shop.svc", "web-hl.shop.svc.cluster.local."),
        ("web-hl.shop.svc.cluster.local", "web-hl.shop.svc.cluster.local."),
        ("web-hl.shop.svc.cluster.local.", "web-hl.shop.svc.cluster.local."),
        ("Web-HL", "web-hl.default.svc.cluster.local."),
        ("api.example.com", "api.example.com."),
    ],
)
def test_expand(name: str, fqdn: str) -> None:
    assert expand_service_name(name, namespace="default").fqdn == fqdn


def test_expand_custom_domain_and_parts() -> None:
    name = expand_service_name("web-hl", namespace="prod", cluster_domain="k8s.example")
    assert name.fqdn == "web-hl.prod.svc.k8s.example."
    assert name.service == "web-hl"
    assert name.namespace == "prod"
    assert name.host == "web-hl.prod.svc.k8s.example"
    assert name.srv_name("http") == "_http._tcp.web-hl.prod.svc.k8s.example."
    assert name.pod_fqdn("web-0") == "web-0.web-hl.prod.svc.k8s.example."


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("web..hl", "empty label"),
        ("web_hl", "not a DNS-1123 label"),
        ("-web", "not a DNS-1123 label"),
        ("web-", "not a DNS-1123 label"),
        ("1web", "must start with a letter"),
        ("a" * 64, "longer than 63"),
        (("a" * 60 + ".") * 5, "longer than 253"),
        ("web hl", "not a DNS-1123 label"),
    ],
)
def test_invalid_names(name: str, message: str) -> None:
    with pytest.raises(InvalidServiceName, match=message):
        expand_service_name(name, namespace="default")


def test_short_name_without_namespace_says_what_to_do() -> None:
    with pytest.raises(InvalidServiceName, match="namespace"):
        expand_service_name("web-hl")


def test_bad_namespace_and_non_str() -> None:
    with pytest.raises(InvalidServiceName):
        expand_service_name("web-hl", namespace="a.b")
    with pytest.raises(InvalidServiceName, match="must be a str"):
        expand_service_name(42, namespace="default")  # type: ignore[arg-type]


def test_invalid_name_is_a_value_error_and_ours() -> None:
    from headlesslb.errors import HeadlessLBError

    with pytest.raises(ValueError):
        expand_service_name("web_hl", namespace="default")
    assert issubclass(InvalidServiceName, HeadlessLBError)


def test_resolv_conf_parsing() -> None:
    conf = ResolvConf.parse(POD_RESOLV_CONF + "# comment\nnameserver 10.96.0.11 ; trailing\n")
    assert conf.nameservers == ("10.96.0.10", "10.96.0.11")
    assert conf.search[0] == "shop.svc.cluster.local"
    assert conf.options["ndots"] == "5"
    assert conf.namespace == "shop"
    assert conf.cluster_domain == "cluster.local"


def test_resolv_conf_outside_kubernetes() -> None:
    conf = ResolvConf.parse("nameserver 1.1.1.1\nsearch corp.example\n")
    assert conf.namespace is None
    assert conf.cluster_domain is None


def test_load_resolv_conf_missing_file(tmp_path: Path) -> None:
    assert load_resolv_conf(tmp_path / "nope") == ResolvConf()


def test_detect_namespace_order(tmp_path: Path) -> None:
    conf = ResolvConf.parse(POD_RESOLV_CONF)
    sa = tmp_path / "namespace"
    assert detect_namespace(conf, env={}, service_account_file=sa) == "shop"
    sa.write_text("team-a\n")
    assert detect_namespace(conf, env={}, service_account_file=sa) == "team-a"
    assert (
        detect_namespace(conf, env={"POD_NAMESPACE": "env-ns"}, service_account_file=sa) == "env-ns"
    )
    assert detect_namespace(ResolvConf(), env={}, service_account_file=tmp_path / "x") is None


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("web-3", ("web", 3)),
        ("my-db-0", ("my-db", 0)),
        ("web-10", ("web", 10)),
        ("web", None),
        ("web-03", None),
        ("web-x", None),
        ("10-0-0-1", ("10-0-0", 1)),
    ],
)
def test_split_ordinal(hostname: str, expected: tuple[str, int] | None) -> None:
    assert split_ordinal(hostname) == expected


def test_split_ordinal_is_bounded_like_kubernetes_int32_ordinals() -> None:
    assert split_ordinal(f"web-{2**31 - 1}") == ("web", 2**31 - 1)
    assert split_ordinal(f"web-{2**31}") is None
    assert split_ordinal("web-99999999999999999999") is None
    assert split_ordinal("web-" + "9" * 5000) is None  # never int() it (Python caps at 4300 digits)
    assert split_ordinal("web-3\n") is None
    from headlesslb.core.names import ORDINAL_MAX, split_ordinal_text

    assert ORDINAL_MAX == 2**31 - 1
    # The shape alone, for telling "not a Pod name" from "an ordinal no Pod can have".
    assert split_ordinal_text("web-99999999999999999999") == ("web", "99999999999999999999")
    assert split_ordinal_text("web") is None


def test_is_dns_label() -> None:
    from headlesslb.core.names import is_dns_label

    assert is_dns_label("web-0") and is_dns_label("0") and is_dns_label("a" * 63)
    for bad in ("", "a" * 64, "web_0", "-web", "web-", "Web-0", "web.0", "web\\0320", "web\n"):
        assert not is_dns_label(bad), bad


@pytest.mark.parametrize(
    ("port", "expected"),
    [(80, 80), ("8080", 8080), ("http", "http"), ("grpc-web", "grpc-web"), (None, None)],
)
def test_parse_port(port: int | str | None, expected: int | str | None) -> None:
    assert parse_port(port) == expected


@pytest.mark.parametrize(
    "port", [0, 70000, -1, "", "_http", "http-", "a--b", "x" * 16, "123-", True, 1.5]
)
def test_parse_port_rejects(port: object) -> None:
    with pytest.raises(ConfigurationError):
        parse_port(port)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("10.0.0.1", ("10.0.0.1", 53)),
        ("127.0.0.53:5353", ("127.0.0.53", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("::1", ("::1", 53)),
        ("[fd00::1]", ("fd00::1", 53)),
    ],
)
def test_parse_nameserver(spec: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "dns.example.com",
        "10.0.0.1:0",
        "10.0.0.1:99999",
        "10.0.0.1:abc",
        "[::1",
        "[::1]x",
        "300.1.1.1",
    ],
)
def test_parse_nameserver_rejects(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="nameserver"):
        parse_nameserver(spec)


def test_nameservers_from() -> None:
    assert nameservers_from("127.0.0.1:53") == (("127.0.0.1", 53),)
    with pytest.raises(ConfigurationError, match="empty"):
        nameservers_from([])
