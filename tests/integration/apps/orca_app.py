"""Pods that send ORCA load reports, honest and hostile (tests/integration/test_orca.py): one
app per Pod, its behaviour chosen by the StatefulSet ordinal."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from headlesslb.testing import PodContext

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

HONEST = 0
REPORTS: dict[int, bytes] = {
    HONEST: b"TEXT rps_fractional=100, cpu_utilization=0.5, named_metrics.num_requests_waiting=1",
    1: b"TEXT named_metrics.m=" + b"9" * 20_000,  # huge (h11 takes up to 64 KiB of headers)
    2: b"TEXT cpu_utilization=0.5,, =, named_metrics=",  # malformed
    3: b"TEXT cpu_utilization=NaN, rps_fractional=-5",  # NaN and negative
    4: b"TEXT named_metrics.\xff\xfe\x80=1",  # not UTF-8
    5: b'JSON {"named_metrics": {"kv": 1e999}}',  # infinite
}
LIAR = 6
"""Claims next to no load, and fails every request."""
LIAR_REPORT = (
    b"TEXT rps_fractional=1000, cpu_utilization=0.000001, eps=0,"
    b" named_metrics.num_requests_waiting=0"
)


def make(context: PodContext) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The app of Pod ``context.ordinal``."""
    ordinal = context.ordinal or 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        asked = dict(scope["headers"]).get(b"endpoint-load-metrics-format")
        if ordinal == LIAR:
            status, report = 503, LIAR_REPORT
        else:
            status, report = 200, REPORTS.get(ordinal, REPORTS[HONEST])
        headers = [(b"content-type", b"application/json")]
        if asked is not None:  # as vLLM: a report only when asked
            headers.append((b"endpoint-load-metrics", report))
        body = json.dumps({"pod": context.name, "asked": (asked or b"").decode()}).encode()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
