"""A FastAPI service that calls a StatefulSet backend through headlesslb, sharding by user key.

The client lives in the app's lifespan: opened once when the server starts, shared by every
request, closed when it stops. ``GET /users/{user_id}`` goes to the backend Pod that owns the
user (the same user always lands on the same Pod while it is healthy); the backend's headless
Service publishes not-ready addresses (examples/k8s/stateful.yaml), so the client health-checks
every Pod and keeps new ones out until a first probe passes.

In a Pod (examples/k8s/client.yaml, built by examples/Dockerfile)::

    uvicorn fastapi_service:app --host 0.0.0.0 --port 8000

configured by environment variables (see :meth:`Settings.from_env`); the namespace and DNS
server come from the Pod (``POD_NAMESPACE``, /etc/resolv.conf). On the local cluster, for tests
and a laptop (tests/examples/test_fastapi_service.py)::

    cluster.add_deployment("frontend", app="fastapi_service:local_app", factory=True)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx
from fastapi import FastAPI, HTTPException, Request

from headlesslb import HeadlessClient, HeadlessLBError, HealthCheck, Report
from headlesslb.testing import ClientKwargs, PodContext


@dataclass(frozen=True)
class Settings:
    """Where the backend is and how to watch it."""

    backend: str = "web-hl"
    """The backend's headless Service (the StatefulSet's governing Service)."""
    fallback: str | None = "web-lb"
    """Its ClusterIP/LB twin, used when no Pod is usable."""
    health_path: str = "/healthz"
    """What the backend's readinessProbe checks: publishNotReadyAddresses needs it."""
    health_interval: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """``BACKEND_SERVICE``, ``BACKEND_FALLBACK`` (empty: none), ``BACKEND_HEALTH_PATH``,
        ``BACKEND_HEALTH_INTERVAL``."""
        fallback = env.get("BACKEND_FALLBACK", cls.fallback or "")
        return cls(
            backend=env.get("BACKEND_SERVICE", cls.backend),
            fallback=fallback or None,
            health_path=env.get("BACKEND_HEALTH_PATH", cls.health_path),
            health_interval=float(env.get("BACKEND_HEALTH_INTERVAL", cls.health_interval)),
        )


class State(TypedDict):
    """What the lifespan hands every request (``request.state``)."""

    backend: HeadlessClient


def create_app(settings: Settings, client_kwargs: ClientKwargs | None = None) -> FastAPI:
    """The service; ``client_kwargs`` point the client at a local cluster instead of the Pod's
    own DNS."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with HeadlessClient(
            settings.backend,
            port="http",
            fallback=settings.fallback,
            # The headless Service publishes not-ready Pods: only a passing probe lets one in.
            health=HealthCheck(
                path=settings.health_path,
                interval=settings.health_interval,
                start_unhealthy=True,
            ),
            timeout=5.0,
            **(client_kwargs or ClientKwargs()),
        ) as backend:
            yield {"backend": backend}

    app = FastAPI(title="frontend", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> dict[str, int]:
        """Readiness: at least one backend Pod passed its health check."""
        backend: HeadlessClient = request.state.backend
        healthy = sum(endpoint.healthy for endpoint in backend.endpoints())
        if not healthy:
            raise HTTPException(503, "no healthy backend Pod yet")
        return {"healthy_backends": healthy}

    @app.get("/users/{user_id}")
    async def get_user(user_id: str, request: Request) -> dict[str, Any]:
        """The user's record, from the backend Pod that owns the user."""
        backend: HeadlessClient = request.state.backend
        try:
            response = await backend.get(f"/users/{user_id}", key=user_id)
        except (HeadlessLBError, httpx.TransportError) as exc:
            raise HTTPException(502, f"backend unreachable: {exc}") from exc
        report: Report = response.extensions["headlesslb"]
        return {
            "user": user_id,
            "status": response.status_code,
            "served_by": report["hostname"],
            "attempts": len(report["attempts"]),
            "backend": response.json(),
        }

    return app


# --8<-- [start:local_app]
def local_app(pod: PodContext) -> FastAPI:
    """The same service on a LocalCluster Pod: the cluster's DNS, probes every 0.2 s."""
    return create_app(Settings(health_interval=0.2), pod.client_kwargs())


# --8<-- [end:local_app]
app = create_app(Settings.from_env())
"""What ``uvicorn fastapi_service:app`` serves in a Pod (examples/Dockerfile)."""
