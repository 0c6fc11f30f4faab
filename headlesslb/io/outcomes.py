"""What an httpx or httpcore error means: for retries (:class:`~headlesslb.core.retry.Failure`)
and for balancing (:class:`~headlesslb.core.pool.Outcome`), as one
:class:`~headlesslb.core.retry.Verdict`. Every shell translates its errors into the call core's
terms here, and only here; a response's verdict is
:meth:`~headlesslb.core.retry.RetryPolicy.judge`'s. httpx and httpcore are known from the start;
another library of the same shape (httpx2 and httpcore2) is taught by :func:`register`.
"""

from __future__ import annotations

from types import ModuleType

import httpcore
import httpx

from ..core.pool import Outcome
from ..core.retry import Failure, Verdict
from ..errors import ClientClosed

__all__ = ["classify", "httpx_error", "is_refused", "register"]

_MAPPED = (
    "TimeoutException",
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "NetworkError",
    "ConnectError",
    "ReadError",
    "WriteError",
    "ProxyError",
    "UnsupportedProtocol",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
)
"""httpcore's errors, each mapped to httpx's of the same name, as httpx's own transport maps
them (kept here because that mapping is private to httpx)."""

_ERRORS: dict[type[BaseException], type[Exception]] = {}
"""Each known httpcore-like error and the httpx-like error users catch for it."""

_VERDICTS: dict[type[BaseException], Verdict] = {}
"""What each known httpx-like transport error means (the most specific class wins)."""

_CONNECT_ERRORS: set[type[BaseException]] = set()
"""The known ``ConnectError`` classes: a refusal among them says the Pod is gone."""


def httpx_error(exc: BaseException | None) -> Exception | None:
    """The httpx error to raise for httpcore's ``exc`` (the most specific one; httpx2's for
    httpcore2's), or None when ``exc`` is neither library's. Senders map in an ``except``
    clause, which costs nothing until something is raised."""
    if isinstance(exc, Exception):
        for kind in type(exc).__mro__:
            mapped = _ERRORS.get(kind)
            if mapped is not None:
                return mapped(str(exc))
    return None


# Verdicts are immutable: one of each, shared by every failure of its kind.
_CLOSED = Verdict(Outcome.CANCELLED)  # says nothing about the Pod
_REFUSED = Verdict(Outcome.REFUSED, Failure.NOT_SENT)
_NOT_CONNECTED = Verdict(Outcome.CONNECT_FAILURE, Failure.NOT_SENT)
_TIMED_OUT = Verdict(Outcome.TIMEOUT, Failure.MAYBE_PROCESSED)
_BROKEN = Verdict(Outcome.RESET, Failure.MAYBE_PROCESSED)
_UNRETRYABLE = Verdict(Outcome.RESET)


def classify(exc: BaseException) -> Verdict:
    """What an attempt that failed with ``exc`` means: its ``failure`` (retry phase; None: not
    retryable) and ``outcome`` (for balancing).

    Only connect-phase errors prove the request never reached the server; everything after the
    connection was made may have been processed.
    """
    if isinstance(exc, ClientClosed):
        return _CLOSED
    for kind in type(exc).__mro__:
        verdict = _VERDICTS.get(kind)
        if verdict is not None:
            if kind in _CONNECT_ERRORS and is_refused(exc):
                return _REFUSED
            return verdict
    return _UNRETRYABLE


def register(library: ModuleType, core: ModuleType) -> None:
    """Know the errors of an httpx-like ``library`` and its httpcore-like ``core`` (httpx2 and
    httpcore2): their names and hierarchy are httpx's and httpcore's."""
    for name in _MAPPED:
        _ERRORS[getattr(core, name)] = getattr(library, name)
    meanings = (
        (("ConnectError", "ConnectTimeout", "PoolTimeout"), _NOT_CONNECTED),
        (("ReadTimeout", "WriteTimeout"), _TIMED_OUT),
        (("ReadError", "WriteError", "RemoteProtocolError"), _BROKEN),
    )
    for names, verdict in meanings:
        for name in names:
            _VERDICTS[getattr(library, name)] = verdict
    _CONNECT_ERRORS.add(library.ConnectError)


def is_refused(exc: BaseException) -> bool:
    """Whether a connect error was a refusal (nothing listens: the Pod is gone).

    trio wraps the OSError in an ExceptionGroup, so this walks causes, contexts and group
    members; the search is short and bounded.
    """
    pending: list[BaseException | None] = [exc]
    for _ in range(16):
        if not pending:
            return False
        seen = pending.pop()
        if seen is None:
            continue
        if isinstance(seen, ConnectionRefusedError):
            return True
        pending += [seen.__cause__, seen.__context__]
        if isinstance(seen, BaseExceptionGroup):
            pending += seen.exceptions
    return False


register(httpx, httpcore)
