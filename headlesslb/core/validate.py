"""Argument checks shared by every constructor (pure: no I/O, standard library only).

Each check takes the argument's public name (``"RetryPolicy.per_try_timeout"``,
``"discovery_timeout"``) and the value, and either returns the value or raises
:class:`~headlesslb.errors.ConfigurationError` naming the argument, the rule and the value given,
e.g. ``RetryPolicy.per_try_timeout must be a finite number > 0, not nan``. They catch what plain
comparisons let through: NaN (every comparison with it is False, so ``x <= 0`` passes),
infinities, ``True`` where a count belongs (bool is an int), ``2.5`` as a count, and a ``str``
where a number belongs (which would otherwise surface as a ``TypeError`` far from the call that
caused it).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import re
from collections.abc import Iterable
from typing import Literal, overload

from ..errors import ConfigurationError

__all__ = [
    "count",
    "flag",
    "http_methods",
    "instance",
    "number",
    "ordered",
    "request_path",
    "status_codes",
]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Z]+$")
"""An upper-case RFC 9110 token (``tchar``): what a method name may be made of."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounds(
    min: float | None,
    max: float | None,
    exclusive_min: bool,
    exclusive_max: bool,
) -> str:
    parts = []
    if min is not None:
        parts.append(f"{'>' if exclusive_min else '>='} {min:g}")
    if max is not None:
        parts.append(f"{'<' if exclusive_max else '<='} {max:g}")
    return (" " + " and ".join(parts)) if parts else ""


@overload
def number(
    name: str,
    value: object,
    *,
    min: float | None = ...,
    max: float | None = ...,
    exclusive_min: bool = ...,
    exclusive_max: bool = ...,
    allow_none: Literal[False] = ...,
) -> float: ...


@overload
def number(
    name: str,
    value: object,
    *,
    min: float | None = ...,
    max: float | None = ...,
    exclusive_min: bool = ...,
    exclusive_max: bool = ...,
    allow_none: bool,
) -> float | None: ...


def number(
    name: str,
    value: object,
    *,
    min: float | None = None,
    max: float | None = None,
    exclusive_min: bool = False,
    exclusive_max: bool = False,
    allow_none: bool = False,
) -> float | None:
    """A finite real number (int or float, not bool) within the bounds; returned as given (other
    ``numbers.Real`` types, such as Fraction, as a float).

    ``min``/``max`` are inclusive unless ``exclusive_min``/``exclusive_max``; ``allow_none``
    lets ``None`` through (meaning "no limit" for timeouts and deadlines).
    """
    if allow_none and value is None:
        return None
    real = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        # An int too big for a float is no sane setting either: it stays NaN and is refused.
        with contextlib.suppress(OverflowError, ValueError):
            real = float(value)
    ok = (
        math.isfinite(real)
        and (min is None or (real > min if exclusive_min else real >= min))
        and (max is None or (real < max if exclusive_max else real <= max))
    )
    if not ok:
        rule = _bounds(min, max, exclusive_min, exclusive_max)
        none = " or None" if allow_none else ""
        raise ConfigurationError(f"{name} must be a finite number{rule}{none}, not {_shown(value)}")
    return value if isinstance(value, int | float) else real


@overload
def count(
    name: str,
    value: object,
    *,
    min: int = ...,
    max: int | None = ...,
    allow_none: Literal[False] = ...,
) -> int: ...


@overload
def count(
    name: str, value: object, *, min: int = ..., max: int | None = ..., allow_none: bool
) -> int | None: ...


def count(
    name: str,
    value: object,
    *,
    min: int = 0,
    max: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """An int (not a bool, not a float even if whole) within ``[min, max]``; returned as int."""
    if allow_none and value is None:
        return None
    result: int | None = None
    if not isinstance(value, bool):
        try:
            result = operator.index(value)  # type: ignore[arg-type]  # int-likes (numpy) too
        except TypeError:
            result = None
    if result is None or result < min or (max is not None and result > max):
        rule = f" >= {min}" + (f" and <= {max}" if max is not None else "")
        none = " or None" if allow_none else ""
        raise ConfigurationError(f"{name} must be an int{rule}{none}, not {_shown(value)}")
    return result


def flag(name: str, value: object) -> bool:
    """Exactly ``True`` or ``False`` (``0``, ``"no"`` or ``None`` are mistakes, not flags)."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {_shown(value)}")
    return value


def ordered(low_name: str, low: float, high_name: str, high: float) -> None:
    """Require ``low <= high`` for two already-checked numbers, naming both."""
    if not low <= high:
        raise ConfigurationError(f"{low_name} ({low:g}) must be <= {high_name} ({high:g})")


def _members(name: str, value: object, what: str) -> list[object]:
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a set of {what}, not {_shown(value)}")
    return list(value)


def status_codes(name: str, value: object, *, allow_empty: bool = True) -> range | frozenset[int]:
    """HTTP status codes 100-599: a ``range`` (returned as is) or a collection of ints
    (returned as a frozenset). ``allow_empty=False`` rejects a set that matches nothing."""
    if isinstance(value, range):
        if len(value) and not (min(value) >= 100 and max(value) <= 599):
            raise ConfigurationError(f"{name} must lie within 100-599, not {value!r}")
        if not allow_empty and not len(value):
            raise ConfigurationError(f"{name} must not be empty, not {value!r}")
        return value
    codes = _members(name, value, "HTTP status codes (ints 100-599)")
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            raise ConfigurationError(
                f"{name} must hold HTTP status codes (ints 100-599), not {_shown(code)}"
            )
    if not allow_empty and not codes:
        raise ConfigurationError(f"{name} must not be empty")
    return frozenset(code for code in codes if isinstance(code, int))


def http_methods(name: str, value: object) -> frozenset[str]:
    """A collection of HTTP method names, upper-case tokens (``"GET"``); as a frozenset.

    A bare string is rejected rather than read as a set of one-letter methods.
    """
    methods = _members(name, value, "HTTP method names")
    for method in methods:
        if not isinstance(method, str) or not _TOKEN.match(method):
            raise ConfigurationError(
                f"{name} must hold upper-case HTTP method names such as 'GET', not {_shown(method)}"
            )
    return frozenset(m for m in methods if isinstance(m, str))


def request_path(name: str, value: object) -> str:
    """A path that can be sent as a request target: starts with ``/``, no whitespace or
    control characters, no ``#`` fragment (a query string is fine)."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str starting with '/', not {_shown(value)}")
    if not value.startswith("/"):
        raise ConfigurationError(f"{name} must start with '/', not {_shown(value)}")
    for char in value:
        if char.isspace() or not char.isprintable():
            raise ConfigurationError(
                f"{name} must not contain whitespace or control characters"
                f" ({char!r} in {_shown(value)}): percent-encode them"
            )
        if char == "#":
            raise ConfigurationError(
                f"{name} must not contain a '#' fragment (never sent to the server):"
                f" {_shown(value)}"
            )
    return value


def instance(name: str, value: object, kind: type, *, allow_none: bool = False) -> object:
    """An instance of ``kind`` (a policy object, say); a dict or a str where a policy belongs is
    refused here rather than failing later, far from the call."""
    if (allow_none and value is None) or isinstance(value, kind):
        return value
    none = " or None" if allow_none else ""
    raise ConfigurationError(
        f"{name} must be a {kind.__name__}{none}, not {type(value).__name__} {_shown(value)}"
    )
