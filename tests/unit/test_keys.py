"""Routing keys from the request (``key_from=``): a header, a cookie, the first of several, a
function; and the precedence between ``ordinal=``, ``writes_to``, ``key=`` and the derived key,
through the call core (pure, no sockets)."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from headlesslb import KeyFrom
from headlesslb.compose import compose
from headlesslb.core.keys import derive
from headlesslb.core.options import PLAIN, RequestOptions
from headlesslb.errors import ConfigurationError, InvalidRequest

from .test_call import drive, make


def request(method: str = "GET", **headers: str) -> httpx.Request:
    return httpx.Request(method, "http://web-hl/x", headers=headers)


def test_header() -> None:
    source = KeyFrom.header("X-Session-Id")
    assert source(request(**{"x-session-id": " s-1 "})) == "s-1"  # any case, spaces dropped
    assert source(request()) is None
    assert source(request(**{"x-session-id": "  "})) is None  # empty: no key


def test_cookie() -> None:
    source = KeyFrom.cookie("sid")
    assert source(request(cookie="a=1; sid=abc; b=2")) == "abc"
    assert source(request(cookie='sid="quoted"')) == "quoted"
    assert source(request(cookie="sidx=1; xsid=2")) is None  # whole names only
    assert source(request()) is None
    # Cookies set on an httpx client are in the request's Cookie header by transport time.
    client = httpx.Client(cookies={"sid": "from-the-jar"})
    assert source(client.build_request("GET", "http://web-hl/")) == "from-the-jar"
    client.close()


def test_first_and_functions() -> None:
    source = KeyFrom.first(KeyFrom.header("x-user"), KeyFrom.cookie("sid"), lambda r: 7)
    assert source(request(**{"x-user": "u"}, cookie="sid=s")) == "u"
    assert source(request(cookie="sid=s")) == "s"
    assert source(request()) == 7


def test_bad_sources_are_refused_naming_the_argument() -> None:
    for bad in ("", "x y", "a;b", 3):
        with pytest.raises(ConfigurationError, match=r"KeyFrom\.header"):
            KeyFrom.header(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"KeyFrom\.first"):
        KeyFrom.first()
    with pytest.raises(ConfigurationError, match="key_from must be"):
        compose("web-hl.default", {"key_from": "x-session-id", "nameservers": ["127.0.0.1:53"]})


def test_a_failing_or_bad_source_is_an_invalid_request_naming_key_from() -> None:
    def broken(r: Any) -> str:
        raise KeyError("tenant")

    with pytest.raises(InvalidRequest, match="key_from failed"):
        derive(PLAIN, broken, request())
    with pytest.raises(InvalidRequest, match="key_from gave an unusable key"):
        derive(PLAIN, lambda r: 1.5, request())


# -- precedence ------------------------------------------------------------------------------------
SESSION = KeyFrom.header("x-session-id")


@pytest.mark.parametrize(
    ("method", "options", "header", "expected"),
    [
        ("GET", {}, "s-1", ("key", "s-1")),  # the derived key
        ("GET", {}, None, ("balanced", None)),  # no header: balanced
        ("GET", {"key": "explicit"}, "s-1", ("key", "explicit")),  # key= wins
        ("GET", {"ordinal": 2}, "s-1", ("ordinal", 2)),  # ordinal= wins
        ("POST", {}, "s-1", ("ordinal", 0)),  # writes_to wins for writes
        ("POST", {"key": "explicit"}, "s-1", ("ordinal", 0)),  # ... over key= too
        ("POST", {"ordinal": 1}, "s-1", ("ordinal", 1)),  # ... but not over ordinal=
        ("GET", {"idempotent": True, "read_body": True}, "s-1", ("key", "s-1")),  # kept
    ],
)
def test_precedence(
    method: str, options: dict[str, Any], header: str | None, expected: tuple[str, Any]
) -> None:
    env = make(3, writes_to=0)
    headers = {} if header is None else {"x-session-id": header}
    given = RequestOptions(**options)
    derived = derive(given, SESSION, request(method, **headers))
    if "idempotent" in options:
        assert (derived.idempotent, derived.read_body) == (True, True)
    call = env.router.start(method, derived, replayable=True)
    kind, value = expected
    if kind == "ordinal":
        assert call.ctx.ordinal == value and call.ctx.key is None
    elif kind == "key":
        assert call.ctx.key == value and call.ctx.ordinal is None
    else:
        assert call.ctx.key is None and call.ctx.ordinal is None
    drive(call, [200], env.clock)


def test_the_same_derived_key_goes_to_the_same_pod() -> None:
    env = make(5)
    rng = random.Random(3)
    for session in (f"s-{rng.randrange(10**6)}" for _ in range(20)):
        options = derive(PLAIN, SESSION, request(**{"x-session-id": session}))
        first = drive(env.router.start("GET", options, replayable=True), [200], env.clock)
        again = drive(env.router.start("GET", options, replayable=True), [200], env.clock)
        assert first.ips == again.ips
