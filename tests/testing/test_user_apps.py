"""Your own ASGI and WSGI apps on the local cluster's Pods, over real DNS and real sockets."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import user_apps

from headlesslb.sync import HeadlessClient
from headlesslb.testing import ClusterError, LocalCluster


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the apps' lifespans log (the cluster process inherits the environment)."""
    monkeypatch.setenv(user_apps.EVENTS, str(tmp_path))
    return tmp_path / "events.log"


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_statefulset_serves_a_per_pod_asgi_app_with_its_lifespan(events: Path) -> None:
    with LocalCluster(ttl=1) as cluster:
        cluster.add_statefulset("cache", replicas=3, app="user_apps:make_asgi", factory=True)
        assert sorted(_lines(events)) == ["startup cache-0", "startup cache-1", "startup cache-2"]
        with HeadlessClient("cache-hl", port="http", **cluster.client_kwargs()) as client:
            seen = {}
            for _ in range(9):
                document = client.post("/x", content=b"hi").json()
                seen[document["pod"]] = document
            # Balanced over the Pods, each with its own state and its lifespan's state.
            assert sorted(seen) == ["cache-0", "cache-1", "cache-2"]
            for name, document in seen.items():
                assert document["state"] == name and document["hits"] == 3
                assert document["ordinal"] == int(name[-1])
                assert document["body"] == "hi"
                assert document["client_kwargs"] == cluster.client_kwargs()
            assert client.get("/", ordinal=2).json()["pod"] == "cache-2"
        assert cluster.requests_served("cache-1") == 3
        # A killed Pod's app is shut down; a restart runs the lifespan again.
        cluster.kill("cache-1")
        wait_for(lambda: "shutdown cache-1" in _lines(events))
        cluster.restart("cache-1")
        assert _lines(events).count("startup cache-1") == 2
        cluster.scale("cache", 2)
        wait_for(lambda: "shutdown cache-2" in _lines(events))
    # Closing the cluster ends every remaining app's lifespan before it returns.
    log = _lines(events)
    assert (log.count("shutdown cache-0"), log.count("shutdown cache-1")) == (1, 2)


def test_pod_controls_work_on_a_user_app() -> None:
    with LocalCluster() as cluster:
        (pod,) = cluster.add_deployment("api", replicas=1, app="user_apps:shared_asgi")
        url = cluster.url(pod.name, "/a")
        with httpx.Client(trust_env=False, timeout=5) as http:
            response = http.get(url)
            assert (response.status_code, response.json()) == (201, {"app": "shared", "path": "/a"})
            cluster.fail(pod.name, 503)
            assert http.get(url).status_code == 503
            cluster.fail(pod.name, None)
            cluster.reset(pod.name)
            with pytest.raises(httpx.HTTPError):
                http.get(url)
            cluster.reset(pod.name, False)
            assert http.get(url).status_code == 201
            cluster.kill(pod.name)
            with pytest.raises(httpx.ConnectError):
                http.get(url)


def test_a_wsgi_app_on_every_pod_behind_the_lb() -> None:
    with LocalCluster() as cluster:
        cluster.add_deployment("legacy", replicas=2, app="user_apps:wsgi")
        with httpx.Client(trust_env=False, timeout=5) as http:
            response = http.put(cluster.service_url("legacy-lb", "/x"), content=b"payload")
        assert response.json() == {"app": "wsgi", "method": "PUT", "body": "payload"}


@pytest.mark.parametrize(
    ("app", "factory", "message"),
    [
        ("user_apps", False, "app must be an import string 'package.module:attribute'"),
        ("no_such_module_x:app", False, "cannot import 'no_such_module_x'"),
        ("user_apps:missing", False, "user_apps has no 'missing'"),
        ("user_apps:NOT_CALLABLE", False, "is not callable"),
        ("user_apps:failing_factory", True, "failed for pod bad-0: RuntimeError"),
        ("user_apps:failing_lifespan", False, "lifespan startup failed: database unreachable"),
    ],
)
def test_an_app_that_cannot_serve_is_a_clear_error(
    headlesslb_cluster_session: LocalCluster, app: str, factory: bool, message: str
) -> None:
    cluster = headlesslb_cluster_session
    with pytest.raises(ClusterError, match=message.replace("(", r"\(")):
        cluster.add_statefulset("bad", replicas=1, app=app, factory=factory)
    # Nothing is left half-made: the name is free again.
    cluster.add_statefulset("bad", replicas=1)
    cluster.delete_workload("bad")


def test_factory_needs_an_app(headlesslb_cluster_session: LocalCluster) -> None:
    with pytest.raises(ClusterError, match="factory=True needs app="):
        headlesslb_cluster_session.add_deployment("x", factory=True)


def test_client_kwargs_reach_the_cluster(headlesslb_cluster_session: LocalCluster) -> None:
    cluster = headlesslb_cluster_session
    kwargs = cluster.client_kwargs()
    assert kwargs == {"nameservers": [cluster.nameserver], "namespace": "default"}
    assert cluster.client_kwargs("shop")["namespace"] == "shop"
    cluster.add_deployment("kw", replicas=2)
    try:
        with HeadlessClient("kw-hl", port="http", **kwargs) as client:
            assert client.get("/").json()["pod"].startswith("kw-")
    finally:
        cluster.delete_workload("kw")


@pytest.mark.headlesslb_cluster(ttl=1, namespace="shop")
def test_the_marker_configures_the_cluster(headlesslb_cluster: LocalCluster) -> None:
    assert (headlesslb_cluster.ttl, headlesslb_cluster.namespace) == (1, "shop")
