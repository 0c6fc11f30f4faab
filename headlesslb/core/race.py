"""The hedge race of one call: whether a second attempt goes out, and what its loser counts as.

A hedged call's first :class:`~headlesslb.core.steps.Send` carries ``hedge_after``; when that
passes with no answer the shell feeds the call ``HEDGE_DUE``, and :meth:`Race.hedge` gives a
second ``Send`` to another Pod; the shell then says which attempt finished first (``Settled``,
:meth:`Race.settle`), and the loser is recorded here, exactly once (pool ``Attempt``, report,
``AttemptFinished``). Whether a call is hedged at all, after how long and to which Pod is
:class:`~headlesslb.core.hedge.Hedger`'s decision; this module keeps the race's state and the
loser's verdict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .attempts import AttemptRecord
from .endpoint import Endpoint
from .events import AttemptStarted
from .hedge import HedgePlan
from .pool import Attempt, Outcome
from .steps import Send

if TYPE_CHECKING:
    from .call import Call

__all__ = ["Race"]


class Race:
    """How one call may be hedged, how many hedges it sent, and the other attempt racing."""

    __slots__ = ("hedges", "other", "plan")

    def __init__(self, plan: HedgePlan) -> None:
        self.plan = plan
        self.hedges = 0
        self.other: tuple[Attempt, Endpoint, AttemptStarted | None] | None = None
        """The other attempt of a race in flight (the first one, once a hedge is sent)."""

    def hedge(self, call: Call) -> Send | None:
        """A second :class:`Send` to another Pod, or None (not sent: cap, no other Pod, budget,
        closed, or no time left before the deadline)."""
        router = call.router
        hedger = router.hedger
        if router.closed or hedger is None or call.current is None:
            return None
        left = call.time_left()
        if left is not None and left <= 0:
            # Decided before anything is counted (budget token, tried Pod, pool attempt): at the
            # deadline a hedge could only fail, and the first attempt's own timeout ends there.
            return None
        state = hedger.target(router.balancer, call.tried, self.hedges, self.plan, key=call.ctx.key)
        if state is None:
            return None
        assert call.endpoint is not None
        self.hedges += 1
        self.other = (call.current, call.endpoint, call.log.announced)
        return call.begin(state, None, left, first=False)

    def settle(self, call: Call, winner: Attempt) -> None:
        """Of the two attempts, ``winner`` finished first (its result, ``Responded`` or
        ``Failed``, is fed next); the other was cancelled by the shell.

        What the loser says about its Pod depends on which one it was. A hedge that lost says
        nothing (``Outcome.CANCELLED``): it was sent late and cut short. A first attempt that
        lost to its hedge had no answer for the hedge delay plus the winner's whole latency,
        so it counts as ``Outcome.TIMEOUT``: a failure toward ejection, and the time it was
        out as a lower bound of its Pod's latency. Otherwise a Pod that never answers would
        lose every race unseen, and keep its share of first attempts, each paying the delay
        and a budget token. (Envoy, hedging on per-try timeout, counts the first attempt as a
        timeout as soon as the hedge goes out, whoever wins; gRPC's outlier detection counts
        every cancelled attempt as a failure.)
        """
        other, self.other = self.other, None
        if other is None:
            return
        attempt, endpoint, announced = other
        log = call.log
        if attempt is winner:
            # The first attempt won: it becomes the current one, the hedge is the loser.
            assert call.current is not None and call.endpoint is not None
            attempt, call.current = call.current, attempt
            endpoint, call.endpoint = call.endpoint, endpoint
            announced, log.announced = log.announced, announced
            outcome = Outcome.CANCELLED
        else:
            # A close cuts both attempts short: that says nothing about the first one's Pod.
            outcome = Outcome.CANCELLED if call.router.closed else Outcome.TIMEOUT
        self.cancel(call, attempt, endpoint, announced, outcome)
        log.records.append(
            AttemptRecord(endpoint.authority, endpoint.hostname, error="cancelled", outcome=outcome)
        )

    def abandon(self, call: Call) -> None:
        """The caller gave up during the race: the other attempt ends too, as cancelled."""
        other, self.other = self.other, None
        if other is not None and not other[0].finished:
            self.cancel(call, *other)

    @staticmethod
    def cancel(
        call: Call,
        attempt: Attempt,
        endpoint: Endpoint,
        announced: AttemptStarted | None,
        outcome: Outcome | None = None,
    ) -> None:
        """A racing attempt the call no longer waits for (the loser, or both when the caller
        gives up): its pool Attempt ends once, as ``outcome`` (None: cancelled, and the event
        names no outcome), and its event says it was cancelled."""
        if not attempt.finished:
            attempt.done(outcome or Outcome.CANCELLED)
        if announced is not None:
            counted = None if outcome is None else outcome.value
            call.log.emit_finished(announced, endpoint.authority, None, "cancelled", counted)
