"""EndpointSlice discovery's configuration: typed errors for what cannot work, in-cluster
settings from a service-account directory, the zone from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from headlesslb import ConfigurationError, EndpointSlices, HeadlessTransport, KubeAPIConfig
from headlesslb.compose import compose
from headlesslb.options import TransportOptions


def service_account(tmp_path: Path, token: str = "abc\n") -> Path:
    (tmp_path / "token").write_text(token)
    (tmp_path / "ca.crt").write_text("not read until the client starts")
    return tmp_path


def test_in_cluster(tmp_path: Path) -> None:
    sa = service_account(tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    api = KubeAPIConfig.in_cluster(env, service_account=str(sa))
    assert api == KubeAPIConfig(
        "https://10.96.0.1:443", token_file=str(sa / "token"), ca_file=str(sa / "ca.crt")
    )
    assert api.bearer() == "abc"
    (sa / "token").write_text("rotated")
    assert api.bearer() == "rotated"  # read again each time
    v6 = KubeAPIConfig.in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1"}, service_account=str(sa))
    assert v6.server == "https://[fd00::1]:443"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, "KUBERNETES_SERVICE_HOST is not set"),
        ({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "x"}, "not a port"),
    ],
)
def test_in_cluster_outside_a_pod(tmp_path: Path, env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        KubeAPIConfig.in_cluster(env, service_account=str(service_account(tmp_path)))


def test_in_cluster_without_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="token") as raised:
        KubeAPIConfig.in_cluster({"KUBERNETES_SERVICE_HOST": "h"}, service_account=str(tmp_path))
    assert raised.value.argument == "discovery"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server": "ftp://x"},
        {"server": "https://"},
        {"server": "https://h", "token": ""},
        {"server": "https://h", "token": "a\nb"},
        {"server": "https://h", "ca_file": 3},
    ],
)
def test_bad_api_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        KubeAPIConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"api": "https://h"},
        {"include_not_ready": 1},
        {"watch_timeout": 0},
        {"grace": True},
        {"zone": ""},
        {"zone": "a", "max_zone_overload": 0.9},
    ],
)
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        EndpointSlices(**kwargs)  # type: ignore[arg-type]


def test_zone_from_the_environment_and_the_argument_wins() -> None:
    api = KubeAPIConfig("https://h", token="t")
    env = {"HEADLESSLB_ZONE": "b"}
    assert EndpointSlices(api=api).resolved(env).zone == "b"
    assert EndpointSlices(api=api, zone="a").resolved(env).zone == "a"
    assert EndpointSlices(api=api).resolved({}).zone_policy() is None


def test_compose_discovery_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    opts: TransportOptions = {"namespace": "ns", "nameservers": ["127.0.0.1:53"]}
    with pytest.raises(ConfigurationError, match="KUBERNETES_SERVICE_HOST"):
        compose("web", {**opts, "discovery": "endpointslices"})
    with pytest.raises(ConfigurationError, match="'dns', 'endpointslices'"):
        compose("web", {**opts, "discovery": "consul"})  # type: ignore[typeddict-item]
    assert compose("web", {**opts, "discovery": "dns"}).spec.endpointslices is None
    api = KubeAPIConfig("https://h", token="t")
    parts = compose("web", {"namespace": "ns", "discovery": EndpointSlices(api=api, zone="a")})
    assert parts.spec.endpointslices == EndpointSlices(api=api, zone="a")
    assert parts.spec.shareable  # equal settings: one runtime, one watch
    HeadlessTransport("web", namespace="ns", discovery=EndpointSlices(api=api))
