"""Copy the tested code the docs show into the docs' pages, so they read right everywhere.

A page shows code from a file the suite runs (an example, a test) in a fenced block after a
marker comment naming it, the whole file or a section of it::

    <!-- snippet: examples/sharded_cache.py:client -->
    ```python
    ...the lines between "# --8<-- [start:client]" and "# --8<-- [end:client]"...
    ```

The block holds the code itself, not an include directive, so the repository browser and any
Markdown viewer show it as the site does (an include directive showed there raw). The copy
cannot drift: ``python tools/snippets.py`` rewrites every block from its file, and
``python tools/snippets.py --check`` (and tests/packaging/test_docs.py) fails naming each stale
block. Section markers use pymdownx.snippets' syntax, which the files already carry.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- snippet: (?P<source>[^\s:]+)(?::(?P<section>[\w-]+))? -->\n")
FENCE = re.compile(r"^(?P<fence>```+)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)\n", re.S | re.M)
SECTION = re.compile(r"^\s*#\s*--8<--\s*\[(?P<edge>start|end):(?P<name>[\w-]+)\]\s*$")


def section(source: str, name: str | None) -> str:
    """A file's text, or its named section, without the section marker lines."""
    text = (ROOT / source).read_text()
    lines = text.splitlines(keepends=True)
    if name is None:
        return "".join(line for line in lines if not SECTION.match(line))
    inside = False
    kept: list[str] = []
    for line in lines:
        marker = SECTION.match(line)
        if marker and marker["name"] == name:
            if marker["edge"] == "end":
                return "".join(kept)
            inside = True
        elif marker is None and inside:
            kept.append(line)
    raise ValueError(f"{source}: no section {name!r} (start and end markers)")


def render(page: str) -> str:
    """The page with every marked block rewritten from its source."""
    out: list[str] = []
    position = 0
    for marker in re.finditer(MARKER.pattern, page, re.M):
        fence = FENCE.match(page, marker.end())
        if fence is None:
            raise ValueError(f"{marker.group(0).strip()} is not followed by a fenced block")
        body = section(marker["source"], marker["section"])
        out.append(page[position : marker.end()])
        out.append(f"{fence['fence']}{fence['info']}\n{body}{fence['fence']}\n")
        position = fence.end()
    out.append(page[position:])
    return "".join(out)


def pages() -> list[Path]:
    """Every Markdown page that may carry snippets: the docs and the README."""
    return sorted([*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"])


def stale() -> list[str]:
    """The pages whose blocks differ from their sources (relative paths)."""
    return [str(p.relative_to(ROOT)) for p in pages() if render(p.read_text()) != p.read_text()]


def main() -> int:
    """Rewrite the pages' blocks, or with --check list the stale ones and exit 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args()
    if args.check:
        found = stale()
        for name in found:
            print(f"{name}: a snippet differs from its source; run python tools/snippets.py")
        return 1 if found else 0
    for page in pages():
        text = page.read_text()
        new = render(text)
        if new != text:
            page.write_text(new)
            print(f"rewrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
