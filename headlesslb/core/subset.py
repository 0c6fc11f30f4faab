"""Deterministic subsetting: each client uses N of the Pods, and a fleet of clients spreads evenly.

After Finagle's deterministic aperture and the SRE book's deterministic subsetting, with the
placement of Google's Ringsteady: clients and Pods sit on one ring, and a client uses the first N
Pods clockwise from its own place. Places come from the van der Corput sequence (bit-reversed
indices), a low-discrepancy sequence: the first k places split the ring into gaps of at most two
sizes for every k, so neither side needs to know how many peers it has, and index k + 1 lands in
one of the largest gaps, leaving every other place where it was.

- A client's place is ``vdc(ordinal)`` when its identity carries an ordinal (a StatefulSet-like
  Pod name ``worker-3``, or an explicit index), else a hash of its name, else random.
- A Pod's place is ``vdc(ordinal)`` when every member has a distinct ordinal (StatefulSet Pods:
  scaling moves about the ideal number of assignments), else ``rank / count`` over the members
  sorted by (ip, port) (Deployments: even, but a Pod joining shifts every client by up to one).

Measured (``benchmarks/subsetting.py``): ordinal clients × ordinal Pods give max/mean 1.00 at
100 × 100, N = 10; hashed or random clients about 1.5-2 (a Poisson spread no placement fixes).
Pure: no I/O; the environment and the random source are handed in.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigurationError
from . import validate
from .names import ORDINAL_MAX, split_ordinal
from .snapshot import EndpointState

__all__ = ["ClientPlace", "Subset", "Subsetter", "placement", "van_der_corput", "window"]

IDENTITY_VARIABLES = ("POD_NAME", "HOSTNAME")
"""Environment variables naming the client's Pod, in the order they are read."""


def van_der_corput(index: int) -> float:
    """The index-th place of the base-2 van der Corput sequence, in [0, 1): bits reversed."""
    place, weight = 0.0, 0.5
    while index:
        if index & 1:
            place += weight
        index >>= 1
        weight /= 2
    return place


def _hashed(text: str) -> float:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class ClientPlace:
    """Where a client sits on the ring and what that came from."""

    position: float
    """In [0, 1)."""
    mode: Literal["ordinal", "name", "random"]
    """``ordinal``: even across the fleet; ``name`` (a hash) and ``random``: Poisson spread."""
    identity: str
    """What the place was derived from, for the log."""


@dataclass(frozen=True, slots=True)
class Subset:
    """The ``subset=`` option: use ``size`` Pods, chosen from the client's identity.

    ``client`` is the identity: an int is the client's instance index (0, 1, 2, ... across the
    fleet: even spread); a str is its Pod name, whose StatefulSet ordinal (``worker-3``) is used
    when it has one, else a hash of it; None reads ``POD_NAME``, then ``HOSTNAME``, else places
    the client at random.
    """

    size: int
    """N: how many Pods this client uses (and holds connections to)."""
    client: str | int | None = None

    def __post_init__(self) -> None:
        validate.count("Subset.size", self.size, min=1)
        client = self.client
        if isinstance(client, bool) or not isinstance(client, str | int | None):
            raise ConfigurationError(
                f"Subset.client must be a Pod name (str), an instance index (int) or None,"
                f" not {client!r}"
            )
        if isinstance(client, int):
            validate.count("Subset.client", client, min=0, max=ORDINAL_MAX)
        elif isinstance(client, str) and not client.strip():
            raise ConfigurationError("Subset.client must not be an empty name")

    def place(self, environ: Mapping[str, str], rng: random.Random) -> ClientPlace:
        """This client's place on the ring (``environ`` is read only when ``client`` is None)."""
        client = self.client
        if isinstance(client, int):
            return ClientPlace(van_der_corput(client), "ordinal", f"index {client}")
        if client is None:
            for variable in IDENTITY_VARIABLES:
                value = environ.get(variable, "").strip()
                if value:
                    client = value
                    break
            else:
                return ClientPlace(rng.random(), "random", "no POD_NAME or HOSTNAME")
        parsed = split_ordinal(client)
        if parsed is not None:
            return ClientPlace(van_der_corput(parsed[1]), "ordinal", client)
        return ClientPlace(_hashed(client), "name", client)


def as_subset(value: object) -> Subset | None:
    """The ``subset=`` argument checked: None, a size, or a :class:`Subset`."""
    if value is None or isinstance(value, Subset):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"subset must be a size (int), a Subset or None, not {value!r}")
    return Subset(value)


def placement(members: Sequence[EndpointState]) -> tuple[EndpointState, ...]:
    """The members in ring order with their places (see the module docstring): by
    ``vdc(ordinal)`` when every member has a distinct ordinal, else in (ip, port) order."""
    ordinals = [s.endpoint.ordinal for s in members]
    if ordinals and None not in ordinals and len(set(ordinals)) == len(ordinals):
        return tuple(sorted(members, key=lambda s: van_der_corput(s.endpoint.ordinal or 0)))
    return tuple(sorted(members, key=lambda s: s.key))


def _places(ring: Sequence[EndpointState]) -> list[float]:
    ordinals = [s.endpoint.ordinal for s in ring]
    if ordinals and None not in ordinals and len(set(ordinals)) == len(ordinals):
        return [van_der_corput(o or 0) for o in ordinals]
    count = len(ring)
    return [k / count for k in range(count)]


def window(ring: Sequence[EndpointState], position: float) -> tuple[EndpointState, ...]:
    """The whole ring rotated to start at the first member at or after ``position``."""
    if not ring:
        return ()
    start = bisect.bisect_left(_places(ring), position) % len(ring)
    return tuple(ring[start:]) + tuple(ring[:start])


@dataclass(frozen=True, slots=True, eq=False)
class _Placed:
    """One membership's ring order and core, made together and published together."""

    members: tuple[EndpointState, ...] | None
    order: tuple[EndpointState, ...]
    core: tuple[EndpointState, ...]


_NONE_PLACED = _Placed(None, (), ())


class Subsetter:
    """Chooses a client's members: the first ``size`` usable ones clockwise from its place.

    Ejection and health work inside the subset first: an ejected, held-off or unhealthy member
    is skipped and the next Pod along the ring takes its place (each client's next one differs,
    so one Pod's load spreads over many). The fallback Service is reached only when the pool
    has no usable member at all, as without subsetting.
    """

    __slots__ = ("_placed", "place", "size")

    def __init__(self, size: int, place: ClientPlace) -> None:
        self.size = size
        self.place = place
        self._placed = _NONE_PLACED

    def _placed_for(self, members: tuple[EndpointState, ...]) -> _Placed:
        placed = self._placed
        if members != placed.members:  # same objects compare by identity first: cheap
            order = window(placement(members), self.place.position)
            placed = _Placed(members, order, tuple(sorted(order[: self.size], key=_by_key)))
            # One assignment of one immutable record: a reader in another thread gets one
            # membership's order and core, never one's order with another's core.
            self._placed = placed
        return placed

    def order(self, members: tuple[EndpointState, ...]) -> tuple[EndpointState, ...]:
        """All members in the order this client takes them; cached per membership."""
        return self._placed_for(members).order

    def core(self, members: tuple[EndpointState, ...]) -> tuple[EndpointState, ...]:
        """The first ``size`` members along the ring, healthy or not, sorted by (ip, port): the
        same tuple for as long as membership stays, so hash tables over it stay too."""
        return self._placed_for(members).core

    def choose(
        self, members: tuple[EndpointState, ...], usable: frozenset[EndpointState]
    ) -> tuple[tuple[EndpointState, ...], tuple[EndpointState, ...]]:
        """(chosen, in use): the first ``size`` usable members in ring order, and the members
        to watch with health checks: the ring up to the last one needed to find ``size``
        usable ones (at least ``size``, at most ``2 × size``), plus the chosen. Both sorted
        by (ip, port)."""
        order = self.order(members)
        size = self.size
        chosen: list[EndpointState] = []
        end = len(order)
        for i, state in enumerate(order):
            if state in usable:
                chosen.append(state)
                if len(chosen) == size:
                    end = i + 1
                    break
        watched = set(order[: max(size, min(end, 2 * size))])
        watched.update(chosen)
        key = _by_key
        return tuple(sorted(chosen, key=key)), tuple(sorted(watched, key=key))


def _by_key(state: EndpointState) -> tuple[str, int]:
    return state.key
