"""The kubeapi bed itself, by real requests: the API semantics an EndpointSlice client relies on.

Each test says what a client may count on: list then watch from the list's resourceVersion
(ADDED, MODIFIED, DELETED in order), BOOKMARKs carrying progress the watch cannot see, a
slice relabelled out of a selector arriving as DELETED, paging with limit/continue over one
consistent snapshot, 410 Gone after compaction (list, continue token and watch), data kept
across restarts, 401 for a rotated token, 403 for a denied user, and TLS verified by the CA
file the server wrote.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from headlesslb.testing._kubeapi import (
    SERVICE_NAME_LABEL,
    Json,
    KubeAPI,
    KubeAPIError,
    endpoint,
    endpoint_port,
)

pytestmark = pytest.mark.kubeapi


def rv(obj: Json) -> int:
    return int(obj["metadata"]["resourceVersion"])


def summary(events: list[Json]) -> list[tuple[str, str]]:
    """(type, name) of each event but BOOKMARKs."""
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]


def names(listed: Json) -> list[str]:
    return [item["metadata"]["name"] for item in listed["items"]]


def test_discovery_and_version(kubeapi: KubeAPI) -> None:
    client = kubeapi.client()
    version = client.get("/version").json()
    assert version["major"] == "1" and version["gitVersion"].startswith(f"v1.{version['minor']}.")
    assert client.get("/api").json()["versions"] == ["v1"]
    groups = {g["name"]: g for g in client.get("/apis").json()["groups"]}
    assert groups["discovery.k8s.io"]["preferredVersion"]["version"] == "v1"
    resources = {r["name"]: r for r in client.get("/apis/discovery.k8s.io/v1").json()["resources"]}
    slices = resources["endpointslices"]
    assert slices["namespaced"] and slices["kind"] == "EndpointSlice"
    assert set(slices["verbs"]) == {
        "create",
        "get",
        "list",
        "watch",
        "update",
        "patch",
        "delete",
        "deletecollection",
    }
    assert "namespaces" in {r["name"] for r in client.get("/api/v1").json()["resources"]}
    # Aggregated discovery, which kubectl and client-go ask for first.
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    aggregated = client.get("/apis", headers={"Accept": accept}).json()
    assert aggregated["kind"] == "APIGroupDiscoveryList"
    (group,) = [g for g in aggregated["items"] if g["metadata"]["name"] == "discovery.k8s.io"]
    assert [r["resource"] for r in group["versions"][0]["resources"]] == ["endpointslices"]


def test_slice_fields_round_trip_with_defaults_and_validation(
    kubeapi: KubeAPI, namespace: str
) -> None:
    endpoints = [
        endpoint(
            "10.1.0.1",
            ready=True,
            serving=True,
            terminating=False,
            hostname="web-0",
            node_name="node-a",
            zone="zone-a",
            for_zones=["zone-a"],
            target_ref={"kind": "Pod", "name": "web-0", "namespace": namespace},
        ),
        endpoint("10.1.0.2", ready=False, serving=True, terminating=True),
    ]
    ports = [endpoint_port(8080, name="http"), {"port": 9090}]
    kubeapi.create_slice(namespace, "web-abc", service="web", endpoints=endpoints, ports=ports)
    got = kubeapi.get_slice(namespace, "web-abc")
    assert got["endpoints"] == endpoints
    # v1 defaults: a port without name or protocol is named "" and TCP.
    assert got["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 8080},
        {"name": "", "protocol": "TCP", "port": 9090},
    ]
    assert got["metadata"]["labels"][SERVICE_NAME_LABEL] == "web"
    assert got["metadata"]["generation"] == 1
    assert kubeapi.set_endpoints(namespace, "web-abc", endpoints[:1])["metadata"]["generation"] == 2

    with pytest.raises(KubeAPIError) as invalid:
        kubeapi.create_slice(namespace, "bad", service="web", endpoints=[endpoint("not-an-ip")])
    assert invalid.value.status_code == 422 and invalid.value.reason == "Invalid"
    with pytest.raises(KubeAPIError) as conflict:
        kubeapi.update_slice(got)  # got's resourceVersion is stale since set_endpoints
    assert conflict.value.status_code == 409


def test_list_then_watch_sees_added_modified_deleted(kubeapi: KubeAPI, namespace: str) -> None:
    kubeapi.create_slice(namespace, "web-1", service="web", endpoints=[endpoint("10.0.0.1")])
    listed = kubeapi.list_slices(namespace, service="web")
    assert names(listed) == ["web-1"]
    with kubeapi.watch_slices(
        namespace, resource_version=listed["metadata"]["resourceVersion"], service="web"
    ) as watch:
        added = kubeapi.create_slice(namespace, "web-2", service="web")
        modified = kubeapi.set_endpoints(namespace, "web-1", [endpoint("10.0.0.1", ready=False)])
        kubeapi.delete_slice(namespace, "web-2")
        events = watch.until(lambda e: e["type"] == "DELETED", timeout=10)
    # Nothing from before the list's version, then every change in order.
    assert summary(events) == [("ADDED", "web-2"), ("MODIFIED", "web-1"), ("DELETED", "web-2")]
    changes = [e for e in events if e["type"] != "BOOKMARK"]
    assert rv(changes[0]["object"]) == rv(added) and rv(changes[1]["object"]) == rv(modified)
    assert rv(changes[0]["object"]) < rv(changes[1]["object"]) < rv(changes[2]["object"])
    assert changes[1]["object"]["endpoints"][0]["conditions"] == {"ready": False}


def test_bookmarks_carry_progress_the_watch_cannot_see(kubeapi: KubeAPI, namespace: str) -> None:
    created = kubeapi.create_slice(namespace, "web-1", service="web")
    # The watch cache sends a bookmark 2 s before a watch's timeout (and about every minute).
    with (
        kubeapi.watch_slices(namespace, resource_version=str(rv(created)), timeout_seconds=3) as w,
        kubeapi.watch_slices(
            namespace, resource_version=str(rv(created)), timeout_seconds=3, allow_bookmarks=False
        ) as plain,
    ):
        elsewhere = kubeapi.create_slice(f"{namespace}-other", "x", service="x")
        (bookmark,) = w.until(lambda e: e["type"] == "BOOKMARK", timeout=10)
        assert plain.drain(timeout=10) == []  # bookmarks only when asked for
    # A bookmark is a resourceVersion to resume from: past the write in another namespace.
    assert bookmark["object"]["kind"] == "EndpointSlice"
    assert rv(bookmark["object"]) >= rv(elsewhere)


def test_watch_list_ends_initial_events_with_a_bookmark(kubeapi: KubeAPI, namespace: str) -> None:
    kubeapi.create_slice(namespace, "web-1", service="web")
    with kubeapi.watch_slices(namespace, resource_version=None, send_initial_events=True) as w:
        events = w.until(lambda e: e["type"] == "BOOKMARK", timeout=10)
    assert summary(events) == [("ADDED", "web-1")]
    annotations = events[-1]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


def test_relabel_out_of_the_selector_arrives_as_deleted(kubeapi: KubeAPI, namespace: str) -> None:
    kubeapi.create_slice(namespace, "web-1", service="web")
    kubeapi.create_slice(namespace, "web-2", service="web")
    version = kubeapi.list_slices(namespace, service="web")["metadata"]["resourceVersion"]
    with (
        kubeapi.watch_slices(namespace, resource_version=version, service="web") as selected,
        kubeapi.watch_slices(namespace, resource_version=version) as everything,
    ):
        moved = kubeapi.relabel_slice(namespace, "web-1", {SERVICE_NAME_LABEL: "other"})
        back = kubeapi.relabel_slice(namespace, "web-1", {SERVICE_NAME_LABEL: "web"})
        events = selected.until(lambda e: e["type"] == "ADDED", timeout=10)
        unselected = everything.until(lambda e: rv(e["object"]) == rv(back), timeout=10)
    assert summary(events) == [("DELETED", "web-1"), ("ADDED", "web-1")]
    deleted = events[-2]["object"]
    # The last state the selector matched, at the version of the change that moved it out.
    assert deleted["metadata"]["labels"][SERVICE_NAME_LABEL] == "web"
    assert rv(deleted) == rv(moved)
    # Without a selector the same changes are plain updates.
    assert summary(unselected) == [("MODIFIED", "web-1"), ("MODIFIED", "web-1")]


def test_paging_with_limit_and_continue_is_one_snapshot(kubeapi: KubeAPI, namespace: str) -> None:
    for i in range(12):
        kubeapi.create_slice(
            namespace, f"web-{i:02}", service="web", endpoints=[endpoint(f"10.0.1.{i}")]
        )
    first = kubeapi.list_slices(namespace, service="web", limit=5)
    assert names(first) == [f"web-{i:02}" for i in range(5)]
    # How many are left is known only without a selector (as on a real server).
    assert "remainingItemCount" not in first["metadata"]
    assert kubeapi.list_slices(namespace, limit=5)["metadata"]["remainingItemCount"] == 7
    pages = [first]
    kubeapi.create_slice(namespace, "web-99", service="web")  # after the snapshot
    while token := pages[-1]["metadata"].get("continue"):
        pages.append(kubeapi.list_slices(namespace, service="web", limit=5, continue_token=token))
    assert [len(p["items"]) for p in pages] == [5, 5, 2]
    assert [n for p in pages for n in names(p)] == [f"web-{i:02}" for i in range(12)]
    assert {p["metadata"]["resourceVersion"] for p in pages} == {
        first["metadata"]["resourceVersion"]
    }
    assert "web-99" in names(kubeapi.list_slices(namespace, service="web"))
    kubeapi.delete_slices(namespace, service="web")
    assert names(kubeapi.list_slices(namespace)) == []


def test_compaction_is_410_for_list_continue_and_watch_on_etcd(
    new_kubeapi: Callable[..., KubeAPI], namespace: str
) -> None:
    bed = new_kubeapi(watch_cache=False)
    old = bed.create_slice(namespace, "web-1", service="web")
    bed.create_slice(namespace, "web-2", service="web")
    token = bed.list_slices(namespace, limit=1)["metadata"]["continue"]
    bed.set_endpoints(namespace, "web-1", [endpoint("10.0.0.9")])
    assert names(
        bed.list_slices(namespace, resource_version=str(rv(old)), resource_version_match="Exact")
    ) == ["web-1"]

    assert bed.compact() > rv(old)
    with pytest.raises(KubeAPIError) as listed:
        bed.list_slices(namespace, resource_version=str(rv(old)), resource_version_match="Exact")
    assert listed.value.status_code == 410 and listed.value.reason == "Expired"
    with pytest.raises(KubeAPIError) as continued:
        bed.list_slices(namespace, limit=1, continue_token=token)
    assert continued.value.status_code == 410 and continued.value.reason == "Expired"
    with bed.watch_slices(namespace, resource_version=str(rv(old))) as watch:
        error = watch.next(timeout=10)
    assert error["type"] == "ERROR"
    assert error["object"]["code"] == 410 and error["object"]["reason"] == "Expired"
    # From a current version all is well again: relist, then watch.
    current = bed.list_slices(namespace)
    with bed.watch_slices(namespace, resource_version=current["metadata"]["resourceVersion"]) as w:
        bed.delete_slice(namespace, "web-2")
        assert summary(w.until(lambda e: e["type"] == "DELETED", timeout=10)) == [
            ("DELETED", "web-2")
        ]


def test_watch_cache_serves_history_until_a_restart_after_compaction(
    new_kubeapi: Callable[..., KubeAPI], namespace: str
) -> None:
    bed = new_kubeapi()  # the watch cache on, as in kube-apiserver
    old = bed.create_slice(namespace, "web-1", service="web")
    bed.set_endpoints(namespace, "web-1", [endpoint("10.0.0.9")])
    bed.compact()
    # The cache still holds the history etcd has compacted away.
    with bed.watch_slices(namespace, resource_version=str(rv(old))) as watch:
        assert summary([watch.next(timeout=10)]) == [("MODIFIED", "web-1")]
    # A restarted server's cache starts now: older versions are gone, as on a real cluster.
    bed.restart_apiserver()
    with bed.watch_slices(namespace, resource_version=str(rv(old))) as watch:
        error = watch.next(timeout=10)
    assert error["type"] == "ERROR" and error["object"]["code"] == 410
    with pytest.raises(KubeAPIError) as listed:
        bed.list_slices(namespace, resource_version=str(rv(old)), resource_version_match="Exact")
    assert listed.value.status_code == 410


def test_restarts_keep_data_address_and_ca(
    new_kubeapi: Callable[..., KubeAPI], namespace: str
) -> None:
    bed = new_kubeapi()
    created = bed.create_slice(namespace, "web-1", service="web", endpoints=[endpoint("10.0.0.1")])
    url, ca = bed.base_url, bed.ca_file.read_bytes()
    bed.restart_apiserver()
    assert (bed.base_url, bed.ca_file.read_bytes()) == (url, ca)
    assert bed.get_slice(namespace, "web-1") == created

    # etcd down: the server says it is not ready and requests fail; back up, nothing is lost.
    bed.stop_etcd()
    deadline = time.monotonic() + 10
    while bed.client().get("/readyz").status_code == 200:
        assert time.monotonic() < deadline, "/readyz stayed 200 with etcd down"
        time.sleep(0.1)
    bed.start_etcd()
    bed.wait_ready(timeout=30)
    assert bed.get_slice(namespace, "web-1") == created
    later = bed.set_endpoints(namespace, "web-1", [endpoint("10.0.0.2")])
    assert rv(later) > rv(created)


def test_a_rotated_or_bad_token_is_401(kubeapi: KubeAPI, namespace: str) -> None:
    path = kubeapi.slices_path(namespace)
    old = kubeapi.token
    with kubeapi.client(old) as client:
        assert client.get(path).status_code == 200
        new = kubeapi.rotate_token()
        refused = client.get(path)
    assert refused.status_code == 401 and refused.json()["reason"] == "Unauthorized"
    with kubeapi.client(new) as client:
        assert client.get(path).status_code == 200
    for token in ("", "not-a-token"):
        with kubeapi.client(token) as client:
            assert client.get(path).status_code == 401
    with pytest.raises(KubeAPIError) as watch:
        kubeapi.watch_slices(namespace, resource_version="0", token=old)
    assert watch.value.status_code == 401


def test_a_denied_user_is_403(kubeapi: KubeAPI, namespace: str) -> None:
    path = kubeapi.slices_path(namespace)
    token = kubeapi.add_user("reader", "get,list,watch")
    body = {"metadata": {"name": "web-1"}, "addressType": "IPv4", "endpoints": []}
    try:
        with kubeapi.client(token) as client:
            assert client.get(path).status_code == 200
            forbidden = client.post(path, json=body)
            assert forbidden.status_code == 403 and forbidden.json()["reason"] == "Forbidden"
            assert '"reader"' in forbidden.json()["message"]
            kubeapi.deny("reader")
            assert client.get(path).status_code == 403
            assert client.get("/version").status_code == 200  # discovery stays readable
            kubeapi.allow("reader", "create")
            assert client.post(path, json=body).status_code == 201
    finally:
        kubeapi.deny("reader")
        kubeapi.remove_token(token)


def test_tls_is_verified_with_the_ca_file(kubeapi: KubeAPI) -> None:
    assert kubeapi.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    headers = {"Authorization": f"Bearer {kubeapi.token}"}
    verify = ssl.create_default_context(cafile=str(kubeapi.ca_file))
    with httpx.Client(verify=verify, headers=headers) as client:
        assert client.get(f"{kubeapi.base_url}/version").status_code == 200
    with httpx.Client(headers=headers) as client, pytest.raises(httpx.ConnectError) as e:
        client.get(f"{kubeapi.base_url}/version")  # the system's CAs do not know this one
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
    # The kubeconfig for kubectl and client libraries says the same.
    config = json.loads(kubeapi.kubeconfig().read_text())
    cluster = config["clusters"][0]["cluster"]
    assert (cluster["server"], cluster["certificate-authority"]) == (
        kubeapi.base_url,
        str(kubeapi.ca_file),
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--bind-address=0.0.0.0", "not a loopback address"),
        ("--etcd-servers=http://192.0.2.1:2379", "not a loopback URL"),
    ],
)
def test_the_server_listens_and_connects_on_loopback_only(
    kubeapi_binaries: dict[str, str], tmp_path: object, flag: str, message: str
) -> None:
    result = subprocess.run(
        [
            kubeapi_binaries["server"],
            f"--cert-dir={tmp_path}",
            f"--token-file={tmp_path}/t",
            f"--policy-file={tmp_path}/p",
            flag,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1 and message in result.stderr
