"""A Flask app on the blocking client: one ``headlesslb.sync.HeadlessClient`` per process.

Flask's app factory builds the client once; every request thread shares it (it is thread-safe,
and survives gunicorn's ``--preload`` fork). Discovery starts on the first request and runs in
one background thread; ``close_backend`` stops it at exit.

In a Pod::

    gunicorn --workers 4 'flask_app:create_app()'

On the local cluster (tests/examples/test_flask_app.py)::

    cluster.add_deployment("legacy", app="flask_app:local_app", factory=True)
"""

from __future__ import annotations

import atexit
from typing import Any

import flask

from headlesslb import Report
from headlesslb.sync import HeadlessClient
from headlesslb.testing import ClientKwargs, PodContext


# --8<-- [start:create_app]
def create_app(
    backend: str = "web-hl",
    fallback: str | None = "web-lb",
    client_kwargs: ClientKwargs | None = None,
) -> flask.Flask:
    """The app, with its backend client in ``app.extensions["backend"]``."""
    app = flask.Flask(__name__)
    kwargs = client_kwargs or ClientKwargs()
    client = HeadlessClient(backend, port="http", fallback=fallback, **kwargs)
    app.extensions["backend"] = client
    atexit.register(client.close)

    @app.get("/items/<item_id>")
    def get_item(item_id: str) -> dict[str, Any]:
        """Balanced over the backend's Pods."""
        response = client.get(f"/items/{item_id}")
        report: Report = response.extensions["headlesslb"]
        return {"item": item_id, "served_by": report["hostname"], "backend": response.json()}

    @app.post("/items/<item_id>")
    def put_item(item_id: str) -> dict[str, Any]:
        """Writes go to the StatefulSet's first Pod, pinned by ordinal."""
        response = client.post(f"/items/{item_id}", content=flask.request.get_data(), ordinal=0)
        report: Report = response.extensions["headlesslb"]
        return {"item": item_id, "written_to": report["hostname"], "status": response.status_code}

    return app


# --8<-- [end:create_app]
def local_app(pod: PodContext) -> flask.Flask:
    """The same app on a LocalCluster Pod, pointed at the cluster's DNS."""
    return create_app(client_kwargs=pod.client_kwargs())
