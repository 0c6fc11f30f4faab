"""headlesslb's own work per request, counted in instructions: a figure machine noise cannot move.

``overhead.py`` measures rates against nginx Pods, and on a shared 2-core VM its rows move by
±0.05 from run to run: more than a change to the request path is worth. This script counts what
the client process executes per request instead, under valgrind's callgrind, with the I/O taken
out: every httpcore connection pool (``ConnectionPool.handle_request``,
``AsyncConnectionPool.handle_async_request``, of httpcore and httpcore2) answers at once from
memory with nginx's own response (``200``, its five headers, ``ok``). What is left is the
client's Python: httpx's or httpx2's client, and headlesslb's balancing, accounting and report.
The count repeats from run to run to within 0.2 % (``PYTHONHASHSEED=0`` fixes the dict
layouts), whatever else the machine does: a change of 1 % in a row is the code's.

For each flavour (httpx, httpx2) and backend (sync, asyncio), the rows are:

- ``plain``: the library's own ``Client`` / ``AsyncClient`` to one address (the baseline);
- ``HeadlessClient`` and ``HeadlessTransport`` (in the library's client): over 3 Pods of a
  static discovery, round robin.

Each client sends ``--requests`` requests after 300 to warm up; only the measured loop is
counted (``--toggle-collect`` on ``functools.reduce``, which drives it: the asyncio rows run
each request with ``loop.run_until_complete``, the same for every row). ``extra`` is a row's
instructions per request less the baseline's; ``ratio`` is baseline / row.

    python benchmarks/own_cost.py [--requests 2000] [--flavours httpx,httpx2] [--jobs N]

Rows are counted ``--jobs`` at a time (default: one per core); counts do not depend on it.

It needs valgrind (``make bench`` installs it). With ``compare.py --same-script --keys
library,backend,client --metrics instructions,extra``, two commits are counted side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import print_table, write_results

INSTALL = "apt-get install -y valgrind"
CLIENTS = ("plain", "HeadlessClient", "HeadlessTransport")
FLAVOURS = {
    "httpx": ("httpx", "httpcore", "headlesslb", "headlesslb.sync"),
    "httpx2": ("httpx2", "httpcore2", "headlesslb.httpx2", "headlesslb.httpx2.sync"),
}
"""Each flavour's library, its httpcore, and headlesslb's async and sync modules for it."""
PODS = ("127.0.9.1:8080", "127.0.9.2:8080", "127.0.9.3:8080")
"""Never connected to: the pools answer from memory."""
HEADERS = [
    (b"Server", b"nginx/1.22.1"),
    (b"Date", b"Tue, 08 Dec 2026 00:00:00 GMT"),
    (b"Content-Type", b"text/plain"),
    (b"Content-Length", b"2"),
    (b"Connection", b"keep-alive"),
]
"""What overhead.py's nginx answers, header for header."""
WARM_UP = 300


# --- one measurement: runs inside valgrind, in a process of its own ------------------------------
class _Body:
    """nginx's body, from memory, for either backend."""

    def __iter__(self) -> Any:
        yield b"ok"

    async def __aiter__(self) -> Any:
        yield b"ok"

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _answer_from_memory(core: Any) -> None:
    """Every connection pool of ``core`` (httpcore or httpcore2) answers at once."""

    def response() -> Any:
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": b"OK"}
        return core.Response(200, headers=HEADERS, content=_Body(), extensions=extensions)

    async def handle_async_request(self: Any, request: Any) -> Any:
        return response()

    core.ConnectionPool.handle_request = lambda self, request: response()
    core.AsyncConnectionPool.handle_async_request = handle_async_request


def _client(flavour: str, backend: str, name: str) -> Any:
    library, core, aio, sync = (importlib.import_module(m) for m in FLAVOURS[flavour])
    _answer_from_memory(core)
    from headlesslb.testing import StaticDiscovery

    shell = sync if backend == "sync" else aio
    client_class = library.Client if backend == "sync" else library.AsyncClient
    where: dict[str, Any] = {"port": 8080, "discovery": StaticDiscovery(list(PODS))}
    if name == "plain":
        return client_class(base_url=f"http://{PODS[0]}")
    if name == "HeadlessClient":
        return shell.HeadlessClient("web-hl.default", **where)
    transport = shell.HeadlessTransport("web-hl.default", **where)
    return client_class(transport=transport, base_url="http://web-hl.default:8080")


def _measure(flavour: str, backend: str, name: str, requests: int) -> None:
    """The measured process: warm up, then send ``requests`` inside ``functools.reduce``."""
    client = _client(flavour, backend, name)
    if backend == "sync":
        for _ in range(WARM_UP):
            client.get("/")
        functools.reduce(lambda _, __: client.get("/"), range(requests), None)
        client.close()
        return
    loop = asyncio.new_event_loop()
    for _ in range(WARM_UP):
        loop.run_until_complete(client.get("/"))
    functools.reduce(lambda _, __: loop.run_until_complete(client.get("/")), range(requests), None)
    loop.run_until_complete(client.aclose())
    loop.close()


# --- the run: one valgrind process per row --------------------------------------------------------
def _valgrind() -> str:
    found = shutil.which("valgrind")
    if found is None:
        raise SystemExit(f"own_cost.py counts instructions with valgrind, not installed: {INSTALL}")
    return found


def _count(valgrind: str, flavour: str, backend: str, name: str, requests: int) -> float:
    """Instructions per request of one row, from a process under callgrind."""
    with tempfile.TemporaryDirectory(prefix="own-cost-") as tmp:
        command = [
            valgrind,
            "--tool=callgrind",
            f"--callgrind-out-file={Path(tmp) / 'callgrind.out'}",
            "--toggle-collect=functools_reduce",
            sys.executable,
            __file__,
            "--measure",
            f"{flavour},{backend},{name}",
            "--requests",
            str(requests),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    collected = [line for line in done.stderr.splitlines() if "Collected :" in line]
    if done.returncode != 0 or not collected:
        raise SystemExit(f"{flavour} {backend} {name} failed ({done.returncode}):\n{done.stderr}")
    return int(collected[-1].split()[-1]) / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--flavours", default=",".join(FLAVOURS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # flavour,backend,client: one row
    args = parser.parse_args()
    if args.measure:
        flavour, backend, name = args.measure.split(",")
        _measure(flavour, backend, name, args.requests)
        return
    valgrind = _valgrind()
    import headlesslb

    print(f"headlesslb from {Path(headlesslb.__file__).parent}")
    cells = [
        (flavour, backend, name)
        for flavour in args.flavours.split(",")
        for backend in ("sync", "asyncio")
        for name in CLIENTS
    ]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        counted = pool.map(lambda cell: _count(valgrind, *cell, args.requests), cells)
        counts = dict(zip(cells, counted, strict=True))
    rows: list[dict[str, object]] = []
    for (flavour, backend, name), count in counts.items():
        plain = counts[flavour, backend, "plain"]
        rows.append(
            {
                "library": flavour,
                "backend": backend,
                "client": name,
                "instructions": round(count),
                "extra": round(count - plain),
                "ratio": round(plain / count, 3),
            }
        )
    print_table(
        rows,
        title="Instructions per request, the pools answering from memory (callgrind; extra and"
        " ratio against the plain client)",
    )
    write_results(
        "own_cost",
        rows,
        params={
            "requests": args.requests,
            "warm_up": WARM_UP,
            "pods": len(PODS),
            "flavours": args.flavours,
        },
        headlesslb=str(Path(headlesslb.__file__).parent),
    )


if __name__ == "__main__":
    main()
