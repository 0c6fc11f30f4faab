"""headlesslb's pytest plugin, as the ``pytest11`` entry point loads it in every pytest run.

Any project that installs headlesslb gets this plugin in each of its pytest runs, most of which
use none of its fixtures. So this module imports only pytest and the standard library: a run
that requests no ``headlesslb_cluster*`` fixture imports no ``headlesslb`` module at all (the
package and its dependencies are imported by the first such fixture). It lives outside the
``headlesslb`` package because importing ``headlesslb.testing.pytest_plugin`` imports
``headlesslb`` itself first.

The fixtures are documented, and importable, as ``headlesslb.testing.pytest_plugin``; a project
that disables entry-point plugins lists that module in ``pytest_plugins``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from headlesslb.testing import LocalCluster

__all__ = [
    "MARKER",
    "headlesslb_cluster",
    "headlesslb_cluster_module",
    "headlesslb_cluster_session",
    "pytest_collection_modifyitems",
    "pytest_configure",
]

MARKER = "headlesslb_cluster"
"""The marker that configures ``headlesslb_cluster`` and ``headlesslb_cluster_module``."""

CLUSTER_ARGUMENTS = ("namespace", "domain", "ttl", "startup_timeout")
"""LocalCluster's arguments, which the marker takes (kept here so checking a marker imports
nothing; tests/testing/test_plugin.py checks them against LocalCluster's signature)."""

_MARKER_HELP = (
    f"{MARKER}(**kwargs): LocalCluster arguments ({', '.join(CLUSTER_ARGUMENTS)})"
    " for the headlesslb_cluster and headlesslb_cluster_module fixtures"
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (``--strict-markers`` projects need it declared)."""
    if _MARKER_HELP not in config.getini("markers"):  # once, if also listed in pytest_plugins
        config.addinivalue_line("markers", _MARKER_HELP)


def _marker_error(kwargs: Mapping[str, Any], args: tuple[Any, ...]) -> str | None:
    if args:
        names = ", ".join(CLUSTER_ARGUMENTS)
        return f"@pytest.mark.{MARKER} takes keyword arguments only ({names})"
    unknown = sorted(set(kwargs) - set(CLUSTER_ARGUMENTS))
    if not unknown:
        return None
    hints = [
        f"{name} (did you mean {close[0]}?)" if close else name
        for name in unknown
        for close in [difflib.get_close_matches(name, CLUSTER_ARGUMENTS, n=1)]
    ]
    return (
        f"@pytest.mark.{MARKER}: unknown argument(s) {', '.join(hints)};"
        f" LocalCluster takes {', '.join(CLUSTER_ARGUMENTS)}"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Check every ``headlesslb_cluster`` marker when the tests are collected, so a typo is a
    usage error (one line, exit status 4) before any test runs, not a traceback in a fixture; and
    a misspelt marker name (``headlesslb_clustr``) too, which pytest would only warn about."""
    problems: dict[str, None] = {}
    for item in items:
        for mark in item.iter_markers():
            if mark.name == MARKER:
                error = _marker_error(mark.kwargs, mark.args)
            elif difflib.get_close_matches(mark.name, [MARKER], cutoff=0.8):
                error = f"@pytest.mark.{mark.name} is not a marker: did you mean {MARKER}?"
            else:
                continue
            if error is not None:
                problems[f"{item.nodeid}: {error}"] = None
    if problems:
        raise pytest.UsageError("\n".join(problems))


def _cluster(request: pytest.FixtureRequest, marked: bool) -> LocalCluster:
    """A new LocalCluster with the closest marker's arguments, imported only now."""
    from headlesslb.testing import LocalCluster
    from headlesslb.testing._cluster import _missing_dependency

    missing = _missing_dependency()
    if missing is not None:  # the testing extra: its message says what to install, no traceback
        pytest.fail(f"{request.fixturename}: {missing}", pytrace=False)
    marker = request.node.get_closest_marker(MARKER) if marked else None
    return LocalCluster(**(marker.kwargs if marker is not None else {}))


@pytest.fixture
def headlesslb_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A fresh, empty LocalCluster for one test (``@pytest.mark.headlesslb_cluster(...)``
    configures it), closed afterwards."""
    with _cluster(request, marked=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def headlesslb_cluster_module(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One LocalCluster shared by the tests of a module (tests must not assume it is empty)."""
    with _cluster(request, marked=True) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def headlesslb_cluster_session(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """One LocalCluster for the whole session (per xdist worker), with default settings."""
    with _cluster(request, marked=False) as cluster:
        yield cluster
