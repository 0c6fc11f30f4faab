"""Pinning one call to a StatefulSet ordinal: from the pool, else by the Pod's own DNS name.

A pinned request (``ordinal=``, or ``writes_to`` for a write) goes to that Pod and never to
another, nor to the fallback. The pool's ordinal picker knows the Pods SRV named; when SRV gave
no hostnames (a numeric port, or an answer too big to carry them) the call asks its shell to
look the Pod up as a StatefulSet client would, ``<statefulset>-<n>.<service>``
(:class:`~headlesslb.core.steps.LookupPod`), and asks again, fresh, when the address it found
refuses a connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NoEndpointsAvailable, OrdinalNotFound
from .endpoint import Endpoint
from .names import split_ordinal
from .pickers.base import PickContext
from .pool import Outcome
from .snapshot import EndpointState, Snapshot
from .steps import Fail, LookupPod, Step

if TYPE_CHECKING:
    from .call import Call, Router

__all__ = ["Pinning"]


class Pinning:
    """One call's pin: the ordinal, the Pod a lookup found, and the lookup it asked for."""

    __slots__ = ("lookup", "not_found", "ordinal", "pinned")

    def __init__(self, ordinal: int) -> None:
        self.ordinal = ordinal
        self.pinned: Endpoint | None = None
        """The Pod a by-name lookup found for this call's ordinal."""
        self.not_found: OrdinalNotFound | None = None
        """Why the pool has no Pod for the ordinal, raised if DNS has none either."""
        self.lookup: LookupPod | None = None
        """The by-name lookup asked for: a fresh one asks for the same name and port."""

    def next(self, call: Call) -> Step:
        """The next attempt's step: to the Pod with this ordinal, a lookup, or a failure."""
        if self.pinned is not None:
            records = call.log.records
            if records and records[-1].outcome is Outcome.REFUSED:
                return self._lookup(call.router, fresh=True)  # the address it had is gone
            return self.found(call, self.pinned)
        try:
            state = call.router.balancer.pick(PickContext(ordinal=self.ordinal))
        except OrdinalNotFound as not_found:
            return self._lookup_or_fail(call, not_found)
        assert state is not None  # only an excluded Pod gives None, and nothing is excluded
        return _send_pinned(call, state)

    def found(self, call: Call, endpoint: Endpoint | None) -> Step:
        """The result of a :class:`LookupPod`: the Pod, or None when DNS has no such name."""
        if endpoint is None:
            assert self.not_found is not None
            return Fail(self.not_found)
        self.pinned = endpoint
        # The Pod is normally a member already (an A record of the Service): share its stats.
        state = call.router.pool.member(endpoint.key) or EndpointState(endpoint)
        return _send_pinned(call, state, endpoint)

    def _lookup_or_fail(self, call: Call, not_found: OrdinalNotFound) -> Step:
        router = call.router
        snapshot = router.pool.snapshot
        if snapshot.members and len(snapshot.by_ordinal) == len(snapshot.members):
            return Fail(not_found)  # SRV named every Pod: this ordinal really is absent
        if _lookup_target(router, snapshot) is None:
            error = router.last_discovery_error()
            if not snapshot.members and error is not None:
                return Fail(call.undiscovered(error))  # DNS down: that, not the ordinal, is why
            not_found.add_note(
                "headlesslb: pass statefulset=<name> to look Pods up by their own DNS names"
            )
            return Fail(not_found)
        self.not_found = not_found
        return self._lookup(router, fresh=False)

    def _lookup(self, router: Router, *, fresh: bool) -> Step:
        asked = self.lookup
        if asked is not None:
            # The same name and port again: the pool may have changed meanwhile (the refusal
            # asked for an early refresh, which may have emptied it), the Pod's name has not.
            return LookupPod(asked.ordinal, asked.hostname, asked.name, asked.port, fresh)
        target = _lookup_target(router, router.pool.snapshot)
        assert target is not None
        statefulset, port = target
        hostname = f"{statefulset}-{self.ordinal}"
        name = router.service.pod_fqdn(hostname)
        step = self.lookup = LookupPod(self.ordinal, hostname, name, port, fresh)
        return step


def _send_pinned(call: Call, state: EndpointState, endpoint: Endpoint | None = None) -> Step:
    if not state.admitted:
        return Fail(
            NoEndpointsAvailable(
                f"{state.endpoint} has not passed a health check yet (start_unhealthy=True):"
                " a pinned request never goes to another Pod"
            )
        )
    return call.send_to(state, endpoint)


def _lookup_target(router: Router, snapshot: Snapshot) -> tuple[str, int] | None:
    """(StatefulSet, port) to look a Pod up with: the configured or inferred ones; None if
    either cannot be known."""
    statefulset = router.statefulset or _statefulset_of(snapshot)
    port = router.port if isinstance(router.port, int) else _common_port(snapshot)
    if statefulset is None or port is None:
        return None
    return statefulset, port


def _statefulset_of(snapshot: Snapshot) -> str | None:
    for member in snapshot.members:
        hostname = member.endpoint.hostname
        parsed = split_ordinal(hostname) if hostname else None
        if parsed is not None and member.endpoint.ordinal is not None:
            return parsed[0]
    return None


def _common_port(snapshot: Snapshot) -> int | None:
    ports = {m.endpoint.port for m in snapshot.members}
    return ports.pop() if len(ports) == 1 else None
