"""The httpx2 flavour: headlesslb's request-path errors, raised as httpx2's too.

Each of :mod:`headlesslb.errors`' request-path errors (an ``httpx.TransportError``) has a twin
here that also derives from ``httpx2.TransportError`` (``httpx2.TimeoutException`` for
:class:`~headlesslb.errors.DeadlineExceeded`), and the httpx2 shells raise the twin. So both
``except headlesslb.errors.NoEndpointsAvailable`` and ``except httpx2.TransportError`` catch what
the httpx2 flavour raises, and the OpenAI and Anthropic SDKs map it to their
``APIConnectionError`` / ``APITimeoutError``. The twins are httpx errors too: headlesslb's
errors predate httpx2, and httpx stays the base install's dependency.

Importing this module teaches :mod:`headlesslb.io.outcomes` httpx2's and httpcore2's errors.
"""

from __future__ import annotations

from typing import TypeVar

import httpcore2
import httpx
import httpx2

from ... import errors
from .. import outcomes

__all__ = ["FAILURES", "for_caller"]

E = TypeVar("E", bound=BaseException)

outcomes.register(httpx2, httpcore2)

FAILURES: tuple[type[Exception], ...] = (httpx2.TransportError, httpx.TransportError)
"""What a failed send raises: httpx2's transport errors, and headlesslb's own (the sender's
:class:`~headlesslb.errors.ClientClosed`, the fallback's lookup errors), which are httpx's."""


def _twin(error: type[BaseException]) -> type[BaseException] | None:
    if not issubclass(error, httpx.TransportError) or issubclass(error, httpx2.TransportError):
        return None  # not a request-path error, or httpx2's already (httpx2.alias_httpx())
    base = (
        httpx2.TimeoutException
        if issubclass(error, httpx.TimeoutException)
        else httpx2.TransportError
    )
    doc = f"{error.__doc__}\n\nRaised by the httpx2 flavour: also an ``httpx2.{base.__name__}``."
    return type(error.__name__, (error, base), {"__module__": __name__, "__doc__": doc})


_TWINS: dict[type[BaseException], type[BaseException]] = {
    error: twin
    for error in vars(errors).values()
    if isinstance(error, type)
    and issubclass(error, errors.HeadlessLBError)
    and (twin := _twin(error)) is not None
}
"""Each request-path error of :mod:`headlesslb.errors` and its httpx2 twin."""


def for_caller(error: E, request: object) -> E:
    """``error`` as the caller catches it: its httpx2 twin (same message, attributes, cause and
    traceback; ``request`` as its ``.request`` unless it has one), or itself when it has none
    (an httpx2 error already, or not a request-path error)."""
    twin = _TWINS.get(type(error))
    if twin is None:
        return error
    raised = twin.__new__(twin, *error.args)
    raised.__dict__.update(vars(error))
    if request is not None and getattr(error, "_request", None) is None:
        raised.__dict__["_request"] = request
    raised.__traceback__ = error.__traceback__
    return raised  # type: ignore[return-value]
