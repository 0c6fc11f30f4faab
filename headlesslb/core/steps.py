"""What the call core tells its shell to do next: the steps of one request.

A :class:`~headlesslb.core.call.Call` hands its shell one :class:`Step` at a time; the shell
performs it (I/O) and feeds the result back (``call.feed(result)``, one of
:mod:`.results`, which mirror these steps). These are plain frozen records, so a shell's loop
is a dispatch on their type and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from .endpoint import Endpoint
from .pool import Attempt
from .snapshot import EndpointState

__all__ = [
    "DELIVER",
    "TO_FALLBACK",
    "Backoff",
    "Deliver",
    "Fail",
    "LookupPod",
    "Send",
    "SendToFallback",
    "Step",
]


class Step:
    """Base of the instructions a call gives its shell."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, init=False)
class Send(Step):
    """Send the request to ``state``'s Pod. ``attempt`` is already counted in the pool: the shell
    hands it to the response body, which reports the outcome when it ends."""

    state: EndpointState
    attempt: Attempt
    timeout: float | None
    """The per-try timeout, seconds (``None``: only the request's own timeouts)."""
    headers: tuple[tuple[str, str], ...]
    """Headers an observer asked to send with this attempt (tracing's ``traceparent``)."""
    hedge_after: float | None
    """Seconds after which, with no answer yet, the shell feeds the call ``HEDGE_DUE``, which
    answers with a second attempt or None (``None`` here: this attempt is not hedged)."""

    def __init__(
        self,
        state: EndpointState,
        attempt: Attempt,
        timeout: float | None,
        headers: tuple[tuple[str, str], ...] = (),
        hedge_after: float | None = None,
    ) -> None:
        # One made per attempt: the slots' own setters, as for the results (:mod:`.results`).
        _set_state(self, state)
        _set_attempt(self, attempt)
        _set_timeout(self, timeout)
        _set_headers(self, headers)
        _set_hedge_after(self, hedge_after)

    @property
    def endpoint(self) -> Endpoint:
        """The Pod to send to."""
        return self.state.endpoint


@dataclass(frozen=True, slots=True)
class Backoff(Step):
    """Wait this long, then feed the call ``WAITED``."""

    seconds: float


@dataclass(frozen=True, slots=True)
class LookupPod(Step):
    """Resolve a StatefulSet Pod by its own DNS name (SRV gave no hostnames), then feed the call
    ``Found``. ``fresh``: the cached answer just refused a connection; ask DNS again."""

    ordinal: int
    hostname: str
    """``<statefulset>-<ordinal>``."""
    name: str
    """The absolute name to resolve, ``<hostname>.<service fqdn>``."""
    port: int
    fresh: bool = False


@dataclass(frozen=True, slots=True)
class SendToFallback(Step):
    """Send the request to the fallback Service, then feed the call ``FallbackResponded`` or
    ``FallbackFailed``."""

    headers: tuple[tuple[str, str], ...] = ()
    """Headers an observer asked to send with this attempt (tracing's ``traceparent``)."""


@dataclass(frozen=True, slots=True)
class Deliver(Step):
    """The latest response is the answer: hand it to the caller."""


@dataclass(frozen=True, slots=True)
class Fail(Step):
    """Raise ``error`` (a typed error, or the last attempt's own httpx error with a note)."""

    error: BaseException


DELIVER = Deliver()
TO_FALLBACK = SendToFallback()

_set_state = Send.__dict__["state"].__set__
_set_attempt = Send.__dict__["attempt"].__set__
_set_timeout = Send.__dict__["timeout"].__set__
_set_headers = Send.__dict__["headers"].__set__
_set_hedge_after = Send.__dict__["hedge_after"].__set__
