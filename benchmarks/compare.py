"""One benchmark, two commits, one run: does a change cost anything?

Checks ``--old`` (and ``--new``, default: this working tree) out into temporary worktrees, then
runs the same benchmark script from each tree in turn, ``--runs`` times, alternating which goes
first, each with its own tree on ``PYTHONPATH`` (the same interpreter and dependencies). Noise
on a shared machine drifts over minutes, so taking turns puts both commits under the same
drift; the figure per row is the median over runs of each, and their ratio.

Rows are matched by ``--keys`` (the columns that name a row) and compared on ``--metrics``.

    python benchmarks/compare.py --old 2cd61b7 --keys backend,client,concurrency \\
        --metrics ratio overhead.py -- --pods cluster --rounds 5 --requests 1500

With ``--same-script`` both commits run this tree's copy of the script (and of ``_common.py``),
each with its own ``headlesslb``: rows that an older commit's script lacks, such as overhead.py's
nginx rows, measured on its library:

    python benchmarks/compare.py --old 66fff73 --same-script \\
        --keys pods,library,backend,client,concurrency --metrics ratio,cpu_us,extra_cpu_us \\
        overhead.py -- --nginx-rounds 5

Each run writes its results into a temporary directory (``HEADLESSLB_BENCH_RESULTS``, for
scripts whose ``_common.py`` reads it; an older one writes into its own tree), never over this
tree's ``benchmarks/results``; the comparison itself goes there, as ``compare_<script>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import print_table, write_results

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _worktree(rev: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(into), rev],
        check=True,
    )
    return into


def _run(
    tree: Path, script_tree: Path, script: str, args: list[str], out: Path
) -> list[dict[str, Any]]:
    """Run ``script`` from ``script_tree`` with ``tree`` first on the path; the rows it wrote
    (into ``out``, or for an older ``_common.py``, into ``script_tree``'s results)."""
    started = time.time()
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "HEADLESSLB_BENCH_RESULTS": str(out)}
    subprocess.run(
        [sys.executable, str(script_tree / "benchmarks" / script), *args],
        cwd=tree,
        env=env,
        check=True,
    )
    written = list(out.glob("*.json")) or [
        p
        for p in (script_tree / "benchmarks" / "results").glob("*.json")
        if p.stat().st_mtime >= started
    ]
    if len(written) != 1:
        raise SystemExit(f"{script} in {script_tree} wrote {len(written)} result files, not one")
    rows: list[dict[str, Any]] = json.loads(written[0].read_text())["rows"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the commit to compare against")
    parser.add_argument("--new", default=None, help="a commit (default: this working tree)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--same-script",
        action="store_true",
        help="run this tree's script for both commits (each with its own headlesslb)",
    )
    parser.add_argument("--keys", required=True, help="comma-separated columns naming a row")
    parser.add_argument("--metrics", required=True, help="comma-separated columns to compare")
    parser.add_argument("script", help="a script in benchmarks/, e.g. overhead.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="after --: the script's own")
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    keys, metrics = options.keys.split(","), options.metrics.split(",")
    values: dict[tuple[str, tuple[Any, ...], str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        trees = {"old": _worktree(options.old, Path(tmp) / "old")}
        trees["new"] = ROOT if options.new is None else _worktree(options.new, Path(tmp) / "new")
        try:
            for run in range(options.runs):
                for label in ("old", "new") if run % 2 == 0 else ("new", "old"):
                    print(f"\n== run {run + 1}/{options.runs}: {label}", flush=True)
                    script_tree = ROOT if options.same_script else trees[label]
                    out = Path(tmp) / "results" / f"{run + 1}-{label}"
                    for row in _run(trees[label], script_tree, options.script, args, out):
                        ident = tuple(row.get(k) for k in keys)
                        for metric in metrics:
                            if isinstance(row.get(metric), int | float):
                                values[(label, ident, metric)].append(float(row[metric]))
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                        check=False,
                    )
    rows = []
    idents = sorted({(i, m) for (_, i, m) in values}, key=str)
    for ident, metric in idents:
        old, new = values.get(("old", ident, metric)), values.get(("new", ident, metric))
        if not old or not new:
            continue
        row: dict[str, object] = dict(zip(keys, ident, strict=True))
        row["metric"] = metric
        old_median, new_median = statistics.median(old), statistics.median(new)
        row["old_median"] = old_median
        row["new_median"] = new_median
        # A metric that is 0 in the old runs (a baseline's own "extra") has no ratio.
        row["new_over_old"] = new_median / old_median if old_median else None
        row["old_runs"] = " ".join(f"{v:.3f}" for v in old)
        row["new_runs"] = " ".join(f"{v:.3f}" for v in new)
        rows.append(row)
    print_table(
        rows, title=f"{options.script}: {options.old} (old) against {options.new or 'HEAD+'}"
    )
    stem = Path(options.script).stem
    write_results(
        f"compare_{stem}",
        rows,
        params={
            "old": options.old,
            "new": options.new or "working tree",
            "runs": options.runs,
            "same_script": options.same_script,
            "args": args,
        },
    )


if __name__ == "__main__":
    main()
