"""pytest fixtures for a LocalCluster (registered through the ``pytest11`` entry point).

Every name starts with ``headlesslb_`` so it cannot collide with a project's own ``cluster``
fixtures:

- ``headlesslb_cluster``: a fresh, empty cluster for one test. Configure it with the marker of
  the same name: ``@pytest.mark.headlesslb_cluster(ttl=1, namespace="shop")`` (LocalCluster's
  arguments; on a test, a class or a module's ``pytestmark``).
- ``headlesslb_cluster_module``: one cluster for a module's tests (the module's marker applies).
- ``headlesslb_cluster_session``: one cluster for the whole session (per pytest-xdist worker),
  default settings. Tests share it: give workloads names of their own and do not assume it is
  empty.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from ._cluster import LocalCluster

MARKER = "headlesslb_cluster"
_ARGUMENTS = frozenset(inspect.signature(LocalCluster).parameters)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (``--strict-markers`` projects need it declared)."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**kwargs): LocalCluster arguments (ttl, namespace, domain, startup_timeout)"
        " for the headlesslb_cluster and headlesslb_cluster_module fixtures",
    )


def _cluster_arguments(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(
            f"@pytest.mark.{MARKER} takes keyword arguments only ({', '.join(sorted(_ARGUMENTS))})"
        )
    unknown = sorted(set(marker.kwargs) - _ARGUMENTS)
    if unknown:
        raise pytest.UsageError(
            f"@pytest.mark.{MARKER}: unknown argument(s) {', '.join(unknown)};"
            f" LocalCluster takes {', '.join(sorted(_ARGUMENTS))}"
        )
    return dict(marker.kwargs)


@pytest.fixture
def headlesslb_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A fresh, empty LocalCluster for one test (``@pytest.mark.headlesslb_cluster(...)``
    configures it), closed afterwards."""
    with LocalCluster(**_cluster_arguments(request.node)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def headlesslb_cluster_module(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One LocalCluster shared by the tests of a module (tests must not assume it is empty)."""
    with LocalCluster(**_cluster_arguments(request.node)) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def headlesslb_cluster_session() -> Iterator[LocalCluster]:
    """One LocalCluster for the whole session (per xdist worker), with default settings."""
    with LocalCluster() as cluster:
        yield cluster
