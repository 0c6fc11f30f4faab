"""examples/anthropic_inference.py runs as a user runs it: the blocking Anthropic SDK over
headlesslb's blocking httpx2 transport, shared by threads, in front of three Pods."""

from __future__ import annotations

import ast
import subprocess
import sys

from .conftest import EXAMPLES


def test_anthropic_inference_script() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "anthropic_inference.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    spread, streamed, released = result.stdout.splitlines()
    prefix = "18 messages from 6 threads, by Pod: "
    assert spread.startswith(prefix)
    served = ast.literal_eval(spread.removeprefix(prefix))
    # Spread (least-request draws two Pods at random, so one may by chance take none: exact
    # balance is tests/integration/test_sdks.py's, on round-robin), and none was lost.
    assert set(served) <= {"claude-0", "claude-1", "claude-2"} and len(served) >= 2
    assert sum(served.values()) == 18
    pod, _, text = streamed.removeprefix("streamed: ").partition(": ")
    assert pod in served and text == "stream please stream please stream"  # 6 tokens
    assert released == "in flight after the stream: 0"
