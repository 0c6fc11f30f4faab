"""Run pytest in a process whose main module called ``httpx2.alias_httpx()``, as an application
migrating to httpx2 does: ``import httpx`` gives httpx2 everywhere, headlesslb's default flavour
included. The call is at the top of the main module, not under the ``__main__`` guard, because
that is where applications put it and where it bites: every LocalCluster process re-runs this
module (multiprocessing does), so the cluster must start in an aliased interpreter too.

    python tests/testing/aliased_main.py [pytest arguments]

Exits with pytest's status, or 3 if the aliasing did not hold.
"""

import httpx2

httpx2.alias_httpx()

import sys  # noqa: E402 - after the alias, as the alias demands of every import

if __name__ == "__main__":
    import pytest

    status = pytest.main(sys.argv[1:])
    import headlesslb

    aliased = sys.modules["httpx"] is httpx2 and issubclass(
        headlesslb.HeadlessTransport, httpx2.AsyncBaseTransport
    )
    print(f"aliased: httpx is httpx2: {aliased}")
    raise SystemExit(status if aliased else 3)
