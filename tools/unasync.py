"""Generate the request-path shells from the one written by hand, or check that they are current.

The async httpx shell is written once (:data:`SOURCES`); every other flavour is generated from
it by renaming, as httpcore generates ``_sync/`` from ``_async/``:

- sync: ``async def`` → ``def``, ``await x`` → ``x``, ``AsyncClient`` → ``Client``,
  ``aclose`` → ``close``, ... (:data:`SYNC_NAMES`), and the modules of what each mode writes by
  hand (:mod:`headlesslb.aio.host`, :mod:`headlesslb.io.concurrency`) to their blocking twins;
- httpx2: ``httpx`` → ``httpx2``, ``httpcore`` → ``httpcore2`` (the libraries share their
  API), the flavour module of :mod:`headlesslb.io.flavours` included.

Each generated file is checked in (readable, typed, its tracebacks land in real lines), sorted
and formatted by ruff, and starts by naming its source. ``make lint`` runs ``--check``: a
generated file edited by hand, or left stale by an edit of its source, fails it.

    python tools/unasync.py            # write the generated files
    python tools/unasync.py --check    # exit 1 naming each file that differs
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SOURCES = (
    "headlesslb/options.py",
    "headlesslb/io/sender.py",
    "headlesslb/aio/transport.py",
    "headlesslb/aio/client.py",
)
"""The shell written by hand: async, httpx (its options' types are httpx's, not its mode's:
one copy per library)."""

MARK = "# Written once: tools/unasync.py generates the other flavours from this file."
"""The line of a source file that its generated copies replace with the name of their source."""

SYNC_NAMES = {
    "AsyncBaseTransport": "BaseTransport",
    "AsyncByteStream": "SyncByteStream",
    "AsyncClient": "Client",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncHTTPTransport": "HTTPTransport",
    "AsyncHost": "SyncHost",
    "AsyncIterable": "Iterable",
    "AsyncIterator": "Iterator",
    "AsyncSender": "SyncSender",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "_aclose": "_close",
    "aclose": "close",
    "aread": "read",
    "asynccontextmanager": "contextmanager",
    "handle_async_request": "handle_request",
}
"""Names the blocking shell spells differently (whole words only)."""

SYNC_MODULES = {
    "headlesslb.aio.host": "headlesslb.sync.host",
    "headlesslb.io.concurrency": "headlesslb.sync.concurrency",
}
"""What each mode writes by hand: the async module and its blocking twin."""

HTTPX2_NAMES = {"httpx": "httpx2", "httpcore": "httpcore2"}
"""The libraries of the httpx2 flavour (whole words: ``httpx2`` itself is left alone)."""


@dataclass(frozen=True)
class Flavour:
    """One generated flavour: where its modules go, and what it renames."""

    name: str
    modules: dict[str, str]
    """Each source module and its twin in this flavour (the shell's own imports follow)."""
    generates: frozenset[str]
    """The source modules whose twins this flavour writes (another flavour may share one)."""
    sync: bool
    httpx2: bool


def _flavour(name: str, package: str, *, sync: bool, httpx2: bool) -> Flavour:
    modules = {
        "headlesslb.options": "headlesslb.httpx2.options" if httpx2 else "headlesslb.options",
        "headlesslb.io.sender": f"{package}.sender",
        "headlesslb.aio.transport": f"{package}.transport",
        "headlesslb.aio.client": f"{package}.client",
    }
    generates = set(modules) - {"headlesslb.options"}
    if httpx2 and not sync:  # options are typed by library, not by mode: one copy per library
        generates.add("headlesslb.options")
    return Flavour(name, modules, frozenset(generates), sync=sync, httpx2=httpx2)


FLAVOURS = (
    _flavour("sync httpx", "headlesslb.sync", sync=True, httpx2=False),
    _flavour("async httpx2", "headlesslb.httpx2", sync=False, httpx2=True),
    _flavour("sync httpx2", "headlesslb.httpx2.sync", sync=True, httpx2=True),
)


def _words(text: str, names: dict[str, str]) -> str:
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
    return pattern.sub(lambda m: names[m.group(1)], text)


def rewrite(text: str, source: str, flavour: Flavour) -> str:
    """``text`` of the module ``source`` (a path) as ``flavour`` spells it (before ruff)."""
    if MARK not in text:
        raise SystemExit(f"{source}: the line {MARK!r} is missing")
    text = text.replace(
        MARK, f"# Generated from {source} by tools/unasync.py: edit that file, not this one."
    )
    modules = dict(flavour.modules)
    if flavour.sync:
        modules.update(SYNC_MODULES)
    text = re.sub(
        r"\b(" + "|".join(re.escape(m) for m in modules) + r")\b",
        lambda m: modules[m.group(1)],
        text,
    )
    if flavour.sync:
        # A loop that only re-yields is `yield from` where it can be (ruff's UP028).
        text = re.sub(
            r"^(\s*)async for (\w+) in ([\w.]+):\n\s+yield \2\n",
            r"\1yield from \3\n",
            text,
            flags=re.MULTILINE,
        )
        text = re.sub(r"\basync (def|with|for)\b", r"\1", text)
        text = re.sub(r"\bawait ", "", text)
        text = re.sub(r"  # noqa: ASYNC\d+", "", text)
        text = _words(text, SYNC_NAMES)
    if flavour.httpx2:
        text = _words(text, HTTPX2_NAMES)
    return text


def _ruff(text: str, path: str) -> str:
    """``text`` with its imports sorted and formatted as ``make lint`` wants it."""
    ruff = [sys.executable, "-m", "ruff"]
    sorted_ = subprocess.run(
        [*ruff, "check", "--select", "I,RUF022", "--fix", "--quiet", "--stdin-filename", path, "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if sorted_.returncode not in (0, 1):
        raise SystemExit(f"ruff check failed on {path}:\n{sorted_.stderr}")
    formatted = subprocess.run(
        [*ruff, "format", "--stdin-filename", path, "-"],
        input=sorted_.stdout,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return formatted.stdout


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every generated file under ``root`` and what it must contain."""
    files: dict[Path, str] = {}
    for source in SOURCES:
        text = (root / source).read_text()
        module = source.removesuffix(".py").replace("/", ".")
        for flavour in FLAVOURS:
            if module not in flavour.generates:
                continue
            target = flavour.modules[module].replace(".", "/") + ".py"
            files[root / target] = _ruff(rewrite(text, source, flavour), target)
    return files


def main(argv: list[str] | None = None) -> int:
    """Write the generated files, or (``--check``) say which differ."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a generated file differs"
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the checkout to work on [this one]"
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    stale = []
    for path, text in generated(root).items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(root))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        names = "\n  ".join(str(p) for p in stale)
        print(
            f"generated shells differ from their source (edited by hand, or stale):\n  {names}\n"
            "edit the source (tools/unasync.py SOURCES) and run: python tools/unasync.py",
            file=sys.stderr,
        )
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
