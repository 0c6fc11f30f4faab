"""Peak-EWMA: the latency average the pool updates and peak-EWMA pickers read (Finagle/Linkerd).

One :class:`PeakEwmaEstimator` per pool, made from ``OutlierPolicy.latency_decay``, is the one
place the average is computed: :meth:`~PeakEwmaEstimator.observe` after each response (the pool)
and :meth:`~PeakEwmaEstimator.decayed` at pick time (the pickers, which find it in every snapshot
as :attr:`~headlesslb.core.snapshot.Snapshot.latency`), with the one time constant it owns. It
keeps nothing else: an endpoint's average and when it was last updated are live counters of its
:class:`~headlesslb.core.snapshot.EndpointState`, as in-flight counts are, written only here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .validate import number

if TYPE_CHECKING:
    from .snapshot import EndpointState

__all__ = ["PeakEwmaEstimator"]

_exp = math.exp


@dataclass(frozen=True, slots=True)
class PeakEwmaEstimator:
    """A peak-sensitive EWMA of each endpoint's latency, decaying toward 0 with time."""

    decay: float = 10.0
    """Time constant, seconds: of the weight an older average keeps against a new, better
    latency, and of the decay toward 0 that pickers see while no response comes."""
    _rate: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        number("PeakEwmaEstimator.decay", self.decay, min=0, exclusive_min=True)
        object.__setattr__(self, "_rate", -1.0 / self.decay)

    def observe(self, state: EndpointState, latency: float, now: float) -> None:
        """Fold one response's latency (seconds) in: jump straight to a worse latency, move
        toward a better one with a weight that depends on the time since the last response."""
        ewma = state.ewma
        if ewma is None or latency > ewma:
            state.ewma = latency
        else:
            weight = _exp((now - state.ewma_stamp) * self._rate)
            state.ewma = ewma * weight + latency * (1.0 - weight)
        state.ewma_stamp = now

    def restamp(self, state: EndpointState, now: float) -> None:
        """A response that says nothing of speed (a fast rejection): keep the average where the
        last real answer left it, and restart its decay from ``now``."""
        if state.ewma is not None:
            state.ewma_stamp = now

    def decayed(self, state: EndpointState, now: float) -> float | None:
        """The average at ``now``, decayed toward 0 with the time since the last response (None
        before the first). Read-only: Finagle updates the average on read, but the pool owns it
        here; the decay means a Pod that was slow and got no traffic since becomes attractive
        again instead of being starved by one bad sample for ever."""
        ewma = state.ewma
        if ewma is None:
            return None
        return ewma * _exp((now - state.ewma_stamp) * self._rate)
