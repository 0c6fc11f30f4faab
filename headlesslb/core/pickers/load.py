"""Load-aware power of two choices: the Pods' reported load plus this client's in-flight count.

:class:`LeastLoaded` samples two eligible endpoints, as least-request does, and takes the one
with the lower ``in_flight + metric_weight × metric``, where ``metric`` is a value of the Pod's
latest ORCA load report (:mod:`..orca`) of the user's choice: vLLM's ``num_requests_waiting``
(the default: its queue, filled by every client), ``kv_cache_usage_perc``, or a field such as
``cpu_utilization``. The in-flight count is what this client knows for sure and at once; the
report is what it cannot see, other clients' load, as of the Pod's last answer.

A report older than ``max_age`` counts as none (the Pod stopped reporting, or this client
stopped sending there because it looked busy: its cost then returns to the fleet's median, so
it is tried again and reports afresh). An endpoint with no usable report is costed with the
median of the others' metric, as peak-EWMA costs an endpoint with no latency yet: at 0 it
would be flooded, at infinity never tried. With no report anywhere it is least-request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from ...errors import ConfigurationError
from ..clock import Clock, monotonic
from ..snapshot import EndpointState, Snapshot
from ..validate import number
from .base import PickContext
from .p2c import _without
from .slow_start import Ramp, SlowStart

__all__ = ["LeastLoaded", "LeastLoadedPicker"]

_UNKNOWN_REFRESH = 1.0
"""Seconds between recomputations of the metric assumed for endpoints with no report."""


class LeastLoadedPicker:
    """Power of two choices on in-flight + weighted reported metric over one snapshot."""

    __slots__ = (
        "_clock",
        "_eligible",
        "_max_age",
        "_metric",
        "_n",
        "_ramp",
        "_random",
        "_unknown",
        "_unknown_at",
        "_weight",
    )

    def __init__(
        self,
        eligible: tuple[EndpointState, ...],
        rand: Callable[[], float],
        factory: LeastLoaded,
        ramp: Ramp | None,
    ) -> None:
        self._eligible = eligible
        self._n = len(eligible)
        self._random = rand
        self._clock = factory._clock
        self._metric = factory.metric
        self._weight = factory.metric_weight
        self._max_age = factory.max_age
        self._ramp = ramp
        self._unknown = 0.0
        self._unknown_at = -math.inf

    def reported(self, state: EndpointState, now: float) -> float | None:
        """``state``'s metric from a report younger than ``max_age``; None without one."""
        report = state.load
        if report is None or now - report.received > self._max_age:
            return None
        return report.metric(self._metric)

    def cost(self, state: EndpointState, now: float) -> float:
        """``state``'s load at ``now``: in-flight + metric_weight × its reported metric (the
        median of the known ones when it has none)."""
        value = self.reported(state, now)
        if value is None:
            if now - self._unknown_at >= _UNKNOWN_REFRESH:
                self._refresh_unknown(now)
            value = self._unknown
        return state.in_flight + self._weight * value

    def _refresh_unknown(self, now: float) -> None:
        # O(N log N), at most once per _UNKNOWN_REFRESH seconds.
        known = sorted(
            value for value in (self.reported(s, now) for s in self._eligible) if value is not None
        )
        if known:
            mid = len(known) // 2
            self._unknown = known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2
        else:
            self._unknown = 0.0
        self._unknown_at = now

    def pick(self, ctx: PickContext) -> EndpointState | None:
        """The less loaded of two random eligible endpoints not in ``ctx.exclude``."""
        ramp = self._ramp
        if ramp is not None:
            pair = ramp.pair(self._eligible, ctx.exclude)
            if not isinstance(pair, tuple):
                return pair
            a, b = pair
        else:
            eligible = self._eligible
            n = self._n
            if ctx.exclude:
                eligible = _without(eligible, ctx.exclude)
                n = len(eligible)
            if n < 2:
                return eligible[0] if n else None
            rand = self._random
            i = int(rand() * n)
            j = int(rand() * (n - 1))
            if j >= i:
                j += 1
            a = eligible[i]
            b = eligible[j]
        now = self._clock()
        return b if self.cost(b, now) < self.cost(a, now) else a


class LeastLoaded:
    """Factory: power of two choices on in-flight requests plus a reported load metric
    (``picker=LeastLoaded(metric="kv_cache_usage_perc", metric_weight=10)`` or
    ``picker="least_loaded"``: vLLM's ``num_requests_waiting``, weight 1).

    ``metric`` names a value of the Pods' ORCA reports: a bare name is looked up in
    ``named_metrics``; ``cpu_utilization``, ``mem_utilization``, ``application_utilization``,
    ``rps_fractional`` and ``eps`` are the fields; ``utilization.<x>`` and ``request_cost.<x>``
    the other maps. ``metric_weight`` converts it into in-flight requests (1 for a queue length;
    for a fraction such as KV-cache use, how many requests a full cache is worth).
    """

    name = "least_loaded"

    def __init__(
        self,
        rng: random.Random | None = None,
        *,
        metric: str = "num_requests_waiting",
        metric_weight: float = 1.0,
        max_age: float = 5.0,
        slow_start: SlowStart | None = None,
        clock: Clock = monotonic,
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise ConfigurationError(
                f"LeastLoaded.metric must be a metric's name (a non-empty str), not {metric!r}"
            )
        number("LeastLoaded.metric_weight", metric_weight, min=0)
        number("LeastLoaded.max_age", max_age, min=0, exclusive_min=True)
        self.metric = metric
        """The reported value that measures a Pod's load."""
        self.metric_weight = metric_weight
        """How many in-flight requests one unit of the metric is worth."""
        self.max_age = max_age
        """Seconds a report stays usable."""
        self.slow_start = slow_start
        self._rng = rng or random.Random()
        self._clock = clock

    @property
    def report_max_age(self) -> float:
        """Seconds a report stays usable: ``max_age``."""
        return self.max_age

    def build(self, snapshot: Snapshot) -> LeastLoadedPicker:
        """A picker over ``snapshot.eligible``."""
        rand = self._rng.random
        slow = self.slow_start
        ramp = None if slow is None else slow.ramp(snapshot.eligible, self._clock, rand)
        return LeastLoadedPicker(snapshot.eligible, rand, self, ramp)
