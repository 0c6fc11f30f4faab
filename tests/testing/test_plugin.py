"""The pytest plugin costs nothing where it is not used, and says plainly what is wrong.

Every pytest run of a project that installs headlesslb loads the plugin (``pytest11`` entry
point, the module ``headlesslb_pytest``). These tests run pytest in a separate process on a
small project of their own, with only that plugin loaded as the entry point loads it.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import headlesslb_pytest
from headlesslb.testing import ClusterError, LocalCluster, pytest_plugin

ROOT = Path(__file__).resolve().parents[2]


def _pytest(
    project: Path, *args: str, importtime: bool = False
) -> subprocess.CompletedProcess[str]:
    """pytest in its own process on ``project``, the plugin loaded as the entry point loads it
    (autoloading off, so this checkout's plugin is the one loaded whatever the venv holds)."""
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONPATH=str(ROOT))
    env.pop("PYTEST_ADDOPTS", None)
    python = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    return subprocess.run(
        [*python, "-m", "pytest", "-p", "headlesslb_pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _imported(importtime_stderr: str) -> set[str]:
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", importtime_stderr, re.M))


def test_the_entry_point_is_the_small_module() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"headlesslb": "headlesslb_pytest"}


def test_a_run_that_uses_no_fixture_imports_no_headlesslb_module(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text("def test_app():\n    assert 1 + 1 == 2\n")
    # What was imported by the end of the run, the plugin's own import included (pytest imports
    # plugins with importlib.import_module, which -X importtime does not list).
    (tmp_path / "conftest.py").write_text(
        "import sys\n"
        "def pytest_sessionfinish(session):\n"
        "    open('modules.txt', 'w').write('\\n'.join(sorted(sys.modules)))\n"
    )
    result = _pytest(tmp_path, "--co", "-q", importtime=True)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = _imported(result.stderr)
    loaded = set((tmp_path / "modules.txt").read_text().split())
    assert "pytest" in listed and "headlesslb_pytest" in loaded  # both lists are read right
    for modules in (listed, loaded):
        assert sorted(m for m in modules if m == "headlesslb" or m.startswith("headlesslb.")) == []
        # Nor what headlesslb depends on and the project may not (httpx, anyio).
        assert not {"httpx", "anyio", "httpcore"} & modules


def test_a_run_that_uses_a_fixture_gets_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(
        "import pytest\n"
        "@pytest.mark.headlesslb_cluster(namespace='shop')\n"
        "def test_app(headlesslb_cluster):\n"
        "    assert headlesslb_cluster.namespace == 'shop'\n"
    )
    result = _pytest(tmp_path, "-q", "--strict-markers")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            "@pytest.mark.headlesslb_cluster(tll=1)",
            "test_app.py::test_app: @pytest.mark.headlesslb_cluster: unknown argument(s)"
            " tll (did you mean ttl?); LocalCluster takes namespace, domain, ttl, startup_timeout",
        ),
        (
            "@pytest.mark.headlesslb_cluster(1)",
            "test_app.py::test_app: @pytest.mark.headlesslb_cluster takes keyword arguments only"
            " (namespace, domain, ttl, startup_timeout)",
        ),
        (
            "@pytest.mark.headlesslb_clustr(ttl=1)",
            "test_app.py::test_app: @pytest.mark.headlesslb_clustr is not a marker:"
            " did you mean headlesslb_cluster?",
        ),
    ],
)
def test_a_marker_typo_is_a_usage_error_without_a_traceback(
    tmp_path: Path, marker: str, message: str
) -> None:
    (tmp_path / "test_app.py").write_text(
        f"import pytest\n{marker}\ndef test_app(headlesslb_cluster):\n    pass\n"
    )
    result = _pytest(tmp_path, "-q")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert result.stderr.strip() == f"ERROR: {message}", result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_the_marker_takes_what_local_cluster_takes() -> None:
    assert tuple(inspect.signature(LocalCluster).parameters) == headlesslb_pytest.CLUSTER_ARGUMENTS


def test_the_fixtures_have_public_import_paths() -> None:
    for name in ("headlesslb_cluster", "headlesslb_cluster_module", "headlesslb_cluster_session"):
        assert getattr(pytest_plugin, name) is getattr(headlesslb_pytest, name)


def test_errors_name_public_paths() -> None:
    where = f"{ClusterError.__module__}.{ClusterError.__qualname__}"
    assert where == "headlesslb.testing.ClusterError"


def test_without_the_extra_the_fixture_says_what_to_install(tmp_path: Path) -> None:
    # uvicorn made unimportable as a missing one is: find_spec finds nothing.
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        "_real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, package=None: (\n"
        "    None if name == 'uvicorn' else _real(name, package))\n"
    )
    (tmp_path / "test_app.py").write_text("def test_app(headlesslb_cluster):\n    pass\n")
    result = _pytest(tmp_path, "-q")
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert (
        "headlesslb_cluster: LocalCluster needs the module 'uvicorn', which is not installed:"
        " pip install 'headlesslb[testing]'" in result.stdout
    )
    assert "Traceback" not in result.stdout and "_cluster.py" not in result.stdout
