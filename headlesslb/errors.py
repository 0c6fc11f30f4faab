"""Errors raised by headlesslb.

Everything we raise derives from :class:`HeadlessLBError`. Errors that come out of the httpx
transport on the request path also derive from :class:`httpx.TransportError`, so code that already
catches ``httpx.TransportError`` / ``httpx.HTTPError`` keeps working when it adopts headlesslb.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

__all__ = [
    "AnswerTooLarge",
    "ClientClosed",
    "ConfigurationError",
    "DeadlineExceeded",
    "DiscoveryError",
    "DnsUnreachable",
    "EmptyAnswer",
    "HeadlessLBError",
    "InvalidRequest",
    "InvalidServiceName",
    "NoEndpointsAvailable",
    "NoHealthyPods",
    "NotReady",
    "NotReadyInTime",
    "NotStarted",
    "OrdinalNotFound",
    "ServiceNotFound",
    "Throttled",
]

E = TypeVar("E", bound=BaseException)


class HeadlessLBError(Exception):
    """Base class of every error headlesslb raises itself."""


class ConfigurationError(HeadlessLBError, ValueError):
    """An argument is malformed: a port, a nameserver address, a policy value, ...

    When the message tells the caller to pass a keyword argument (``pass namespace=``),
    :attr:`argument` names it, so that another front end (the ``headlesslb`` command) can name
    its own spelling of it instead.
    """

    argument: str | None = None
    """The keyword argument the message tells the caller to pass; None when it names none."""

    def __init__(self, *args: object, argument: str | None = None) -> None:
        super().__init__(*args)
        if argument is not None:
            self.argument = argument


class InvalidServiceName(ConfigurationError):
    """A Service name is not a valid DNS-1123 name, or cannot be expanded to an FQDN."""


class InvalidRequest(ConfigurationError, httpx.TransportError):
    """A request refused before a byte leaves: its URL names the Service with another scheme or
    port than the client's, or its routing options are malformed or cannot apply.

    The client's configuration decides TLS and the port, never a URL (a typo, a config value or a
    Pod's absolute redirect). Raised on the request path, so it is an ``httpx.TransportError``.
    """

    def __init__(self, message: str, *, request: Any = None) -> None:
        httpx.TransportError.__init__(self, message, request=request)


class DiscoveryError(HeadlessLBError, httpx.TransportError):
    """DNS could not be asked: timeout, SERVFAIL, REFUSED or no reachable nameserver.

    NXDOMAIN and empty answers are not errors: they mean "no endpoints". On the request path it is
    raised only when nothing was ever discovered and no fallback is configured.
    """


class AnswerTooLarge(DiscoveryError):
    """A DNS answer did not fit in one message even over TCP (64 KiB: about 4,090 IPv4 or 2,340
    IPv6 addresses), so it came truncated. Discovery never uses a silently partial Pod list: the
    refresher keeps the last complete one. (An SRV answer that is too big is no error: discovery
    then reads the A/AAAA records, on the port the SRV records give.)"""


class NotStarted(HeadlessLBError, RuntimeError):
    """A client or transport was used when it is not running: an async ``HeadlessClient`` not
    opened (``async with`` or ``open()``), or any client or transport already closed."""


class ClientClosed(NotStarted, httpx.TransportError):
    """The client or transport was closed while this request was in flight: it is not retried,
    and no connection is opened after close."""

    def __init__(self, message: str, *, request: Any = None) -> None:
        httpx.TransportError.__init__(self, message, request=request)


class DeadlineExceeded(HeadlessLBError, httpx.TimeoutException):
    """The request's overall deadline (``RetryPolicy(deadline=...)``) ran out across attempts."""

    def __init__(self, message: str, *, request: Any = None) -> None:
        httpx.TimeoutException.__init__(self, message, request=request)


class NoEndpointsAvailable(HeadlessLBError, httpx.TransportError):
    """Discovery yielded no usable endpoint and no fallback Service is configured."""


class NotReady(HeadlessLBError):
    """``wait_ready()`` found no usable Pod: the base of the reasons it gives (catch this one
    in a readiness probe). Each reason is also a :class:`NoEndpointsAvailable` or, for DNS that
    could not be asked, a :class:`DiscoveryError`: what a request would have raised."""


class ServiceNotFound(NotReady, NoEndpointsAvailable):
    """DNS answered NXDOMAIN: no such Service (a typo, another namespace), or none of its Pods is
    ready (Kubernetes DNS has no name for a headless Service without ready Pods either)."""


class EmptyAnswer(NotReady, NoEndpointsAvailable):
    """DNS answered, with no address: the name exists, but lists no Pod of the address family
    asked (``ip_family=``)."""


class DnsUnreachable(NotReady, DiscoveryError):
    """DNS could not be asked (timeout, SERVFAIL, REFUSED, no reachable nameserver) and no Pod
    is known: the round's error is its ``__cause__``."""


class NoHealthyPods(NotReady, NoEndpointsAvailable):
    """DNS lists Pods, but none may take requests: none passed its health check (with
    ``HealthCheck(start_unhealthy=True)``), or every one is unhealthy or ejected."""


class NotReadyInTime(NotReady, NoEndpointsAvailable):
    """``wait_ready(timeout)``'s timeout passed before the first DNS answer (or, with
    ``start_unhealthy``, the first health checks) came; the message says what was seen."""


class OrdinalNotFound(HeadlessLBError, httpx.TransportError):
    """A request pinned to a StatefulSet ordinal found no Pod with that ordinal."""

    def __init__(self, message: str, *, ordinal: int, available: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.ordinal = ordinal
        self.available = available


class Throttled(HeadlessLBError, httpx.TransportError):
    """The client shed this request itself, before sending it: the Pods have been rejecting
    most requests for load (429, 503 with Retry-After), and sending more would only amplify the
    overload (``throttle=AdaptiveThrottle()``). Nothing was sent; back off and try later."""

    def __init__(self, message: str, *, probability: float) -> None:
        super().__init__(message)
        self.probability = probability


def copy_error(error: E) -> E:
    """A new exception like ``error``: its type, arguments and attributes, without its
    traceback, chain or notes.

    Raise such a copy, never a remembered exception again: each raise of one object adds the
    raiser's frames to its traceback, so one failure remembered and raised for every request
    grows without bound (and is shared by every thread that raises it). ``__init__`` is not
    called, so errors whose constructors take keyword arguments copy as well.
    """
    cls = type(error)
    copy = cls.__new__(cls, *error.args)
    copy.__dict__.update((k, v) for k, v in vars(error).items() if k != "__notes__")
    return copy
