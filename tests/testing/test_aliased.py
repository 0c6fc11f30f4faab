"""The smoke subset in a process that aliased httpx (``httpx2.alias_httpx()``, issue #21): local
clusters start (they died during start-up), user and inference apps serve, and headlesslb's
httpx flavour runs on httpx2's classes. The subset is modules that start many clusters and
drive clients through them (the real SDKs over headlesslb.httpx2 included), chosen to stay
within about 30 s on a shared machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SUBSET = [
    "tests/testing/test_user_apps.py",
    "tests/testing/test_inference.py",
    "tests/integration/test_sdks.py",
    # The SDKs through headlesslb.httpx2 on two of their rows: an async and a blocking one.
    "-k",
    "not test_sdks or openai-async-asyncio or anthropic-sync",
]


def test_the_smoke_subset_passes_in_an_aliased_process() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "aliased_main.py"),
            *SUBSET,
            "-q",
            "-p",
            "no:cacheprovider",
            # httpx2 imports anyio before pytest loads anyio's plugin: pytest then says it cannot
            # rewrite that plugin's asserts, which is no failure of ours.
            "-W",
            "ignore::pytest.PytestAssertRewriteWarning",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "aliased: httpx is httpx2: True" in result.stdout
    summary = result.stdout.splitlines()[-2]
    assert re.search(r"\b\d+ passed\b", summary), summary
    assert not re.search(r"\b\d+ (failed|errors?)\b", summary), summary
