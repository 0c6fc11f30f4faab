"""Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018; Envoy's
``hash_balance_factor``), applied at pick time over any sharding picker's fallover order.

A key's owner takes it while that owner's load, counting this request, stays within
``ceil(c × (total + 1) / n)``: ``total`` is the requests in flight on the ``n`` eligible
endpoints, ``c`` the balance factor. Otherwise the key goes to the next endpoint of its
preference list (the same deterministic fallover an ejected owner's keys take), and so on; it
returns to its owner as soon as the owner's load drops. Some endpoint always fits: the least
loaded one is never above the mean. Nothing is rebuilt for it, so the hash tables stay as they
are and a pick with an idle owner costs one comparison more.

The trade-off: affinity becomes *best effort*. A hot key no longer buries its owner, but while
the owner is over the bound that key's requests land on other Pods (cold caches there, and a
Pod that keeps per-key state sees only part of the key's traffic). ``c`` close to 1 balances
hardest and moves the most; larger ``c`` moves fewer requests (with c = 1.25 no Pod carries
more than 1.25× the mean of what is in flight).
"""

from __future__ import annotations

import math

from ..snapshot import EndpointState, Snapshot
from .base import PickContext, Picker

__all__ = ["BoundedLoadPicker"]


class BoundedLoadPicker:
    """Wraps a sharding picker: past the load bound, the key moves down its preference list."""

    __slots__ = ("_eligible", "_factor", "_inner")

    def __init__(self, inner: Picker, snapshot: Snapshot, factor: float) -> None:
        self._inner = inner
        self._eligible = snapshot.eligible
        self._factor = factor

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The key's owner while within the bound, else the first endpoint after it that is."""
        state = self._inner.pick(ctx)
        if state is None or not state.in_flight:
            return state  # an idle owner is always within the bound
        eligible = self._eligible
        if not eligible:
            return state
        total = sum(s.in_flight for s in eligible)
        bound = math.ceil(self._factor * (total + 1) / len(eligible))
        if state.in_flight + 1 <= bound:
            return state
        owner = state
        exclude = set(ctx.exclude)
        while True:
            exclude.add(state.key)
            state = self._inner.pick(PickContext(ctx.key, None, exclude))
            if state is None:
                return owner  # everyone else is excluded: the owner it is
            if state.in_flight + 1 <= bound:
                return state
