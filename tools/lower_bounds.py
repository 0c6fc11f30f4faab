"""Print the requirements of the minimum-versions run: every lower bound, pinned exactly.

Reads pyproject.toml: the runtime dependencies and the ``testing`` extra (what users install)
and, from the ``test`` dependency group, the tools the minimum-versions subset runs with
(pytest, its plugins, trio, hypothesis, trustme). Each ``name>=X`` becomes ``name==X`` (an
upper bound beside it is dropped), so ``make test-min`` proves the lower bounds we publish are
versions the code works with. A dependency without a lower bound is an error: there would be
nothing to test.

``--extra httpx2`` prints the same pins plus that extra's, changed where the extra's lowest
version needs it (:data:`RAISED_BY_EXTRA`): httpx2 2.12 needs a newer anyio than ours, so ``make
test-min`` runs it in a venv of its own (installed over the first one's, the newer anyio would
stay there for the next run, with a trio too old for it).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_TOOLS = ("pytest", "pytest-xdist", "trio", "hypothesis", "trustme")
RAISED_BY_EXTRA: dict[str, dict[str, str | None]] = {
    "httpx2": {"anyio": "4.10", "httpx": None, "httpcore": None}
}
"""What an extra's lowest version changes in the pins: httpx2 2.12 requires ``anyio>=4.10``,
and an h11 newer than httpcore 1.0.6 allows, so httpx and httpcore (not on the httpx2
flavour's path) are left to the resolver above their bounds (None)."""
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
    requirements = [
        *project["dependencies"],
        *extras["testing"],
        *(names[t] for t in TEST_TOOLS),
    ]
    raised: dict[str, str | None] = {}
    if sys.argv[1:2] == ["--extra"]:
        extra = sys.argv[2]
        requirements += extras[extra]
        raised = RAISED_BY_EXTRA.get(extra, {})
    lines = []
    for requirement in requirements:
        name, version = _pinned(requirement).split("==")
        if name not in raised:
            lines.append(f"{name}=={version}\n")
        elif (floor := raised[name]) is not None:
            lines.append(f"{name}=={floor}\n")
        else:
            lines.append(f"{name}>={version}\n")
    sys.stdout.write("".join(lines))


if __name__ == "__main__":
    main()
