"""Routing keys taken from the request itself: a header, a cookie, or a function of the request.

An SDK that builds its own requests (OpenAI's, Anthropic's) cannot set the ``headlesslb``
extension, so it cannot pass ``key=``; it can send a header. ``key_from=`` makes the client
read the key from the request, as Envoy's ``hash_policy`` on a header, HAProxy's
``balance hdr()`` and gRPC's ring hash request header do::

    HeadlessClient("llm-hl", key_from=KeyFrom.header("x-session-id"))
    HeadlessClient("web-hl", key_from=KeyFrom.first(KeyFrom.header("x-user"), KeyFrom.cookie("s")))
    HeadlessClient("web-hl", key_from=lambda request: request.url.params.get("tenant"))

Which wins, for one request (:func:`derive`, then the call core's ``Router.start``):

1. ``ordinal=`` pins the request: no key is derived;
2. ``writes_to=`` takes every write (POST, PUT, PATCH, DELETE) that is not pinned, whatever its
   key, given or derived;
3. an explicit ``key=`` (keyword or extension) wins over the derived one;
4. the derived key; a request it finds none for (no such header, an empty one) is balanced.

Pure: a source reads the request's headers (and, for a function, whatever it likes) and does no
I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ConfigurationError, InvalidRequest
from .options import RequestOptions
from .pickers.base import HashKey

__all__ = ["CookieKey", "FirstKey", "HeaderKey", "KeyFrom", "KeySource", "derive"]


class _Request(Protocol):
    """What a key source reads of a request (httpx's or httpx2's)."""

    @property
    def headers(self) -> Mapping[str, str]: ...


KeySource = Callable[[Any], HashKey | None]
"""A function of the request (the client flavour's ``Request``) giving its key, or None."""


def _name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name.strip() or any(c in name for c in " \t;,=:"):
        raise ConfigurationError(f"KeyFrom.{kind} takes a {kind} name (a str), not {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """The key is the value of one request header (surrounding spaces dropped; an empty or
    missing header gives none)."""

    name: str

    def __call__(self, request: _Request) -> str | None:
        """The header's value, or None."""
        value = request.headers.get(self.name)
        if value is None:
            return None
        value = value.strip()
        return value or None


@dataclass(frozen=True, slots=True)
class CookieKey:
    """The key is the value of one cookie the request sends (its ``Cookie`` header: the cookies
    an httpx client holds are in it by the time the transport sees the request)."""

    name: str

    def __call__(self, request: _Request) -> str | None:
        """The cookie's value, or None."""
        header = request.headers.get("cookie")
        if not header:
            return None
        # RFC 6265: "name=value; name=value"; several Cookie headers arrive joined by ", ", and
        # a cookie value cannot contain a comma, so both separate cookies.
        for part in header.replace(",", ";").split(";"):
            name, eq, value = part.partition("=")
            if eq and name.strip() == self.name:
                value = value.strip().strip('"')
                return value or None
        return None


@dataclass(frozen=True, slots=True)
class FirstKey:
    """The first key one of ``sources`` finds, in order."""

    sources: tuple[KeySource, ...]

    def __call__(self, request: Any) -> HashKey | None:
        """The first source's key that is not None."""
        for source in self.sources:
            key = source(request)
            if key is not None:
                return key
        return None


class KeyFrom:
    """Where ``key_from=`` reads a request's routing key (see :mod:`headlesslb.core.keys`)."""

    @staticmethod
    def header(name: str) -> HeaderKey:
        """The value of request header ``name`` (case-insensitive)."""
        return HeaderKey(_name("header", name))

    @staticmethod
    def cookie(name: str) -> CookieKey:
        """The value of cookie ``name``."""
        return CookieKey(_name("cookie", name))

    @staticmethod
    def first(*sources: KeySource) -> FirstKey:
        """The first key any of ``sources`` finds (a header, else a cookie, ...)."""
        if not sources or not all(callable(s) for s in sources):
            raise ConfigurationError(
                f"KeyFrom.first takes key sources (KeyFrom.header(...), functions), not {sources!r}"
            )
        return FirstKey(tuple(sources))


def check_source(source: object) -> KeySource | None:
    """``key_from=`` checked: None, or a callable taking the request."""
    if source is not None and not callable(source):
        raise ConfigurationError(
            "key_from must be KeyFrom.header(...), KeyFrom.cookie(...) or a function taking the"
            f" request and returning its key (str, bytes, int or None), not {source!r}"
        )
    return source


def derive(options: RequestOptions, source: KeySource, request: Any) -> RequestOptions:
    """``options`` with the key ``source`` finds in ``request``, unless the request is pinned
    (``ordinal=``) or has a ``key=`` of its own, which win (``writes_to`` is applied later, over
    either). A source that fails, or gives no valid key, raises
    :class:`~headlesslb.errors.InvalidRequest` naming ``key_from``."""
    if options.key is not None or options.ordinal is not None:
        return options
    try:
        key = source(request)
    except Exception as exc:
        raise InvalidRequest(f"key_from failed on this request: {exc!r}") from exc
    if key is None:
        return options
    try:
        return RequestOptions(key, None, options.idempotent, options.read_body)
    except InvalidRequest as exc:
        raise InvalidRequest(f"key_from gave an unusable key: {exc}") from None
