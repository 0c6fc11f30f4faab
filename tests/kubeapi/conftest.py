"""The kubeapi bed: etcd and kubeapi-server (Kubernetes' own API machinery) on loopback.

``make test`` builds it first (``make kubeapi``); here the binaries are only looked up (and
relinked from the cached packages when the server's source changed). Without them, from an
archive that could not be reached, every test of the bed skips and says why.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from headlesslb.testing._kubeapi import KubeAPI

BUILD = Path(__file__).resolve().parents[2] / "tools" / "kubeapi" / "build.py"
EX_UNREACHABLE = 75


@pytest.fixture(scope="session")
def kubeapi_binaries() -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, str(BUILD), "--offline", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode == EX_UNREACHABLE:
        pytest.skip(f"KUBEAPI BED NOT BUILT: {result.stderr.strip()}")
    if result.returncode != 0:
        pytest.fail(f"tools/kubeapi/build.py failed:\n{result.stderr}")
    manifest = json.loads(result.stdout)
    return {"server": manifest["server"], "etcd": manifest["etcd"]}


@pytest.fixture(scope="session")
def kubeapi(
    kubeapi_binaries: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeAPI]:
    """One bed per test session (per xdist worker), watch cache on as in kube-apiserver.
    Tests share it: each works in its own namespace and undoes what it changes of users."""
    binaries = kubeapi_binaries
    workdir = tmp_path_factory.mktemp("kubeapi")
    with KubeAPI(binaries["server"], binaries["etcd"], workdir=workdir) as bed:
        yield bed


@pytest.fixture
def namespace() -> str:
    return f"t-{secrets.token_hex(4)}"


@pytest.fixture
def new_kubeapi(
    kubeapi_binaries: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., KubeAPI]]:
    """A bed of the test's own, for what it breaks (compaction, restarts, etcd outages)."""
    beds: list[KubeAPI] = []

    def make(**options: Any) -> KubeAPI:
        workdir = tmp_path_factory.mktemp("kubeapi")
        bed = KubeAPI(
            kubeapi_binaries["server"], kubeapi_binaries["etcd"], workdir=workdir, **options
        )
        beds.append(bed)
        return bed.start()

    yield make
    for bed in beds:
        bed.stop()
