"""The examples run as their users run them: imported from examples/ (the local cluster's
process inherits this sys.path, so it imports the apps by the same import strings)."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
