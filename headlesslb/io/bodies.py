"""What every sender shares, whatever its HTTP library (httpx, httpx2) and mode (async, sync):
an attempt's verdict at header time, its outcome reported once, the headers an attempt adds,
and the :class:`Reaper` of response bodies dropped unclosed.

The senders themselves (:mod:`headlesslb.io.sender` and the flavours generated from it) wrap
each body so that it reports its attempt's verdict to the pool exactly once, when it ends: read
to the end or closed, or, for a streamed response the caller dropped unclosed, when the garbage
collector finds it (reported as cancelled and released by the sender's owner).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

from ..core.events import EventHub, StreamAbandoned
from ..core.pool import Attempt, Outcome
from ..core.retry import RetryPolicy, Verdict

__all__ = [
    "Abandoned",
    "Address",
    "Reaper",
    "answered",
    "attempt_extensions",
    "report_attempt",
    "with_headers",
]

log = logging.getLogger("headlesslb.streams")

Address = tuple[str, int]
"""A Pod's (or the fallback's) ``(ip, port)``: what a sender keeps a connection pool for."""


class _Request(Protocol):
    """What the reaper reads of a request (httpx's or httpx2's)."""

    @property
    def method(self) -> str: ...

    @property
    def url(self) -> object: ...


class _Response(Protocol):
    """What a verdict reads of a response (httpx's or httpx2's)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def attempt_extensions(
    extensions: MutableMapping[str, Any], sni: str | None, timeout: float | None
) -> MutableMapping[str, Any]:
    """A request's extensions for one attempt: SNI, and every phase's timeout capped at the
    attempt's ``timeout`` (its per-try timeout, or the fallback's connect timeout). Capping
    every phase, not only the connect, bounds a blocking attempt, which nothing else can stop
    from outside, as much as an async one."""
    if sni is None and timeout is None:
        return extensions
    extensions = dict(extensions)
    if sni is not None:
        extensions["sni_hostname"] = sni
    if timeout is not None:
        timeouts = dict(extensions.get("timeout") or {})
        for phase in ("connect", "read", "write", "pool"):
            current = timeouts.get(phase)
            timeouts[phase] = timeout if current is None else min(current, timeout)
        extensions["timeout"] = timeouts
    return extensions


def with_headers(
    headers: list[tuple[bytes, bytes]], extra: tuple[tuple[str, str], ...]
) -> list[tuple[bytes, bytes]]:
    """``headers`` plus ``extra`` (an observer's ``traceparent``), replacing same-named ones:
    an attempt carries its own trace context, not one the request came in with."""
    # Plain loops: comprehensions are a function call each (before Python 3.12), per attempt.
    added = []
    names = set()
    for name, value in extra:
        raw = name.encode("latin-1")
        names.add(raw.lower())
        added.append((raw, value.encode("latin-1")))
    merged = []
    for header in headers:
        if header[0].lower() not in names:
            merged.append(header)
    merged += added
    return merged


def answered(response: _Response, attempt: Attempt, policy: RetryPolicy) -> Verdict:
    """The headers of ``attempt``'s ``response`` came back now (its latency ends here, however
    long the body streams): the one verdict ``policy`` makes of it (every sender)."""
    attempt.answer()
    return policy.judge(response.status_code, response.headers)


def report_attempt(attempt: Attempt | None, outcome: Outcome) -> None:
    """Report ``outcome`` to ``attempt`` unless it was reported already (every body)."""
    if attempt is not None and not attempt.finished:
        attempt.done(outcome)


class Abandoned:
    """A response body the garbage collector found unclosed: what releasing it takes (never the
    body itself, which is being destroyed)."""

    __slots__ = ("address", "attempt", "inner", "request")

    def __init__(
        self, inner: Any, attempt: Attempt | None, request: _Request, address: Address | None
    ) -> None:
        self.inner = inner
        """The stream the body wrapped (httpcore's, or a ``pod_transport``'s): to close."""
        self.attempt = attempt
        self.request = request
        self.address = address
        """Where the sender counted it in (None: a ``pod_transport``'s, counted nowhere)."""


class Reaper:
    """One sender's response bodies dropped unclosed: queued by the garbage collector, released
    by the sender's owner (its event loop; the sync client's runtime thread).

    A body's ``__del__`` runs wherever the garbage collector does: on any thread, between any
    two bytecodes of whatever ran there, perhaps inside the very lock releasing it would take
    (httpcore's pool lock is not reentrant) or in the middle of a pool's bookkeeping, which is
    one loop's and unlocked in the async client. So :meth:`abandoned`, its only call, does two
    things, both safe there and neither blocking: it puts the body's record on a
    ``queue.SimpleQueue`` (reentrant by design, "appropriate for use in destructors such as
    ``__del__``") and calls :attr:`wake`, which schedules :meth:`reap` on the owner: asyncio's
    ``call_soon_threadsafe`` or trio's ``run_sync_soon`` (:func:`~headlesslb.io.tasks.scheduler`),
    or the sync runtime thread's ``call_soon``. Everything else (reporting the attempt, the
    event, the counts, closing) happens there.
    """

    __slots__ = ("_queue", "_warned", "events", "wake")

    def __init__(self, events: EventHub | None) -> None:
        self.events = events
        """Where :class:`~headlesslb.core.events.StreamAbandoned` goes (None: nowhere)."""
        self.wake: Callable[[], object] | None = None
        """Schedules :meth:`reap` on the owner, from any thread (set by the owner, once)."""
        self._queue: queue.SimpleQueue[tuple[Any, Attempt | None, _Request, Address | None]] = (
            queue.SimpleQueue()
        )
        self._warned = False

    def abandoned(
        self, inner: Any, attempt: Attempt | None, request: _Request, address: Address | None
    ) -> None:
        """Queue a body found unclosed and wake the owner (the garbage collector's context: no
        module global is read here, so it works at interpreter exit too)."""
        self._queue.put((inner, attempt, request, address))
        wake = self.wake
        if wake is not None:
            # Not contextlib.suppress: no object to build here. The loop may be closed, its run
            # over: nobody is left to release to.
            try:  # noqa: SIM105
                wake()
            except Exception:
                pass

    def reap(self, release: Callable[[Abandoned], None]) -> None:
        """Release every body queued so far (the owner's context): its attempt reported as
        cancelled (it says nothing about the Pod), the event emitted, then ``release(record)``
        (the counts, the connection). Never raises: it runs as a loop callback."""
        while True:
            try:
                record = Abandoned(*self._queue.get_nowait())
            except queue.Empty:
                return
            try:
                attempt = record.attempt
                report_attempt(attempt, Outcome.CANCELLED)
                self._announce(record, attempt)
                release(record)
            except Exception:
                log.exception("releasing a streamed response that was not closed failed")

    def _announce(self, record: Abandoned, attempt: Attempt | None) -> None:
        events = self.events
        if events is None:
            return
        first, self._warned = not self._warned, True
        endpoint = None if attempt is None else attempt.state.endpoint
        if endpoint is not None:
            address = endpoint.authority
        elif record.address is not None:
            host, port = record.address
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        else:
            address = "?"
        request = record.request
        events.emit(
            StreamAbandoned(
                events.service, request.method, str(request.url), endpoint, address, first
            )
        )
