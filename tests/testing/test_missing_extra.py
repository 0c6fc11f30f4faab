"""LocalCluster without the ``testing`` extra says what is missing and how to install it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headlesslb.testing import ClusterError, LocalCluster, _cluster

HINT = "pip install 'headlesslb[testing]'"


def test_cluster_process_that_cannot_import_uvicorn_names_it(tmp_path: Path) -> None:
    # A uvicorn that fails to import as a missing one does: found by find_spec, so the parent's
    # own check passes, and the cluster process is the one that fails.
    fake = tmp_path / "uvicorn"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise ModuleNotFoundError("No module named \'uvicorn\'", name="uvicorn")\n'
    )
    script = textwrap.dedent(
        """
        from headlesslb.testing import ClusterError, LocalCluster

        if __name__ == "__main__":
            try:
                LocalCluster(startup_timeout=60)
            except ClusterError as exc:
                print("ClusterError:", exc)
            else:
                print("started")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]))
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out.startswith("ClusterError: "), (out, result.stderr)
    assert "uvicorn" in out and HINT in out, out
    assert "exited with code" not in out


def test_missing_module_is_reported_before_any_process_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "uvicorn" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    spawned: list[object] = []
    monkeypatch.setattr(_cluster.multiprocessing, "get_context", spawned.append)
    with pytest.raises(ClusterError, match=r"'uvicorn'.*pip install 'headlesslb\[testing\]'"):
        LocalCluster()
    assert not spawned
