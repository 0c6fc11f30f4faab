"""Fixtures for integration tests: a LocalCluster with StatefulSet ``web`` (3 Pods)."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Iterator

import pytest

from headlesslb.testing import LocalCluster

from . import helpers

HTTPX2_MODULES = frozenset(
    {"test_client", "test_close", "test_resilience", "test_routing", "test_tls"}
)
"""The modules of the behaviour matrix that also run on the httpx2 clients, async and sync.

Every flavour's shell is generated from the same source by renaming (``tools/unasync.py``), so
what the httpx2 rows can catch is what differs between the libraries themselves: their
clients' handling of a transport (entering, closing, streams), their responses and errors
(failures, retries and fallback: resilience), redirects and URLs (routing) and their TLS
defaults (tls). The modules left out (overload, observability, hostile DNS, readiness) drive
the call core, the runtime and discovery, which no flavour changes; they run on the async and
the sync httpx clients.
"""


HAS_HTTPX2 = importlib.util.find_spec("httpx2") is not None
"""False only in the minimum-versions run's first step, which installs httpx's lowest versions
alone (httpx2's need a newer anyio); its second step runs the httpx2 flavour's own tests."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_clients`` run on the async and on the sync client (the behaviour
    matrix), and in :data:`HTTPX2_MODULES` on the httpx2 ones too; ``async_only`` opts a test of
    such a module out (it tests the async API itself)."""
    node = metafunc.definition
    if (
        node.get_closest_marker("both_clients")
        and not node.get_closest_marker("async_only")
        and inspect.iscoroutinefunction(metafunc.function)
    ):
        flavors = ["async", "sync"]
        if metafunc.module.__name__.rpartition(".")[2] in HTTPX2_MODULES and HAS_HTTPX2:
            flavors += ["httpx2", "httpx2-sync"]
        metafunc.fixturenames.append("client_flavor")
        metafunc.parametrize("client_flavor", flavors, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Only the async httpx client runs on both event loops: the sync clients do not care
    which loop the test runs, and the httpx2 client's shell is the httpx one's, renamed."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        values = params.params if params is not None else {}
        flavor = values.get("client_flavor")
        if flavor not in (None, "async") and values.get("anyio_backend") == "trio":
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def client_flavor(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which client ``helpers.make_client`` builds for this test."""
    flavor = str(getattr(request, "param", "async"))
    helpers.FLAVOR["client"] = flavor
    try:
        yield flavor
    finally:
        helpers.FLAVOR["client"] = "async"


@pytest.fixture(autouse=True)
def _client_matrix(request: pytest.FixtureRequest) -> None:
    """Set up ``client_flavor`` for every row of the matrix, named by the test or not: a
    parameter added in ``pytest_generate_tests`` is not a fixture the test requests, so
    without this its sync rows would build the async client."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if "client_flavor" in params:
        request.getfixturevalue("client_flavor")


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """StatefulSet ``web`` ×3 behind headless ``web-hl`` and LB ``web-lb``; DNS TTL 1 s."""
    with LocalCluster(ttl=1) as c:
        c.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        yield c
