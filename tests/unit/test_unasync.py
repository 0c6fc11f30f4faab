"""The generated shells (tools/unasync.py): current, and a hand edit of one is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "unasync.py"


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), "--check", "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    shutil.copytree(
        ROOT / "headlesslb", root / "headlesslb", ignore=shutil.ignore_patterns("*.pyc")
    )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")  # ruff's settings
    return root


def test_the_generated_shells_are_current() -> None:
    result = _check(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_hand_edit_of_a_generated_shell_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    generated = root / "headlesslb" / "httpx2" / "sync" / "transport.py"
    generated.write_text(generated.read_text().replace("read_body", "read_the_body", 1))
    result = _check(root)
    assert result.returncode == 1
    assert "headlesslb/httpx2/sync/transport.py" in result.stderr
    assert "headlesslb/sync/transport.py" not in result.stderr


def test_an_edit_of_the_source_alone_leaves_every_flavour_stale(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    source = root / "headlesslb" / "aio" / "client.py"
    source.write_text(source.read_text().replace('"""GET (see', '"""GET, balanced (see', 1))
    result = _check(root)
    assert result.returncode == 1
    for stale in ("sync/client.py", "httpx2/client.py", "httpx2/sync/client.py"):
        assert f"headlesslb/{stale}" in result.stderr
