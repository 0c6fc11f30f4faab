"""Per-request routing options and how they are validated (pure).

``RequestOptions`` travel with a request as the ``headlesslb`` extension (or come from a client's
keyword arguments); the call core reads them. Whichever way they come, they are validated the same
way, on construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidRequest
from .names import ORDINAL_MAX
from .pickers.base import HashKey

__all__ = ["EXTENSION", "PLAIN", "READ_BODY", "WRITE_METHODS", "RequestOptions", "merged"]

EXTENSION = "headlesslb"
"""Request extension carrying :class:`RequestOptions`; response extension with the report."""

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""The methods ``writes_to`` sends to its Pod."""
_OPTION_NAMES = frozenset({"key", "ordinal", "idempotent", "read_body"})


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Per-request options, passed as ``extensions={"headlesslb": {...}}`` or client kwargs.

    Validated on construction, whichever way they come: a malformed option raises
    :class:`~headlesslb.errors.InvalidRequest` naming it, before anything is sent.
    """

    key: HashKey | None = None
    """Shard by this key: the same key goes to the same Pod while it is healthy. ``str`` (any
    text UTF-8 can encode), ``bytes``, or ``int`` (up to 4,300 decimal digits, Python's limit on
    int-to-text conversion: the key is hashed as its decimal text)."""
    ordinal: int | None = None
    """Pin to the StatefulSet Pod with this ordinal (0 … 2**31 − 1, Kubernetes' int32); never
    another Pod, never the fallback."""
    idempotent: bool | None = None
    """Allow retrying after the request may have reached a Pod (default: by method)."""
    read_body: bool = False
    """Read the body inside the transport, so a connection lost mid-body is retried like any
    other failure. ``HeadlessClient`` sets it for every non-streaming request."""

    def __post_init__(self) -> None:
        key, ordinal = self.key, self.ordinal
        if key is not None:
            _check_key(key)
        if ordinal is not None and (
            isinstance(ordinal, bool)
            or not isinstance(ordinal, int)
            or not 0 <= ordinal <= ORDINAL_MAX
        ):
            raise InvalidRequest(
                f"ordinal must be an int from 0 to {ORDINAL_MAX} (a StatefulSet ordinal),"
                f" not {ordinal!r}"
            )
        if key is not None and ordinal is not None:
            raise InvalidRequest("a request takes key= or ordinal=, not both")
        if self.idempotent is not None and not isinstance(self.idempotent, bool):
            raise InvalidRequest(f"idempotent must be a bool or None, not {self.idempotent!r}")
        if not isinstance(self.read_body, bool):
            raise InvalidRequest(f"read_body must be a bool, not {self.read_body!r}")

    @property
    def routes(self) -> bool:
        """Whether any option asks for something only the Service's Pods can honour."""
        return self.key is not None or self.ordinal is not None or self.idempotent is not None

    @classmethod
    def from_extension(cls, value: object) -> RequestOptions:
        """Validate the ``headlesslb`` request extension (a mapping or a RequestOptions)."""
        if isinstance(value, RequestOptions):
            return value
        if not isinstance(value, Mapping):
            raise InvalidRequest(
                f"the {EXTENSION!r} request extension must be a mapping or RequestOptions,"
                f" not {type(value).__name__}"
            )
        unknown = set(value) - _OPTION_NAMES
        if unknown:
            raise InvalidRequest(
                f"unknown {EXTENSION!r} options {sorted(map(str, unknown))};"
                f" known: {sorted(_OPTION_NAMES)}"
            )
        return cls(**value)


def _check_key(key: object) -> None:
    if isinstance(key, bool) or not isinstance(key, str | bytes | int):
        raise InvalidRequest(f"key must be str, bytes or int, not {type(key).__name__}")
    if isinstance(key, str):
        try:
            key.encode()
        except UnicodeEncodeError as exc:
            raise InvalidRequest(f"key {key!r} cannot be encoded as UTF-8: {exc.reason}") from None
    elif isinstance(key, int):
        try:
            b"%d" % key
        except ValueError:
            raise InvalidRequest(
                f"an int key of {key.bit_length()} bits is longer than the 4,300 decimal digits"
                " it can be hashed as; pass it as bytes"
            ) from None


PLAIN = RequestOptions()
"""No options: the common case, shared."""
READ_BODY = RequestOptions(read_body=True)
"""What ``HeadlessClient`` attaches to every non-streaming request."""


def merged(
    given: object,
    *,
    key: HashKey | None = None,
    ordinal: int | None = None,
    idempotent: bool | None = None,
    read_body: bool = False,
) -> RequestOptions | None:
    """A client method's routing keywords merged over a request's ``headlesslb`` extension
    (``given``, may be None); the keywords win. None when there is nothing to attach."""
    if given is None and key is None and ordinal is None and idempotent is None:
        return READ_BODY if read_body else None  # the common case: nothing to validate
    base = PLAIN if given is None else RequestOptions.from_extension(given)
    return RequestOptions(
        base.key if key is None else key,
        base.ordinal if ordinal is None else ordinal,
        base.idempotent if idempotent is None else idempotent,
        base.read_body or read_body,
    )
