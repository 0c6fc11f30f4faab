"""Run a snippet in a fresh interpreter, for what must not happen in the test process.

A child forked without the at-fork hook is played by faking ``os.getpid``: the renewals that
:func:`headlesslb.core.forksafe.check` then runs would renew every registered lock and empty
every registry of the test process, under whatever other tests left running there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import headlesslb

SOURCE = str(Path(headlesslb.__file__).parent.parent)


def run_fresh(code: str) -> None:
    """Run ``code`` in a new interpreter importing this checkout; fail with its stderr."""
    path = os.pathsep.join(p for p in (SOURCE, os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
