"""Shared helpers for the benchmark scripts: print a table, write results as JSON.

Results go to ``benchmarks/results/<name>.json`` with the machine they ran on and when, so numbers
from different machines are never compared by accident.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "machine_info", "print_table", "write_results"]

RESULTS = Path(
    os.environ.get("HEADLESSLB_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)
"""Where result files go: ``benchmarks/results``, unless ``HEADLESSLB_BENCH_RESULTS`` names
another directory (compare.py's runs write there, not over the checked-in results)."""


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
        "switch_interval_s": sys.getswitchinterval(),
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)


def print_table(rows: Sequence[Mapping[str, object]], *, title: str | None = None) -> None:
    """Print ``rows`` (dicts sharing keys) as an aligned text table; floats to 3 decimals."""
    if title:
        print(f"\n{title}")
    if not rows:
        print("(no rows)")
        return
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)))


def write_results(
    name: str,
    rows: Sequence[Mapping[str, object]],
    *,
    target: Mapping[str, object] | None = None,
    params: Mapping[str, object] | None = None,
    **extra: object,
) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the rows, targets, parameters and machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": dict(params or {}),
        "target": dict(target or {}),
        "rows": [dict(r) for r in rows],
        **extra,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    root = Path(__file__).resolve().parent.parent
    print(f"\nwrote {path.relative_to(root) if path.is_relative_to(root) else path}")
    return path


def kubeapi_binaries(benchmark: str) -> dict[str, str]:
    """The kubeapi bed's server and etcd (``make kubeapi`` builds them), or exit non-zero saying
    that ``benchmark`` needs them and why there are none."""
    build = Path(__file__).resolve().parent.parent / "tools" / "kubeapi" / "build.py"
    result = subprocess.run(
        [sys.executable, str(build), "--offline", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        why = result.stderr.strip() or f"build.py exited {result.returncode}"
        sys.exit(f"{benchmark} needs the kubeapi bed, which is not built (make kubeapi): {why}")
    manifest = json.loads(result.stdout)
    return {"server": manifest["server"], "etcd": manifest["etcd"]}
