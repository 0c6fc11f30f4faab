"""Routes each pick to the right picker and keeps pickers in step with the pool's snapshots.

Plain requests go to the balancing picker (round-robin, least-request, peak-EWMA, or the user's);
requests with a key go to the sharding picker; requests pinned to an ordinal go to the ordinal
picker. The pickers in use are one frozen :class:`Installed` record, built from one snapshot and
one publication of tables and replaced whole, never changed in place: a request thread reading
it never sees pickers of two snapshots.

**Tables.** A :class:`~.pickers.base.TablePickerFactory` (``ConsistentHash``) keeps no table:
the balancer does. :meth:`Balancer.prepare`, which the I/O shells run in a worker thread at start
and after every membership change, asks each such factory for the new membership's table and
publishes it with one assignment of :attr:`Balancer.tables`; the next pick sees the publication
and installs pickers of the new table. Until then pickers serve from the table published before,
so no request builds a table or waits for a build once the shell prepares. A balancer nobody
prepares (the pure core used on its own) builds a new membership's tables when it installs
pickers for it.

**fork().** Builds hold the balancer's lock (one build per membership, however many threads
ask). A child forked while the parent's thread was building holds a copy of the taken lock,
which nothing there will release: the lock comes from :mod:`~headlesslb.core.forksafe`, so the
child has a new one, and the child's discovery builds the table again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Generic, Literal, TypeVar

from ..errors import ConfigurationError
from . import forksafe
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

    def but(self, role: Role, value: T) -> Roles[T]:
        """A copy with ``value`` for ``role``."""
        changed: Roles[T] = replace(self, **{role: value})
        return changed


@dataclass(frozen=True, slots=True)
class Installed:
    """The pickers in use, all built from ``snapshot`` and ``tables``; replaced whole."""

    snapshot: Snapshot | None
    tables: Roles[object]
    """The publication the pickers read (:attr:`Balancer.tables` when they were built)."""
    pickers: Roles[Picker | None]
    """None for a role not used since the last snapshot change (sharding and ordinal pickers
    are built on first use: most clients never need them)."""


_NO_TABLES: Roles[object] = Roles(None, None, None)


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
        self._tables = _NO_TABLES
        self._installed = Installed(None, _NO_TABLES, Roles(None, None, None))
        self._prepared = False
        """Whether :meth:`prepare` was ever called: from then on it builds every table, and
        installing pickers builds none."""
        self._lock = forksafe.lock(self)

    @property
    def tables(self) -> Roles[object]:
        """The tables published last, per role: None before the first, and for a factory that
        keeps none. Replaced whole by each publication."""
        return self._tables

    @property
    def installed(self) -> Installed:
        """The pickers in use (for diagnostics and tests: :meth:`pick` is how they are used)."""
        return self._installed

    def prepare(self, snapshot: Snapshot, pause: Pause | None = None) -> None:
        """Do the slow part of switching to ``snapshot`` now: build and publish its tables.

        Asks every configured :class:`~.pickers.base.TablePickerFactory` for ``snapshot``'s
        table, from the first membership on, so that not even the first keyed request builds a
        table on the request path (a Maglev table over 1,000 Pods is 40-120 ms of pure Python).
        Safe in a worker thread: it publishes tables and installs no picker, the next pick does,
        with the factory's cheap ``build_from``. The I/O shell's ``pause`` lets the event loop
        and request threads run during the build.
        """
        self._prepared = True
        for role in ROLES:
            factory = self.factories.of(role)
            if isinstance(factory, TablePickerFactory):
                self._publish(role, factory, snapshot, pause or no_pause)

    def _publish(
        self, role: Role, factory: TablePickerFactory[Any], snapshot: Snapshot, pause: Pause
    ) -> None:
        with self._lock:  # one build per membership even if several threads ask
            tables = self._tables
            current = tables.of(role)
            table = factory.prepare(snapshot, current, pause)
            if table is not current:
                self._tables = tables.but(role, table)  # the one publishing assignment

    def pick(self, ctx: PickContext = NO_CONTEXT) -> EndpointState | None:
        """An endpoint for one attempt, or ``None`` if no eligible endpoint is left."""
        snapshot = self.pool.snapshot
        installed = self._installed
        # A table published since the pickers were built counts as a new snapshot: pickers
        # serving from a previous membership's table switch to it here.
        if snapshot is not installed.snapshot or installed.tables is not self._tables:
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
        ``previous`` (kept as they are if ``previous`` has the same snapshot and tables)."""
        wanted = [
            r for r in ROLES if r in ("balancing", role) or previous.pickers.of(r) is not None
        ]
        if not self._prepared:
            for r in wanted:  # nobody builds tables off the request path: build them here
                factory = self.factories.of(r)
                if isinstance(factory, TablePickerFactory):
                    self._publish(r, factory, snapshot, no_pause)
        tables = self._tables
        same = previous.snapshot is snapshot and previous.tables is tables
        pickers: list[Picker | None] = []
        for r in ROLES:
            factory = self.factories.of(r)
            picker = previous.pickers.of(r) if same else None
            if picker is None and factory is not None and r in wanted:
                if isinstance(factory, TablePickerFactory):
                    picker = factory.build_from(snapshot, tables.of(r))
                else:
                    picker = factory.build(snapshot)
            pickers.append(picker)
        installed = Installed(snapshot, tables, Roles(*pickers))
        # A request thread may install concurrently: the record left last is whole either way,
        # and the next pick replaces it if its snapshot or tables are not the latest.
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
