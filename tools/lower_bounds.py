"""Print the requirements of the minimum-versions run: every lower bound, pinned exactly.

Reads pyproject.toml: the runtime dependencies and the ``testing`` extra (what users install)
and, from the ``test`` dependency group, the tools the minimum-versions subset runs with
(pytest, its plugins, trio, hypothesis, trustme). Each ``name>=X`` becomes ``name==X`` (an
upper bound beside it is dropped), so ``make test-min`` proves the lower bounds we publish are
versions the code works with. A dependency without a lower bound is an error: there would be
nothing to test.

``--extra httpx2`` prints that extra's pins alone: httpx2's lowest version needs a newer anyio
than ours, so ``make test-min`` installs it in a second step, once the first has run.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_TOOLS = ("pytest", "pytest-xdist", "trio", "hypothesis", "trustme")
_BOUND = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9A-Za-z.]*)(\s*,\s*<[^,]+)?$")


def _pinned(requirement: str) -> str:
    text = requirement.split(";")[0].strip()
    match = _BOUND.match(text)
    if match is None:
        raise SystemExit(f"lower_bounds: {requirement!r} has no plain 'name>=version' bound")
    return f"{match.group(1)}=={match.group(2)}"


def main() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    group = pyproject["dependency-groups"]["test"]  # strings, and {include-group = ...} tables
    names = {r.split(">=")[0].strip(): r for r in group if isinstance(r, str)}
    missing = [tool for tool in TEST_TOOLS if tool not in names]
    if missing:
        raise SystemExit(f"lower_bounds: the test group lacks {', '.join(missing)}")
    if sys.argv[1:2] == ["--extra"]:
        requirements = extras[sys.argv[2]]
    else:
        requirements = [
            *project["dependencies"],
            *extras["testing"],
            *(names[t] for t in TEST_TOOLS),
        ]
    sys.stdout.write("".join(_pinned(r) + "\n" for r in requirements))


if __name__ == "__main__":
    main()
