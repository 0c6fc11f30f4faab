"""The built wheel alone, in a fresh virtual environment, as a user gets it from PyPI.

Builds the wheel (pip, with build isolation: the declared build backend), installs it into a new
venv with nothing else from this checkout, and runs it from a directory where the source tree is
not importable: the package imports, ``headlesslb`` and ``python -m headlesslb`` work, and the
metadata says what PyPI will show (SPDX license, LICENSE file, classifiers, URLs, py.typed).
"""

from __future__ import annotations

import email.parser
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import headlesslb

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, ROOT, cwd=out
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("headlesslb-*.whl")
    return path


@pytest.mark.slow
def test_the_wheel_alone_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python, bin_dir = env_dir / "bin" / "python", env_dir / "bin"
    installed = _run(python, "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    checked = _run(python, "-m", "pip", "check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    # Imports from the venv, not from this checkout; the testing module imports without its extra.
    imported = _run(
        python,
        "-c",
        "import headlesslb, headlesslb.sync, headlesslb.testing; print(headlesslb.__file__)",
        cwd=tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).is_relative_to(env_dir)
    version = f"headlesslb {headlesslb.__version__}"
    for command in (
        [bin_dir / "headlesslb", "--version"],
        [python, "-m", "headlesslb", "--version"],
    ):
        result = _run(*command, cwd=tmp_path)
        assert (result.returncode, result.stdout.strip()) == (0, version), result.stderr
    # A real command: DNS that does not answer (loopback only) is a typed error, exit 2.
    resolve = _run(
        python, "-m", "headlesslb", "resolve", "web-hl", "--namespace", "x",
        "--nameserver", "127.0.0.1:9", "--timeout", "0.3", cwd=tmp_path,
    )  # fmt: skip
    assert resolve.returncode == 2 and "DiscoveryError" in resolve.stderr, resolve.stderr
    # Without the [testing] extra, the demo says what to install.
    demo = _run(bin_dir / "headlesslb", "demo", "--fast", cwd=tmp_path)
    assert demo.returncode == 2 and "pip install 'headlesslb[testing]'" in demo.stderr
    # A project that depends on headlesslb and uses none of its fixtures: its pytest runs load
    # the plugin (the entry point) and import no headlesslb module.
    installed = _run(python, "-m", "pip", "install", "--quiet", "pytest>=8", cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_app.py").write_text("def test_app():\n    pass\n")
    collected = _run(python, "-X", "importtime", "-m", "pytest", "--co", "-q", cwd=project)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    imported = re.findall(r"^import time:[^|]+\|[^|]+\|\s*(\S+)$", collected.stderr, re.M)
    assert "pytest" in imported
    assert [m for m in imported if m == "headlesslb" or m.startswith("headlesslb.")] == []
    plugins = _run(python, "-m", "pytest", "--co", "-q", "--trace-config", cwd=project)
    assert "headlesslb_pytest" in plugins.stdout, plugins.stdout  # it was loaded, and cheap


def archive_text(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(name).decode()


def test_the_wheel_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
        license_text = archive.read(f"{dist_info}/licenses/LICENSE").decode()
    assert metadata["Name"] == "headlesslb" and metadata["Version"] == headlesslb.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: the expression
    # Extras are what users install; the development tools are dependency groups, unpublished.
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"testing", "prometheus", "opentelemetry", "top"} <= extras
    assert not {"test", "docs"} & extras, extras
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    # The library reads DNS with its own reader: dnspython is only the local cluster's.
    requires = metadata.get_all("Requires-Dist") or []
    assert [r for r in requires if r.startswith("dnspython")] == [
        'dnspython>=2.6; extra == "testing"'
    ], requires
    assert "headlesslb/py.typed" in names
    # The pytest plugin is a module of its own, outside the package it would otherwise import.
    assert "headlesslb_pytest/__init__.py" in names
    entry_points = archive_text(wheel, f"{dist_info}/entry_points.txt")
    assert "[pytest11]\nheadlesslb = headlesslb_pytest\n" in entry_points, entry_points
    assert "headlesslb/__main__.py" in names
    assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names)
    # The README that PyPI shows starts with the install command.
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert "pip install headlesslb" in description.split("## ", 1)[0]
