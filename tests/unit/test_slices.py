"""EndpointSlices read as endpoints (pure): conditions, ports, untrusted values, the union."""

from __future__ import annotations

from typing import Any

import pytest

from headlesslb.core.slices import MAX_ENDPOINTS_PER_SLICE, SliceEndpoints, SliceSet, read_slice


def ep(ip: str, **fields: Any) -> dict[str, Any]:
    conditions = {k: fields.pop(k) for k in ("ready", "serving", "terminating") if k in fields}
    return {"addresses": [ip], "conditions": conditions, **fields}


def slice_(name: str, endpoints: list[Any], *, ports: Any = None, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": "7"},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
        **extra,
    }


def read(obj: Any, **kw: Any) -> SliceEndpoints:
    result = read_slice(obj, port=kw.pop("port", "http"), **kw)
    assert isinstance(result, SliceEndpoints), result
    return result


@pytest.mark.parametrize(
    ("conditions", "included", "terminating"),
    [
        ({}, True, False),  # nil conditions: ready
        ({"ready": True}, True, False),
        ({"ready": False}, False, False),
        ({"ready": False, "serving": True, "terminating": True}, True, True),
        ({"ready": False, "serving": False, "terminating": True}, False, False),
        ({"ready": False, "terminating": True}, False, False),  # serving nil: as ready
        ({"ready": "yes"}, True, False),  # not a bool: unknown, read as ready
        # publishNotReadyAddresses: ready forced true, serving is the Pod's own readiness.
        ({"ready": True, "serving": False}, False, False),
        ({"ready": True, "serving": True}, True, False),
    ],
)
def test_conditions(conditions: dict[str, Any], included: bool, terminating: bool) -> None:
    got = read(slice_("s", [ep("10.0.0.1", **conditions)])).endpoints
    assert bool(got) == included
    if got:
        assert got[0].terminating == terminating


def test_include_not_ready_includes_not_ready_but_not_stopped() -> None:
    obj = slice_(
        "s",
        [
            ep("10.0.0.1", ready=False),
            ep("10.0.0.2", ready=False, serving=False, terminating=True),
            ep("10.0.0.3", ready=True, serving=False),  # publishNotReadyAddresses
        ],
    )
    got = read(obj, include_not_ready=True).endpoints
    assert [e.ip for e in got] == ["10.0.0.1", "10.0.0.3"]


def test_ports_numbered_and_named() -> None:
    ports = [{"name": "metrics", "port": 9000}, {"name": "http", "port": 8443}]
    obj = slice_("s", [ep("10.0.0.1")], ports=ports)
    assert read(obj).endpoints[0].port == 8443
    assert read(obj, port=7000).endpoints[0].port == 7000  # a number: the Pods' port
    missing = read(obj, port="grpc")
    assert missing.endpoints == () and "no port named 'grpc'" in missing.skipped[0]
    udp = read(
        slice_("s", [ep("10.0.0.1")], ports=[{"name": "http", "port": 53, "protocol": "UDP"}])
    )
    assert udp.endpoints == () and "UDP" in udp.skipped[0]
    bad = read(slice_("s", [ep("10.0.0.1")], ports=[{"name": "http", "port": 70000}]))
    assert bad.endpoints == ()


@pytest.mark.parametrize(
    "obj",
    [None, [], "x", {}, {"metadata": {}}, {"metadata": {"name": 3}}, {"metadata": {"name": "s"}}],
)
def test_unusable_objects_say_why(obj: Any) -> None:
    assert isinstance(read_slice(obj, port="http"), str)


def test_untrusted_values_are_skipped() -> None:
    entries: list[Any] = [
        "not an object",
        {"addresses": []},
        {"addresses": [7]},
        ep("not-an-ip"),
        ep("0.0.0.0"),
        ep("224.0.0.1"),
        ep("169.254.0.9"),
        ep("255.255.255.255"),
        ep("10.0.0.1", hostname="Bad_Name!", zone=5, hints={"forZones": [{"name": 1}, "x"]}),
    ]
    got = read(slice_("s", entries))
    assert [e.ip for e in got.endpoints] == ["10.0.0.1"]
    only = got.endpoints[0]
    assert (only.hostname, only.zone, only.for_zones) == (None, None, ())
    assert len(got.skipped) == 8
    too_many = slice_("s", [ep("10.0.0.1")] * (MAX_ENDPOINTS_PER_SLICE + 1))
    assert "more than the API allows" in str(read_slice(too_many, port="http"))


def test_other_address_types_contribute_nothing() -> None:
    fqdn = slice_("s", [ep("pod.example.com")], addressType="FQDN")
    assert read(fqdn).endpoints == () and read(fqdn).skipped == ()
    v6 = slice_("s", [ep("fd00::1")], addressType="IPv6")
    assert read(v6).endpoints == ()
    assert [e.ip for e in read(v6, ip_family="ipv6").endpoints] == ["fd00::1"]


def test_union_merges_slices_dedups_and_assigns_ordinals() -> None:
    slices = SliceSet()
    a = read(slice_("a", [ep("10.0.0.1", hostname="db-0"), ep("10.0.0.2", hostname="db-1")]))
    # The controller moving db-1 between slices: in both, terminating in one.
    b = read(
        slice_(
            "b",
            [
                ep("10.0.0.2", hostname="db-1", ready=False, serving=True, terminating=True),
                ep("10.0.0.3", targetRef={"kind": "Pod", "name": "db-2"}),
            ],
        )
    )
    slices.replace([a, b])
    union = slices.endpoints()
    assert [(e.ip, e.ordinal, e.terminating) for e in union] == [
        ("10.0.0.1", 0, False),
        ("10.0.0.2", 1, False),
        ("10.0.0.3", 2, False),
    ]
    assert slices.endpoints() is union  # unchanged: the same tuple (the pool's fast path)
    # The same slice with a new resourceVersion and the same endpoints: nothing to rebuild.
    again = read(slice_("a", [ep("10.0.0.1", hostname="db-0"), ep("10.0.0.2", hostname="db-1")]))
    assert not slices.put(again)
    assert slices.endpoints() is union
    assert slices.remove("a") and not slices.remove("a")
    assert [(e.ip, e.terminating) for e in slices.endpoints()] == [
        ("10.0.0.2", True),
        ("10.0.0.3", False),
    ]
