"""Routes each pick to the right picker and keeps pickers in step with the pool's snapshots.

Plain requests go to the balancing picker (round-robin, least-request, peak-EWMA, or the user's);
requests with a key go to the sharding picker; requests pinned to an ordinal go to the ordinal
picker. The pickers in use are one frozen :class:`Installed` record, built from one snapshot and
replaced whole, never changed in place: a request thread reading it never sees pickers of two
snapshots. Pickers are rebuilt only when the snapshot changes, and :meth:`Balancer.prepare` lets
the I/O shell do that rebuild off the request path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from ..errors import ConfigurationError
from .pickers.base import (
    NO_CONTEXT,
    Pause,
    PickContext,
    Picker,
    PickerFactory,
    TablePickerFactory,
    no_pause,
)
from .pool import Pool
from .snapshot import EndpointState, Snapshot

__all__ = ["ROLES", "Balancer", "Installed", "Role", "Roles"]

T = TypeVar("T")

Role = Literal["balancing", "sharding", "ordinal"]
"""What a picker is for: plain requests, requests with a key, requests pinned to an ordinal."""
ROLES: tuple[Role, ...] = ("balancing", "sharding", "ordinal")


@dataclass(frozen=True, slots=True)
class Roles(Generic[T]):
    """One value per :data:`Role`."""

    balancing: T
    sharding: T
    ordinal: T

    def of(self, role: Role) -> T:
        """The value for ``role``."""
        value: T = getattr(self, role)
        return value


@dataclass(frozen=True, slots=True)
class Installed:
    """The pickers in use, all built from ``snapshot``; replaced whole, never changed."""

    snapshot: Snapshot | None
    pickers: Roles[Picker | None]
    """None for a role not used since the last snapshot change (sharding and ordinal pickers
    are built on first use: most clients never need them)."""


_NOTHING_INSTALLED = Installed(None, Roles(None, None, None))


class Balancer:
    """One pool, one balancing policy, optional sharding and ordinal routing."""

    def __init__(
        self,
        pool: Pool,
        picker: PickerFactory,
        *,
        sharding: PickerFactory | None = None,
        ordinal: PickerFactory | None = None,
    ) -> None:
        self.pool = pool
        self.factories: Roles[PickerFactory | None] = Roles(picker, sharding, ordinal)
        """The picker factory of each role (None: not configured)."""
        self._installed = _NOTHING_INSTALLED

    @property
    def installed(self) -> Installed:
        """The pickers in use (for diagnostics and tests: :meth:`pick` is how they are used)."""
        return self._installed

    def prepare(self, snapshot: Snapshot, pause: Pause | None = None) -> None:
        """Do the slow part of switching to ``snapshot`` now: build hash tables and the like.

        Runs ``prepare(snapshot, pause)`` of every configured :class:`TablePickerFactory`, from
        the first membership on, so that not even the first keyed request builds a table on the
        request path (a Maglev table over 1,000 Pods is 40-120 ms of pure Python). Safe in a
        worker thread: it installs nothing, the next pick does, with the cheap ``build``. The
        I/O shell's ``pause`` lets the event loop and request threads run during the build.
        """
        for role in ROLES:
            factory = self.factories.of(role)
            if isinstance(factory, TablePickerFactory):
                factory.prepare(snapshot, pause or no_pause)

    def pick(self, ctx: PickContext = NO_CONTEXT) -> EndpointState | None:
        """An endpoint for one attempt, or ``None`` if no eligible endpoint is left."""
        snapshot = self.pool.snapshot
        installed = self._installed
        if snapshot is not installed.snapshot:
            installed = self._install(snapshot, installed)
        if ctx.ordinal is not None:
            return self._routed(snapshot, installed, "ordinal", ctx)
        if ctx.key is not None:
            return self._routed(snapshot, installed, "sharding", ctx)
        picker = installed.pickers.balancing
        assert picker is not None
        return picker.pick(ctx)

    def _install(
        self, snapshot: Snapshot, previous: Installed, role: Role | None = None
    ) -> Installed:
        """Install pickers for ``snapshot``: the balancing one, ``role``'s, and those in use in
        ``previous`` (kept as they are if ``previous`` is of ``snapshot`` too)."""
        pickers: list[Picker | None] = []
        for r in ROLES:
            factory = self.factories.of(r)
            picker = previous.pickers.of(r)
            if picker is None or previous.snapshot is not snapshot:
                wanted = r == "balancing" or r == role or picker is not None
                picker = factory.build(snapshot) if factory is not None and wanted else None
            pickers.append(picker)
        installed = Installed(snapshot, Roles(*pickers))
        # A request thread may install concurrently: the record left last is whole either way,
        # and the next pick replaces it if its snapshot is not the pool's.
        self._installed = installed
        return installed

    def _routed(
        self, snapshot: Snapshot, installed: Installed, role: Role, ctx: PickContext
    ) -> EndpointState | None:
        picker = installed.pickers.of(role)
        if picker is None:
            if self.factories.of(role) is None:
                raise ConfigurationError(f"this client has no {role} picker configured")
            picker = self._install(snapshot, installed, role).pickers.of(role)
            assert picker is not None
        return picker.pick(ctx)
