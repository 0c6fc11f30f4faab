"""Balancing policies: which endpoint a request goes to.

- :class:`RoundRobin` — in turn, from a random start (the default);
- :class:`LeastRequest` — power of two choices on in-flight requests;
- :class:`PeakEwma` — power of two choices on latency × load (best with uneven Pods);
- :class:`WeightedRoundRobin` — turns weighted by the Pods' own load reports (ORCA, gRFC A58);
- :class:`LeastLoaded` — power of two choices on in-flight requests plus a reported metric;
- :class:`ConsistentHash` — sharding by a request key (Maglev over endpoints, jump over ordinals);
- :class:`Ordinal` — pinning to a StatefulSet ordinal.

Each is a :class:`~headlesslb.core.pickers.base.PickerFactory`: it builds a cheap, read-only
:class:`~headlesslb.core.pickers.base.Picker` per pool snapshot. :class:`ConsistentHash` is also a
:class:`~headlesslb.core.pickers.base.TablePickerFactory`: the balancer has it build each
membership's table off the request path, and keeps the table. :func:`make_picker` makes the
named policies; peak-EWMA reads latencies through the pool's estimator, which every snapshot
carries.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from ...errors import ConfigurationError
from ..clock import Clock, monotonic
from .base import NO_CONTEXT, HashKey, PickContext, Picker, PickerFactory, TablePickerFactory
from .hashing import ConsistentHash
from .hashtables import key_hash
from .load import LeastLoaded
from .ordinal import Ordinal
from .p2c import LeastRequest, PeakEwma
from .round_robin import RoundRobin
from .slow_start import SlowStart
from .weighted import WeightedRoundRobin

__all__ = [
    "NO_CONTEXT",
    "PICKERS",
    "ConsistentHash",
    "HashKey",
    "LeastLoaded",
    "LeastRequest",
    "Ordinal",
    "PeakEwma",
    "PickContext",
    "Picker",
    "PickerFactory",
    "PickerName",
    "RoundRobin",
    "SlowStart",
    "TablePickerFactory",
    "WeightedRoundRobin",
    "key_hash",
    "make_picker",
]

PickerName = Literal[
    "round_robin", "least_request", "peak_ewma", "weighted_round_robin", "least_loaded"
]
"""The built-in balancing policies, by name (``picker=`` also takes a PickerFactory)."""

PICKERS: dict[str, Callable[[random.Random | None, Clock, SlowStart | None], PickerFactory]] = {
    "round_robin": lambda rng, clock, slow: RoundRobin(rng, slow_start=slow, clock=clock),
    "least_request": lambda rng, clock, slow: LeastRequest(rng, slow_start=slow, clock=clock),
    "peak_ewma": lambda rng, clock, slow: PeakEwma(rng, clock, slow_start=slow),
    "weighted_round_robin": lambda rng, clock, slow: WeightedRoundRobin(
        rng, slow_start=slow, clock=clock
    ),
    "least_loaded": lambda rng, clock, slow: LeastLoaded(rng, slow_start=slow, clock=clock),
}
"""The balancing policies a client accepts by name (each takes slow start)."""


def make_picker(
    spec: PickerName | PickerFactory,
    *,
    rng: random.Random | None = None,
    clock: Clock = monotonic,
    slow_start: SlowStart | None = None,
) -> PickerFactory:
    """A fresh factory for a policy name, or ``spec`` itself if it already is a factory.

    ``rng`` and ``clock`` are handed to the named policies (seeded tests, injected time; the
    clock must be the pool's). Peak-EWMA reads latencies through the pool's estimator, which
    every snapshot carries, so it decays them with the pool's ``OutlierPolicy.latency_decay``.
    ``slow_start`` ramps new endpoints up in the named policies; a factory of the user's own
    cannot take it (a ConfigurationError says so rather than ignore it).
    Raises :class:`~headlesslb.errors.ConfigurationError` naming the valid names otherwise.
    """
    if isinstance(spec, str):
        make = PICKERS.get(spec)
        if make is None:
            valid = ", ".join(repr(name) for name in PICKERS)
            raise ConfigurationError(f"unknown picker {spec!r}; valid names: {valid}")
        return make(rng, clock, slow_start)
    if isinstance(spec, PickerFactory):
        if slow_start is not None:
            raise ConfigurationError(
                f"slow_start applies to the named pickers ({', '.join(map(repr, PICKERS))}),"
                " not to a picker factory of your own ({type(spec).__name__}):"
                " pass the factory its own slow_start, if it takes one"
            )
        return spec
    raise ConfigurationError(
        f"picker must be one of {', '.join(map(repr, PICKERS))} or a PickerFactory "
        f"(an object with a name and build(snapshot)), not {type(spec).__name__}"
    )
