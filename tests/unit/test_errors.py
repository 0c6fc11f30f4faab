"""copy_error: what a remembered failure is raised as, again and again (no sockets)."""

from __future__ import annotations

import httpx

from headlesslb.errors import InvalidRequest, OrdinalNotFound, copy_error


def test_a_copy_keeps_type_message_and_attributes_but_no_traceback_chain_or_notes() -> None:
    try:
        raise OrdinalNotFound("no Pod with ordinal 7", ordinal=7, available=(0, 1))
    except OrdinalNotFound as exc:
        original = exc
    original.add_note("a note for the first caller only")
    original.__cause__ = LookupError("why")
    copy = copy_error(original)
    assert type(copy) is OrdinalNotFound and copy is not original
    assert str(copy) == str(original) and (copy.ordinal, copy.available) == (7, (0, 1))
    assert copy.__traceback__ is None and copy.__cause__ is None
    assert not hasattr(copy, "__notes__")
    copy.add_note("its own")
    assert original.__notes__ == ["a note for the first caller only"]

    request = httpx.Request("GET", "http://web-hl/")
    assert copy_error(InvalidRequest("bad port", request=request)).request is request
