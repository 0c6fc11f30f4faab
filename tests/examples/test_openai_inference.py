"""examples/openai_inference.py runs as a user runs it: a script, in its own process, with the
real openai SDK over headlesslb's httpx2 transport in front of three inference Pods."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from .conftest import EXAMPLES


def test_openai_inference_script() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "openai_inference.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spread, streamed, *endpoints = result.stdout.splitlines()
    prefix = "24 chat completions, by Pod: "
    assert spread.startswith(prefix)
    served = ast.literal_eval(spread.removeprefix(prefix))
    # Spread (least-request draws two Pods at random, so one may by chance take none: exact
    # balance is tests/integration/test_sdks.py's, on round-robin), and none was lost.
    assert 2 <= len(served) <= 3 and sum(served.values()) == 24
    assert streamed.startswith("streamed: ")
    pod, _, text = streamed.removeprefix("streamed: ").partition(": ")
    assert pod in served and text == "Which Pod are you? Which Pod are"  # 8 tokens, the Pod's first
    counts = [re.fullmatch(r"  \S+:\d+ requests=(\d+) in_flight=0", line) for line in endpoints]
    assert len(counts) == 3 and all(counts)
    assert sum(int(m.group(1)) for m in counts if m) == 25
