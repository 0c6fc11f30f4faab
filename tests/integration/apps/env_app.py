"""A bare ASGI app whose one ``HeadlessClient("web-hl", port="http")`` has NO other argument:
its nameservers, namespace and cluster domain come from the ``HEADLESSLB_*`` variables
(``LocalCluster.environ()``) of the process it runs in.

Run under a real ``uvicorn`` by ``tests/integration/test_environ.py``. The client is opened in the
lifespan; ``GET /call?n=N`` sends N requests through it and answers ``{"pods": [...]}``, the Pod
that answered each one; ``GET /`` answers ``ok`` (readiness).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from headlesslb import HeadlessClient

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

state: dict[str, HeadlessClient] = {}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                client = HeadlessClient("web-hl", port="http")  # everything else: the env
                await client.__aenter__()
                state["client"] = client
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await state.pop("client").aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    if scope["path"] == "/call":
        query = urllib.parse.parse_qs(scope["query_string"].decode())
        client = state["client"]
        pods = []
        for _ in range(int(query.get("n", ["1"])[0])):
            response = await client.get("/")
            response.raise_for_status()
            pods.append(response.json()["pod"])
        body = json.dumps({"pods": pods}).encode()
        content_type = b"application/json"
    else:
        body, content_type = b"ok", b"text/plain"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]}
    )
    await send({"type": "http.response.body", "body": body})
