"""examples/quickstart.py runs as a user runs it: a script, in its own process."""

from __future__ import annotations

import subprocess
import sys

from .conftest import EXAMPLES


def test_quickstart_script() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    balanced = result.stdout.splitlines()[0]
    assert balanced.startswith("30 requests, balanced:")
    assert "'web-0': 10, 'web-1': 10, 'web-2': 10" in balanced
