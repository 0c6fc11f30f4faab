"""The HEADLESSLB_* variables: the argument wins over them, they win over resolv.conf and
POD_NAMESPACE; a malformed one is a ConfigurationError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from headlesslb.compose import Parts, compose
from headlesslb.core.environ import EnvironSettings, from_environ
from headlesslb.errors import ConfigurationError
from headlesslb.options import TransportOptions

VARIABLES = ("HEADLESSLB_NAMESERVERS", "HEADLESSLB_NAMESPACE", "HEADLESSLB_CLUSTER_DOMAIN")


@pytest.fixture
def resolv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in (*VARIABLES, "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 10.96.0.10\nsearch fromfile.svc.file.local svc.file.local\n")
    return str(path)


def _parts(resolv: str, **options: object) -> Parts:
    given: TransportOptions = {"resolv_conf": resolv, "opentelemetry": False, **options}  # type: ignore[typeddict-item]
    return compose("web-hl", given)


def test_without_variables_resolv_conf_and_pod_namespace_decide(
    resolv: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = _parts(resolv)
    assert parts.spec.nameservers == (("10.96.0.10", 53),)
    assert parts.service.fqdn == "web-hl.fromfile.svc.file.local."
    monkeypatch.setenv("POD_NAMESPACE", "frompod")
    assert _parts(resolv).service.fqdn == "web-hl.frompod.svc.file.local."


def test_variables_win_over_resolv_conf_and_pod_namespace(
    resolv: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "frompod")
    monkeypatch.setenv("HEADLESSLB_NAMESERVERS", " 127.0.0.5:5353, [::1]:53,127.0.0.6 ")
    monkeypatch.setenv("HEADLESSLB_NAMESPACE", "fromenv")
    monkeypatch.setenv("HEADLESSLB_CLUSTER_DOMAIN", "Env.Local.")
    parts = _parts(resolv)
    assert parts.spec.nameservers == (("127.0.0.5", 5353), ("::1", 53), ("127.0.0.6", 53))
    assert parts.service.fqdn == "web-hl.fromenv.svc.env.local."


def test_arguments_win_over_variables(resolv: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADLESSLB_NAMESERVERS", "127.0.0.5:5353")
    monkeypatch.setenv("HEADLESSLB_NAMESPACE", "fromenv")
    monkeypatch.setenv("HEADLESSLB_CLUSTER_DOMAIN", "env.local")
    parts = _parts(
        resolv, nameservers=["127.0.0.7:53"], namespace="fromarg", cluster_domain="arg.local"
    )
    assert parts.spec.nameservers == (("127.0.0.7", 53),)
    assert parts.service.fqdn == "web-hl.fromarg.svc.arg.local."


def test_blank_variables_count_as_unset(resolv: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.setenv(name, "  ")
    assert from_environ({name: "" for name in VARIABLES}) == EnvironSettings()
    assert _parts(resolv).service.fqdn == "web-hl.fromfile.svc.file.local."


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("HEADLESSLB_NAMESERVERS", "dns.example:53", "is not an IP address"),
        ("HEADLESSLB_NAMESERVERS", "127.0.0.5:53,,127.0.0.6", "nameservers[1]"),
        ("HEADLESSLB_NAMESERVERS", "127.0.0.5:99999", "not 1-65535"),
        ("HEADLESSLB_NAMESERVERS", "127.0.0.5 127.0.0.6", "whitespace"),
        ("HEADLESSLB_NAMESPACE", "Not_A_Label", "not a DNS-1123 label"),
        ("HEADLESSLB_NAMESPACE", "a.b", "not a DNS-1123 label"),
        ("HEADLESSLB_CLUSTER_DOMAIN", "bad..domain", "invalid label"),
    ],
)
def test_a_malformed_variable_is_named(
    resolv: str, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable) as raised:
        _parts(resolv)
    assert says in str(raised.value)


def test_a_malformed_variable_fails_even_when_the_argument_is_given(
    resolv: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The environment is checked as a whole: a typo is reported, not silently shadowed."""
    monkeypatch.setenv("HEADLESSLB_NAMESPACE", "Bad_NS")
    with pytest.raises(ConfigurationError, match="HEADLESSLB_NAMESPACE"):
        _parts(resolv, namespace="good")


def test_an_unusable_nameserver_variable_is_named(
    resolv: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADLESSLB_NAMESERVERS", "[fe80::1%no-such-if0]:53")
    with pytest.raises(ConfigurationError, match=r"HEADLESSLB_NAMESERVERS\[0\]"):
        _parts(resolv)


def test_no_nameserver_anywhere_says_to_set_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HEADLESSLB_NAMESERVERS", raising=False)
    empty = tmp_path / "resolv.conf"
    empty.write_text("")
    with pytest.raises(ConfigurationError, match="or set HEADLESSLB_NAMESERVERS"):
        _parts(str(empty), namespace="x")
