"""What a shell feeds back to its call: the results of the steps, one record per kind.

A :class:`~headlesslb.core.call.Call` hands its shell a :class:`~headlesslb.core.steps.Step`;
the shell performs it and reports what happened with ``step = call.feed(result)``, the call's
one way in (like h11's events, these are plain frozen records, and the call is a state machine
that refuses a result it is not waiting for with a ``RuntimeError``). They mirror the steps:

=================  ===========================================================================
step               results the call then accepts
=================  ===========================================================================
``Send``           :class:`Responded` or :class:`Failed`; for a hedged one (``hedge_after``),
                   first :class:`HedgeDue` when the delay passed with no answer, and, when that
                   gave a second ``Send``, :class:`Settled` before the winner's result
``Backoff``        :class:`Waited`
``LookupPod``      :class:`Found`
``SendToFallback`` :class:`FallbackResponded` or :class:`FallbackFailed`
any of them        :class:`Abandoned`: the caller gave up (cancelled) meanwhile
``Deliver``,       nothing: the call is over
``Fail``
=================  ===========================================================================

The results without fields have one instance each (:data:`WAITED`, :data:`HEDGE_DUE`,
:data:`ABANDONED`). :class:`Responded` and :class:`Failed`, made for every attempt, set their
slots directly rather than through the frozen dataclass's ``object.__setattr__``, which every
attempt would pay for.
"""

from __future__ import annotations

from dataclasses import dataclass

from .endpoint import Endpoint
from .retry import Verdict
from .steps import Send

__all__ = [
    "ABANDONED",
    "HEDGE_DUE",
    "WAITED",
    "Abandoned",
    "Failed",
    "FallbackFailed",
    "FallbackResponded",
    "Found",
    "HedgeDue",
    "Responded",
    "Result",
    "Settled",
    "Waited",
]


class Result:
    """Base of what a shell reports to its call."""

    __slots__ = ()


@dataclass(frozen=True, slots=True, init=False)
class Responded(Result):
    """The Pod of the :class:`Send` answered with ``status`` (its body read, if the request
    asked), which its sender judged ``verdict`` (:meth:`~.retry.RetryPolicy.judge`, once, at header
    time: the body reports the verdict's outcome to the pool, the call decides on the rest)."""

    status: int
    verdict: Verdict

    def __init__(self, status: int, verdict: Verdict) -> None:
        _set_status(self, status)
        _set_verdict(self, verdict)


@dataclass(frozen=True, slots=True, init=False)
class Failed(Result):
    """The :class:`Send` failed with ``error``, before a response or while its body was read,
    judged ``verdict`` by :func:`headlesslb.io.outcomes.classify`."""

    error: BaseException
    verdict: Verdict

    def __init__(self, error: BaseException, verdict: Verdict) -> None:
        _set_error(self, error)
        _set_failed_verdict(self, verdict)


@dataclass(frozen=True, slots=True)
class HedgeDue(Result):
    """The hedged :class:`Send`'s ``hedge_after`` passed with no answer. The call answers with
    a second ``Send`` to another Pod, to race the first, or None (no hedge: the cap, the
    budget, no other Pod, the client closed or no time left): wait for the first alone."""


@dataclass(frozen=True, slots=True)
class Settled(Result):
    """Of the two racing :class:`Send` steps, ``winner`` finished first (its result is fed
    next); the shell stops the other, which the call records as the loser."""

    winner: Send


@dataclass(frozen=True, slots=True)
class Waited(Result):
    """The :class:`~.steps.Backoff` is over."""


@dataclass(frozen=True, slots=True)
class Found(Result):
    """The :class:`~.steps.LookupPod`'s answer: the Pod, or None when DNS has no such name."""

    endpoint: Endpoint | None


@dataclass(frozen=True, slots=True)
class FallbackResponded(Result):
    """The fallback Service at ``address`` (``ip:port``) answered with ``status``."""

    address: str
    status: int


@dataclass(frozen=True, slots=True)
class FallbackFailed(Result):
    """Sending to the fallback Service failed with ``error`` (``address`` None: resolving its
    name failed, so nothing was sent)."""

    address: str | None
    error: BaseException


@dataclass(frozen=True, slots=True)
class Abandoned(Result):
    """The caller gave up (cancelled, or an unexpected error) while a step was in progress:
    the attempts in flight end as cancelled, and the call is over."""


WAITED = Waited()
HEDGE_DUE = HedgeDue()
ABANDONED = Abandoned()

# The slots' own setters: a frozen dataclass's generated __init__ goes through
# object.__setattr__ per field, which the two results made for every attempt can spare.
_set_status = Responded.__dict__["status"].__set__
_set_verdict = Responded.__dict__["verdict"].__set__
_set_error = Failed.__dict__["error"].__set__
_set_failed_verdict = Failed.__dict__["verdict"].__set__
