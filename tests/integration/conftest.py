"""Fixtures for integration tests: a LocalCluster with StatefulSet ``web`` (3 Pods)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

from headlesslb.testing import LocalCluster

from . import helpers


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_clients`` run on the async and on the sync client (the behaviour
    matrix); ``async_only`` opts a test of such a module out (it tests the async API itself)."""
    node = metafunc.definition
    if (
        node.get_closest_marker("both_clients")
        and not node.get_closest_marker("async_only")
        and inspect.iscoroutinefunction(metafunc.function)
    ):
        metafunc.fixturenames.append("client_flavor")
        metafunc.parametrize("client_flavor", ["async", "sync"], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The sync client does not care which event loop the test runs: its rows run once."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        values = params.params if params is not None else {}
        if values.get("client_flavor") == "sync" and values.get("anyio_backend") == "trio":
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
