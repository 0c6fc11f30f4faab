"""A sharded cache over a StatefulSet: each key lives on one Pod, chosen by jump hash over the
Pods' ordinals; cluster-wide invalidation is a write to the leader, ``cache-0``.

- ``get``/``set``/``delete`` send the key as ``key=``: with ``ConsistentHash(over="ordinal")``
  the owner is ``jump_hash(key, replicas)``, so scaling N → N+1 moves only the keys the new Pod
  takes over (1/(N+1) of them), and every client process agrees on the owner without talking
  to the others.
- ``invalidate_all`` bumps a generation number on the leader (``ordinal=0``: that Pod and no
  other, never the fallback); every key is stored under its generation, so bumping it makes
  every shard's old entries unreachable at once, without touching the shards.

The cache server (one per Pod) is :func:`cache_server`; on the local cluster::

    cluster.add_statefulset("cache", 3, app="sharded_cache:cache_server", factory=True)

and in Kubernetes behind ``cache-hl`` (the governing headless Service) like
examples/k8s/stateful.yaml's ``web``.
"""

from __future__ import annotations

from typing import Any

import flask

from headlesslb import ConsistentHash, Report
from headlesslb.sync import HeadlessClient
from headlesslb.testing import ClientKwargs, PodContext

LEADER = 0


# --8<-- [start:client]
class ShardedCache:
    """A client of the cache StatefulSet (thread-safe, blocking)."""

    def __init__(self, service: str = "cache-hl", client_kwargs: ClientKwargs | None = None):
        self.client = HeadlessClient(
            service,
            port="http",
            sharding=ConsistentHash(over="ordinal"),  # jump hash over StatefulSet ordinals
            **(client_kwargs or ClientKwargs()),
        )
        self._generation: int | None = None

    def __enter__(self) -> ShardedCache:
        self.client.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop discovery and close every connection."""
        self.client.close()

    # -- the leader's generation ---------------------------------------------------------------
    def generation(self) -> int:
        """The current generation, read from the leader once and then remembered."""
        if self._generation is None:
            response = self.client.get("/generation", ordinal=LEADER)
            response.raise_for_status()
            self._generation = int(response.json()["generation"])
        return self._generation

    def invalidate_all(self) -> int:
        """Make every cached entry unreachable: one write, to the leader."""
        response = self.client.post("/generation", ordinal=LEADER)
        response.raise_for_status()
        self._generation = int(response.json()["generation"])
        return self._generation

    # -- keys, each on its owner ---------------------------------------------------------------
    def _path(self, key: str) -> str:
        return f"/kv/{self.generation()}/{key}"

    def set(self, key: str, value: str) -> str | None:
        """Store ``value``; returns the hostname of the Pod that owns ``key``."""
        response = self.client.put(self._path(key), content=value.encode(), key=key)
        response.raise_for_status()
        return owner(response.extensions["headlesslb"])

    def get(self, key: str) -> str | None:
        """The value, or None when the owner has no entry for this generation."""
        response = self.client.get(self._path(key), key=key)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.text

    def delete(self, key: str) -> None:
        """Remove the entry from its owner."""
        self.client.delete(self._path(key), key=key).raise_for_status()

    def owner(self, key: str) -> str | None:
        """The hostname of the Pod that owns ``key`` now (asks it)."""
        response = self.client.get("/stats", key=key)
        return owner(response.extensions["headlesslb"])


# --8<-- [end:client]
def owner(report: Report) -> str | None:
    """The Pod that answered a request."""
    return report["hostname"]


def cache_server(pod: PodContext) -> flask.Flask:
    """One cache Pod: an in-memory map, plus the generation counter on the leader."""
    app = flask.Flask(f"cache-{pod.name}")
    entries: dict[str, bytes] = {}
    generation = [0]

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/kv/<int:gen>/<key>")
    def get(gen: int, key: str) -> Any:
        value = entries.get(f"{gen}/{key}")
        return (value, 200) if value is not None else ("", 404)

    @app.put("/kv/<int:gen>/<key>")
    def put(gen: int, key: str) -> Any:
        entries[f"{gen}/{key}"] = flask.request.get_data()
        return "", 204

    @app.delete("/kv/<int:gen>/<key>")
    def delete(gen: int, key: str) -> Any:
        entries.pop(f"{gen}/{key}", None)
        return "", 204

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return {"pod": pod.name, "entries": len(entries)}

    @app.route("/generation", methods=["GET", "POST"])
    def gen() -> Any:
        if pod.ordinal != LEADER:
            return {"error": f"{pod.name} is not the leader"}, 409
        if flask.request.method == "POST":
            generation[0] += 1
        return {"generation": generation[0]}

    return app
