"""A Flask app with ONE module-level ``headlesslb.sync.HeadlessClient``, used before fork.

Run under ``gunicorn --preload`` by ``tests/integration/test_gunicorn.py``: the client is made
and used (one warm-up request) while this module is imported, so the gunicorn master already
has the discovery thread running and keep-alive connections to Pods open when it forks its
workers. That is the dangerous case the fork hook exists for.

Configured from the environment (the LocalCluster the test started):

``HLB_NAMESERVER``  ``"ip:port"`` of the cluster's DNS server (required)
``HLB_NAMESPACE``   namespace [``default``]
``HLB_DOMAIN``      cluster domain [``cluster.local``]
``HLB_SERVICE``     headless Service [``web-hl``]

Routes answer ``{"pod": <Pod that answered>, "worker_pid": <this process>}``:
``/`` balanced, ``/key/<k>`` sharded by key, ``/ordinal/<n>`` pinned to a StatefulSet ordinal.
"""

from __future__ import annotations

import os
from typing import Any

import flask

from headlesslb.sync import HeadlessClient

client = HeadlessClient(
    os.environ.get("HLB_SERVICE", "web-hl"),
    port="http",
    namespace=os.environ.get("HLB_NAMESPACE", "default"),
    cluster_domain=os.environ.get("HLB_DOMAIN", "cluster.local"),
    nameservers=[os.environ["HLB_NAMESERVER"]],
    timeout=5.0,
)

# Warm-up at import: starts the background thread and opens a connection in the master.
_warmup = client.get("/warmup")
_warmup.raise_for_status()
WARMUP_POD: str = _warmup.json()["pod"]

app = flask.Flask(__name__)


def _answer(**routing: Any) -> flask.Response:
    response = client.get("/", **routing)
    response.raise_for_status()
    return flask.jsonify(pod=response.json()["pod"], worker_pid=os.getpid())


@app.get("/")
def balanced() -> flask.Response:
    return _answer()


@app.get("/key/<k>")
def by_key(k: str) -> flask.Response:
    return _answer(key=k)


@app.get("/ordinal/<int:n>")
def by_ordinal(n: int) -> flask.Response:
    return _answer(ordinal=n)
