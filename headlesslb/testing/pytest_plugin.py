"""pytest fixtures for a LocalCluster, registered in every pytest run by the ``pytest11`` entry
point (as the module ``headlesslb_pytest``, which imports no headlesslb module until a test
requests one of these fixtures, so pytest runs that use none pay nothing).

Every name starts with ``headlesslb_`` so it cannot collide with a project's own ``cluster``
fixtures:

- ``headlesslb_cluster``: a fresh, empty cluster for one test. Configure it with the marker of
  the same name: ``@pytest.mark.headlesslb_cluster(ttl=1, namespace="shop")`` (LocalCluster's
  arguments; on a test, a class or a module's ``pytestmark``). A misspelt argument or marker
  name is a usage error when the tests are collected.
- ``headlesslb_cluster_module``: one cluster for a module's tests (the module's marker applies).
- ``headlesslb_cluster_session``: one cluster for the whole session (per pytest-xdist worker),
  default settings. Tests share it: give workloads names of their own and do not assume it is
  empty.

A project that turns entry-point plugins off (``-p no:headlesslb``,
``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) lists this module in ``pytest_plugins``.
"""

from __future__ import annotations

from headlesslb_pytest import (
    MARKER,
    headlesslb_cluster,
    headlesslb_cluster_module,
    headlesslb_cluster_session,
)

# The hooks, for pytest when this module is listed in pytest_plugins (not API).
from headlesslb_pytest import pytest_collection_modifyitems as pytest_collection_modifyitems
from headlesslb_pytest import pytest_configure as pytest_configure

__all__ = [
    "MARKER",
    "headlesslb_cluster",
    "headlesslb_cluster_module",
    "headlesslb_cluster_session",
]
