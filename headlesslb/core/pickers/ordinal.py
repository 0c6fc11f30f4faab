"""Pinning: a request with ``ordinal=n`` goes to StatefulSet Pod ``<name>-n`` and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping

from ...errors import OrdinalNotFound
from ..snapshot import EndpointState, Snapshot
from .base import PickContext

__all__ = ["Ordinal", "OrdinalPicker"]


class OrdinalPicker:
    """Looks ``ctx.ordinal`` up among one snapshot's members."""

    __slots__ = ("_available", "_by_ordinal")

    def __init__(self, by_ordinal: Mapping[int, EndpointState]) -> None:
        self._by_ordinal = by_ordinal
        self._available = tuple(sorted(by_ordinal))

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The member with ordinal ``ctx.ordinal``.

        Health is ignored on purpose: an ejected or unhealthy pinned Pod is still returned, since
        sending the request to another Pod would break the caller's contract; the attempt fails
        or succeeds on its own. Returns ``None`` only when this request already tried the Pod
        (``ctx.exclude``), and raises :class:`~headlesslb.errors.OrdinalNotFound` when no member
        has that ordinal.
        """
        ordinal = ctx.ordinal
        state = self._by_ordinal.get(ordinal)  # type: ignore[arg-type]  # None finds nothing
        if state is None:
            raise self._not_found(ordinal)
        if ctx.exclude and state.key in ctx.exclude:
            return None
        return state

    def _not_found(self, ordinal: int | None) -> OrdinalNotFound:
        if ordinal is None:
            raise TypeError("the ordinal picker needs ctx.ordinal")
        available = self._available
        have = ", ".join(map(str, available)) if available else "none (no Pod name has an ordinal)"
        return OrdinalNotFound(
            f"no Pod with ordinal {ordinal}; ordinals available: {have}",
            ordinal=ordinal,
            available=available,
        )


class Ordinal:
    """Factory: routes ``ctx.ordinal`` to the member whose ``endpoint.ordinal`` matches."""

    name = "ordinal"

    def build(self, snapshot: Snapshot) -> OrdinalPicker:
        """A picker over ``snapshot.by_ordinal``."""
        return OrdinalPicker(snapshot.by_ordinal)
