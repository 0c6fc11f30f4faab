"""examples/flask_app.py: the sync client inside a Flask app, served as WSGI on the local
cluster's Pods."""

from __future__ import annotations

from headlesslb.testing import LocalCluster

from .helpers import http


def test_flask_app_balances_reads_and_pins_writes() -> None:
    with LocalCluster() as cluster:
        cluster.add_statefulset("web", replicas=3)
        cluster.add_deployment("legacy", replicas=2, app="flask_app:local_app", factory=True)
        with http() as client:
            readers = {
                client.get(cluster.service_url("legacy-lb", f"/items/{n}")).json()["served_by"]
                for n in range(12)
            }
            written = client.post(cluster.service_url("legacy-lb", "/items/7"), content=b"v")
        assert readers == {"web-0", "web-1", "web-2"}
        assert written.json() == {"item": "7", "written_to": "web-0", "status": 200}
        assert cluster.requests_served("web-0") >= 1
