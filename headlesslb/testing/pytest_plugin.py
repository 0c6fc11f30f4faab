"""pytest fixtures for a LocalCluster (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._cluster import LocalCluster


@pytest.fixture
def local_cluster() -> Iterator[LocalCluster]:
    """A fresh, empty LocalCluster for one test, closed afterwards."""
    with LocalCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def local_cluster_module() -> Iterator[LocalCluster]:
    """One LocalCluster shared by the tests of a module (tests must not assume it is empty)."""
    with LocalCluster() as cluster:
        yield cluster
