"""One runtime for the clients of one Service and configuration (headlesslb.io.runtime,
headlesslb.io.shared.Registry, the RuntimeSpec compose builds), without sockets: which
configurations share (equal specs), what an attached client gets (the pool and balancer its
router is bound to, events, retired connections), that a runtime logs each change once, and the
registries' counting."""

from __future__ import annotations

import logging
import random
import ssl
from typing import Any

import httpx
import pytest

from headlesslb.compose import Parts, compose
from headlesslb.core.clock import ManualClock
from headlesslb.core.events import DiscoveryRound, EndpointsChanged, Event
from headlesslb.core.health import HealthCheck
from headlesslb.core.pickers import ConsistentHash, SlowStart
from headlesslb.core.pool import OutlierPolicy, Pool
from headlesslb.core.schedule import RefreshPolicy
from headlesslb.core.subset import Subset
from headlesslb.io.fallback import Fallback
from headlesslb.io.runtime import Runtime, RuntimeSpec
from headlesslb.io.shared import Lease, Registry
from headlesslb.options import DEFAULT_LIMITS
from headlesslb.sync.pool import LockedPool
from headlesslb.testing import StaticDiscovery

from .fresh import run_fresh

WHERE: dict[str, Any] = {"nameservers": ["127.0.0.1:53"], "namespace": "default", "port": 80}


def key(pool_class: type[Pool] = Pool, **options: Any) -> RuntimeSpec | None:
    """What a client with these options leases its runtime by; None if it never shares."""
    spec = compose("web-hl", {**WHERE, **options}, pool_class=pool_class).spec
    assert hash(spec) == hash(spec)
    return spec if spec.shareable else None


def test_connections_per_pod_are_bounded_by_default() -> None:
    parts = compose("web-hl", WHERE)
    assert parts.limits is DEFAULT_LIMITS and DEFAULT_LIMITS.max_connections == 100
    assert parts.spec.limits is DEFAULT_LIMITS  # the runtime's probes too
    unbounded = compose("web-hl", {**WHERE, "limits": httpx.Limits(max_connections=None)})
    assert unbounded.limits is not None and unbounded.limits.max_connections is None


class OwnPicker:
    """A picker factory of the user's own: compared by identity, as its own ``==`` does."""

    name = "own"

    def build(self, snapshot: Any) -> Any:
        raise NotImplementedError


def test_equal_configurations_share_and_per_client_settings_do_not_matter() -> None:
    base = key()
    assert base is not None and key() == base
    per_client: dict[str, Any] = {
        "fallback": "web-lb",
        "observers": [print],
        "writes_to": 0,
        "opentelemetry": False,
        "limits": httpx.Limits(max_connections=5),  # equal values, distinct objects
    }
    assert key(**per_client) == key(limits=httpx.Limits(max_connections=5))
    assert key() == key(limits=DEFAULT_LIMITS)  # the default is a value like any other
    assert key(health=HealthCheck(interval=1.0)) == key(health=HealthCheck(interval=1.0))
    assert key(sharding=ConsistentHash(balance_factor=1.5)) == key(
        sharding=ConsistentHash(balance_factor=1.5)
    )
    context = ssl.create_default_context()
    assert key(scheme="https", verify=context) == key(scheme="https", verify=context)
    clock = ManualClock()
    assert key(clock=clock) == key(clock=clock)
    same_place = Subset(2, client="web-0")
    assert key(subset=same_place) == key(subset=Subset(2, client="web-0"))
    assert key(subset=same_place) != key(subset=Subset(2, client="web-1"))
    assert key(subset=same_place) != key(subset=Subset(3, client="web-0"))
    own = OwnPicker()
    assert key(picker=own) == key(picker=own)  # the very same factory object


@pytest.mark.parametrize(
    "options",
    [
        {"outlier": OutlierPolicy(consecutive_failures=2)},
        {"health": HealthCheck()},
        {"health": HealthCheck(start_unhealthy=True)},
        {"subset": Subset(2, client="web-1")},
        {"refresh": RefreshPolicy(min_interval=2.0)},
        {"statefulset": "web"},
        {"picker": "least_request"},
        {"slow_start": SlowStart()},
        {"sharding": ConsistentHash(balance_factor=1.25)},
        {"scheme": "https"},
        {"verify": ssl.create_default_context()},
        {"http2": True},
        {"cert": "/tmp/client.pem"},
        {"limits": httpx.Limits(max_connections=5)},
        {"clock": ManualClock()},
        {"port": 81},
        {"ip_family": "dual"},
        {"discovery_timeout": 1.0},
        {"pool_class": LockedPool},
    ],
    ids=lambda options: next(iter(options)),
)
def test_what_shapes_the_shared_parts_is_in_the_spec(options: dict[str, Any]) -> None:
    assert key(**options) is not None
    assert key(**options) != key()


@pytest.mark.parametrize(
    "options",
    [
        {"share_discovery": False},
        {"discovery": StaticDiscovery(["10.0.0.1:80"])},
        {"rng": random.Random(1)},
    ],
    ids=lambda options: next(iter(options)),
)
def test_a_discovery_or_rng_of_ones_own_never_shares(options: dict[str, Any]) -> None:
    assert key(**options) is None and key(**options) is None  # the same objects, even


@pytest.mark.parametrize(
    "options",
    [
        lambda: {"picker": OwnPicker()},
        lambda: {"subset": Subset(2)},  # no identity in this environment: a random place
    ],
    ids=["picker", "subset"],
)
def test_what_compares_by_identity_or_is_placed_at_random_does_not_share(
    options: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("POD_NAME", "HOSTNAME"):
        monkeypatch.delenv(variable, raising=False)
    first, second = key(**options()), key(**options())
    assert first is not None and first != second


# -- the runtime ---------------------------------------------------------------------------------
class Client:
    """A client's parts, an observer recording what reaches it and a recording retire."""

    def __init__(self, discovery: StaticDiscovery, fallback: str | None = None) -> None:
        self.seen: list[Event] = []
        self.retired: list[set[tuple[str, int]]] = []
        self.parts: Parts = compose(
            "web-hl",
            {
                "discovery": discovery,
                "fallback": fallback,
                "observers": [self.seen.append],
                "opentelemetry": False,
                **WHERE,
            },
        )

    async def retire(self, keep: set[tuple[str, int]]) -> None:
        self.retired.append(keep)

    def join(self, runtime: Runtime) -> Any:
        """Attach to ``runtime`` as a shell does; the detach function."""
        return runtime.attach(self.parts.events, self.retire, self.parts.fallback)

    def changes(self) -> list[EndpointsChanged]:
        return [e for e in self.seen if isinstance(e, EndpointsChanged)]


@pytest.mark.anyio
async def test_attached_clients_share_the_pool_events_and_retirement(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="headlesslb.pool")
    dns = StaticDiscovery(["10.0.0.1:80", "10.0.0.2:80"])
    first, second = Client(dns), Client(dns, fallback="web-lb")
    assert first.parts.spec == second.parts.spec  # the fallback is the client's own
    runtime = Runtime(first.parts.spec)
    detach_first = first.join(runtime)
    await runtime.refresher.refresh()
    assert len(caplog.records) == 2  # two Pods joined: one line each

    detach = second.join(runtime)
    for router in (first.parts.router(runtime), second.parts.router(runtime)):
        assert router.pool is runtime.pool and router.balancer is runtime.balancer
    assert runtime.clients == 2
    # The late client learns the membership at once (its metrics start from it), unlogged.
    (joined,) = second.changes()
    assert {e.ip for e in joined.added} == {"10.0.0.1", "10.0.0.2"}
    assert len(caplog.records) == 2

    caplog.clear()
    first.seen.clear()
    second.seen.clear()
    first.retired.clear()
    # The fallback Service's ClusterIP, as if looked up (its connections are kept open).
    monkeypatch.setattr(Fallback, "cached", property(lambda self: ("10.9.9.9", 8080)))
    dns.set(["10.0.0.2:80", "10.0.0.3:80"])
    await runtime.refresher.refresh()
    for client in (first, second):
        (change,) = client.changes()
        assert [e.ip for e in change.added] == ["10.0.0.3"]
        assert [e.ip for e in change.removed] == ["10.0.0.1"]
        assert any(isinstance(e, DiscoveryRound) for e in client.seen)
    assert len(caplog.records) == 2  # one line per change, not one per client
    pods = {("10.0.0.2", 80), ("10.0.0.3", 80)}
    assert first.retired == [pods]
    assert second.retired[-1] == pods | {("10.9.9.9", 8080)}  # its own fallback is kept

    detach()
    detach()  # twice is harmless
    second.seen.clear()
    dns.set(["10.0.0.3:80"])
    await runtime.refresher.refresh()
    assert runtime.clients == 1 and second.changes() == [] and len(first.changes()) == 2
    detach_first()
    assert runtime.clients == 0


@pytest.mark.anyio
async def test_a_runtime_of_one_client_logs_each_change_once_and_tells_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="headlesslb.pool")
    dns = StaticDiscovery(["10.0.0.1:80"])
    client = Client(dns)
    runtime = Runtime(client.parts.spec)
    client.join(runtime)
    await runtime.refresher.refresh()
    assert len(caplog.records) == 1  # by the runtime's log observer; the client's skips it
    assert len(client.changes()) == 1 and client.retired == [{("10.0.0.1", 80)}]


@pytest.mark.anyio
async def test_a_failing_retire_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    dns = StaticDiscovery(["10.0.0.1:80"])
    first, second = Client(dns), Client(dns)

    async def broken(keep: set[tuple[str, int]]) -> None:
        raise RuntimeError("closed")

    runtime = Runtime(first.parts.spec)
    runtime.attach(first.parts.events, broken)
    second.join(runtime)
    await runtime.refresher.refresh()
    assert second.retired == [{("10.0.0.1", 80)}]
    assert "retiring connections" in caplog.text


# -- the registries ------------------------------------------------------------------------------
def test_a_registry_counts_users_and_replaces_a_dead_value() -> None:
    leases: Registry[str, list[str]] = Registry()
    made: list[list[str]] = []

    def make() -> list[str]:
        made.append(["alive"])
        return made[-1]

    def alive(value: list[str]) -> bool:
        return value == ["alive"]

    first, created = leases.acquire("k", make, alive)
    second, again = leases.acquire("k", make, alive)
    assert created and not again and first is second and first.users == 2
    other, _ = leases.acquire("other", make, alive)
    assert len(leases) == 2 and other is not first
    assert not first.release()
    assert first.release()  # the last user: it stops the value
    assert len(leases) == 1
    third, _ = leases.acquire("k", make, alive)
    third.value[0] = "failed"  # its background work died (and was logged)
    fourth, created = leases.acquire("k", make, alive)
    assert created and fourth is not third
    assert third.release()  # the dead one's last user does not drop the new one
    assert len(leases) == 2
    private = Lease(["alive"])  # a value of one user's own, in no registry
    assert private.release()


def test_a_registry_in_a_forked_child_starts_empty() -> None:
    run_fresh(
        """
        import os
        from headlesslb.io.shared import Registry

        leases = Registry()
        leases.acquire("k", lambda: 1, lambda value: True)
        pid = os.getpid()
        os.getpid = lambda: pid + 1  # a child forked without the at-fork hook
        assert len(leases) == 0
        _, created = leases.acquire("k", lambda: 2, lambda value: True)
        assert created
        """
    )


@pytest.mark.anyio
async def test_an_observer_of_several_clients_gets_each_shared_event_once() -> None:
    dns = StaticDiscovery(["10.0.0.1:80"])
    first, second = Client(dns), Client(dns)
    seen: list[Event] = []
    for client in (first, second):
        client.parts.events.subscribe(seen.append)  # one metrics object for every client
    runtime = Runtime(first.parts.spec)
    first.join(runtime)
    await runtime.refresher.refresh()
    second.join(runtime)  # no replay: this observer saw the Pods join
    assert len(second.changes()) == 1
    dns.set(["10.0.0.2:80"])
    await runtime.refresher.refresh()
    assert sum(isinstance(e, EndpointsChanged) for e in seen) == 2  # one per change
    assert seen == first.seen  # what one client's own observer got: nothing twice


def test_clients_share_the_zero_code_opentelemetry_observer() -> None:
    """One object for every client, so a shared runtime's events reach it once (see the test
    above): K clients of one Service count one ejection once, not K times."""
    pytest.importorskip("opentelemetry")
    from headlesslb.telemetry.otel import OpenTelemetryObserver

    dns = StaticDiscovery(["10.0.0.1:80"])
    observers = [
        [
            o
            for o in compose("web-hl", {"discovery": dns, **WHERE}).events.observers
            if isinstance(o, OpenTelemetryObserver)
        ]
        for _ in range(2)
    ]
    assert len(observers[0]) == 1 and observers[0] == observers[1]
