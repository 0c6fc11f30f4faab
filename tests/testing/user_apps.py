"""Apps the local cluster's Pods serve in tests/testing/test_user_apps.py (imported by the
cluster process by their import strings)."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

from headlesslb.testing import PodContext

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

EVENTS = "HEADLESSLB_TEST_APP_EVENTS"
"""A directory (from the environment the cluster process inherits) where lifespans log."""


def _log(event: str) -> None:
    directory = os.environ.get(EVENTS)
    if directory:
        with (Path(directory) / "events.log").open("a") as log:
            log.write(event + "\n")


async def _json(send: Send, status: int, document: object) -> None:
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def make_asgi(context: PodContext) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """A per-Pod ASGI app with a lifespan and its own state."""
    hits: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["started_by"] = context.name
                    _log(f"startup {context.name}")
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    _log(f"shutdown {context.name}")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        hits.append(scope["path"])
        await _json(
            send,
            200,
            {
                "app": "asgi",
                "pod": context.name,
                "ordinal": context.ordinal,
                "namespace": context.namespace,
                "state": scope["state"].get("started_by"),
                "hits": len(hits),
                "body": body.decode(),
                "client_kwargs": context.client_kwargs(),
            },
        )

    return app


async def shared_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """One ASGI app object for every Pod, without a lifespan (it raises on that scope)."""
    assert scope["type"] == "http"
    await _json(send, 201, {"app": "shared", "path": scope["path"]})


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A plain WSGI app."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    document = {"app": "wsgi", "method": environ["REQUEST_METHOD"], "body": body.decode()}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(document).encode()]


def failing_factory(context: PodContext) -> object:
    """A factory that fails for one Pod."""
    raise RuntimeError(f"no app for {context.name}")


async def failing_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """An app whose lifespan startup reports failure."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
    await _json(send, 200, {})


NOT_CALLABLE = 42
