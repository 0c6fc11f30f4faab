"""examples/fastapi_service.py on the local cluster: a FastAPI Deployment whose lifespan client
shards users over a StatefulSet backend, health-checked since the backend publishes not-ready
addresses."""

from __future__ import annotations

import collections

import fastapi_service

from headlesslb.testing import LocalCluster

from .helpers import http, wait_until


# --8<-- [start:test]
def test_users_are_sharded_and_a_failing_pod_gets_nothing() -> None:
    with LocalCluster(ttl=1) as cluster:
        cluster.add_statefulset("web", replicas=3, publish_not_ready=True)
        # web-2 is not ready (its probe fails) but still in the headless Service's DNS.
        cluster.fail("web-2", 503)
        (frontend,) = cluster.add_deployment(
            "frontend", replicas=1, app="fastapi_service:local_app", factory=True
        )
        base = cluster.url(frontend.name)
        with http() as client:
            assert client.get(f"{base}/healthz").json() == {"status": "ok"}
            wait_until(lambda: client.get(f"{base}/readyz").status_code == 200)
            assert client.get(f"{base}/readyz").json() == {"healthy_backends": 2}
            owners: dict[str, set[str]] = collections.defaultdict(set)
            served: collections.Counter[str] = collections.Counter()
            for _ in range(3):
                for n in range(10):
                    document = client.get(f"{base}/users/user-{n}").json()
                    assert document["status"] == 200, document
                    assert document["backend"]["path"] == f"/users/user-{n}"
                    owners[f"user-{n}"].add(document["served_by"])
                    served[document["served_by"]] += 1
        # The same user always reaches the same Pod; the failing Pod got none of 30 requests.
        assert all(len(pods) == 1 for pods in owners.values())
        assert set(served) == {"web-0", "web-1"} and sum(served.values()) == 30
        assert cluster.requests_served("web-2") == 0


# --8<-- [end:test]
def test_settings_from_the_environment() -> None:
    settings = fastapi_service.Settings.from_env(
        {"BACKEND_SERVICE": "db-hl", "BACKEND_FALLBACK": "", "BACKEND_HEALTH_INTERVAL": "2"}
    )
    assert settings == fastapi_service.Settings(
        backend="db-hl", fallback=None, health_path="/healthz", health_interval=2.0
    )
    assert fastapi_service.Settings.from_env({}) == fastapi_service.Settings()
