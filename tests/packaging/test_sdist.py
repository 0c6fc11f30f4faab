"""The sdist carries the test suite, and the suite runs from it.

Distributions (Debian, conda-forge, Fedora) build from the sdist and run the project's tests
there. The sdist is built as PyPI's would be (``python -m build --sdist``, with build isolation:
the declared backend), from a copy of this checkout so that concurrent builds never share an
``egg-info`` directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "site", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis", ".cache",
)  # fmt: skip


def _run(*argv: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **env},
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("sdist")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    venv.create(work / "venv", with_pip=True)
    python = work / "venv" / "bin" / "python"
    installed = _run(python, "-m", "pip", "install", "--quiet", "build", cwd=work)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    built = _run(python, "-m", "build", "--sdist", "--outdir", work / "dist", source, cwd=work)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = (work / "dist").glob("headlesslb-*.tar.gz")
    return path


@pytest.mark.slow
def test_the_sdist_carries_the_suite_and_what_it_reads(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    tracked = _run("git", "ls-files", "tests", "examples", "docs", "tools", cwd=ROOT)
    if tracked.returncode == 0 and tracked.stdout:  # a checkout: every tracked file of those
        assert set(tracked.stdout.split()) - names == set()
    for needed in (
        "tests/conftest.py",
        "tests/unit/test_pool.py",
        "tests/integration/apps/env_app.py",
        "examples/quickstart.py",
        "examples/k8s/stateful.yaml",
        "docs/index.md",
        "tools/snippets.py",
        "mkdocs.yml",
        "CHANGELOG.md",
        "Makefile",
        "README.md",
        "LICENSE",
        "headlesslb_pytest/__init__.py",
    ):
        assert needed in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


@pytest.mark.slow
def test_the_suite_runs_from_the_unpacked_sdist(sdist: Path, tmp_path: Path) -> None:
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.glob("headlesslb-*")
    # The pure core's tests and the docs' checks, on the sdist's own package and files.
    result = _run(
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
        "tests/unit/test_pool.py", "tests/unit/test_names.py", "tests/unit/test_prose.py",
        cwd=unpacked, PYTHONPATH=str(unpacked),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
    imported = _run(
        sys.executable, "-c", "import headlesslb; print(headlesslb.__file__)",
        cwd=unpacked, PYTHONPATH=str(unpacked),
    )  # fmt: skip
    assert Path(imported.stdout.strip()).is_relative_to(unpacked)
