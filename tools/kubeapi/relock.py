#!/usr/bin/env python3
"""Refresh ``debs.lock``: pin today's sid versions of exactly what the server's build imports.

Run it when ``build.py`` says a pinned version left sid, or to move to newer packages; then
review the diff, run ``make kubeapi`` and the bed's tests, and commit the lock.

How the set is found: the toolchain is the one ``golang-go`` depends on, plus ``etcd-server``;
the Go library packages are found by the imports themselves. ``go list -deps`` (GOPATH mode)
on ``server/`` names every package it cannot find; each is mapped to the Debian package that
ships its directory under /usr/share/gocode/src (from sid's Contents-all index, its hash checked
against the signed Release file), which is fetched and extracted, and the loop goes on until
nothing is missing. Debian's Depends would pull in about four times as much: most of a
library's dependencies serve code this server never imports.

Usage: relock.py [--go golang-1.NN]
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from build import (
    EXTRACT_EXCLUDES,
    LOCK_FILE,
    SERVER_DIR,
    SUITE,
    BuildError,
    Deb,
    PrivateApt,
    cache_dir,
    cache_lock,
    check_deb,
    go_env,
    say,
)

GOCODE = "usr/share/gocode/src/"
MAX_ROUNDS = 60  # the import graph's depth is about 15; more means something loops


def parse_packages(text: str) -> dict[str, dict[str, str]]:
    records: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t"):
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            records.setdefault(fields["Package"], fields)  # the index lists the newest first
    return records


def depends(record: dict[str, str]) -> list[str]:
    names = []
    for alternative in record.get("Depends", "").split(","):
        name = alternative.split("|")[0].strip().split(" ")[0].split(":")[0]
        if name:
            names.append(name)
    return names


def contents_dirs(apt: PrivateApt, into: Path) -> dict[str, list[str]]:
    """Directory under /usr/share/gocode/src -> packages shipping files there (Contents-all)."""
    release = next((apt.root / "lists").glob(f"*_dists_{SUITE}_InRelease"))
    m = re.search(r"^ ([0-9a-f]{64})\s+\d+\s+main/Contents-all\.gz$", release.read_text(), re.M)
    if not m:
        raise BuildError(f"no main/Contents-all.gz in {release}")
    target = into / "Contents-all.gz"
    started = time.monotonic()
    result = subprocess.run(
        [
            "/usr/lib/apt/apt-helper",
            *apt.options,
            "download-file",
            f"{apt.mirror}/dists/{SUITE}/main/Contents-all.gz",
            str(target),
            f"SHA256:{m.group(1)}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"downloading Contents-all.gz failed: {result.stderr}")
    dirs: dict[str, list[str]] = {}
    with gzip.open(target, "rt", errors="replace") as f:
        for line in f:
            if not line.startswith(GOCODE):
                continue
            path, _, owners = line.rstrip("\n").rpartition(" ")
            directory = path.strip().rpartition("/")[0][len(GOCODE) :]
            packages = [o.rpartition("/")[2] for o in owners.split(",")]
            known = dirs.setdefault(directory, [])
            known.extend(p for p in packages if p not in known)
    say(f"Contents-all: {len(dirs)} Go package directories ({time.monotonic() - started:.1f} s)")
    return dirs


def missing_imports(root: Path, goroot: Path, cache: Path) -> tuple[set[str], set[str]]:
    """(import paths go list cannot find, directories of those it found under the GOPATH)."""
    result = subprocess.run(
        [
            str(goroot / "bin/go"),
            "list",
            "-e",
            "-deps",
            "-f",
            "{{.ImportPath}}\t{{.Dir}}\t{{.Standard}}",
            ".",
        ],
        cwd=SERVER_DIR,
        env=go_env(root, goroot, cache),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and not result.stdout:
        raise BuildError(f"go list failed: {result.stderr}")
    missing, found = set(), set()
    for line in result.stdout.splitlines():
        path, directory, standard = line.split("\t")
        if standard == "true" or path.startswith("_/"):
            continue
        if directory:
            found.add(directory)
        else:
            missing.add(path)
    return missing, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--go", help="the toolchain, e.g. golang-1.27 (default: golang-go's)")
    args = parser.parse_args()
    cache = cache_dir()
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    started = time.monotonic()
    try:
        with cache_lock(cache), tempfile.TemporaryDirectory(dir=cache, prefix="relock-") as tmp:
            work = Path(tmp)
            apt = PrivateApt(cache, arch)
            apt.update()
            index = subprocess.run(
                ["/usr/lib/apt/apt-helper", "cat-file", str(apt.index_file())],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            packages = parse_packages(index)
            go = args.go or next(d for d in depends(packages["golang-go"]) if d.endswith("-go"))
            go = go.removesuffix("-go")
            chosen = [f"{go}-go", f"{go}-src", "etcd-server"]
            dirs = contents_dirs(apt, work)
            root = work / "root"
            root.mkdir()
            fetched: set[str] = set()
            for _round in range(MAX_ROUNDS):
                new = [p for p in chosen if p not in fetched]
                if new:
                    fetch_extract([deb_of(packages, p) for p in new], apt, work, root)
                    fetched.update(new)
                missing, found = missing_imports(
                    root, root / "usr/lib" / go.replace("golang-", "go-"), cache
                )
                if not missing:
                    break
                wanted = closure(chosen, packages)
                for path in sorted(missing):
                    # Go's minimal module compatibility: in GOPATH mode an import of m/vN/p is
                    # found at m/p when m/go.mod declares m/vN, which is how Debian ships them.
                    owners = dirs.get(path) or dirs.get(re.sub(r"/v\d+(?=/|$)", "", path, count=1))
                    if not owners:
                        raise BuildError(f"no Debian package in {SUITE} ships Go package {path}")
                    preferred = [o for o in owners if o in wanted] or sorted(owners)
                    if preferred[0] not in chosen:
                        chosen.append(preferred[0])
                        say(f"{path} -> {preferred[0]}")
            else:
                raise BuildError(f"imports still missing after {MAX_ROUNDS} rounds: {missing}")
            file_owners = go_file_owners(work, chosen)
            used = {file_owners[str(Path(d).relative_to(root))] for d in found}
            final = [p for p in chosen if p in used or not p.endswith("-dev")]
            write_lock([deb_of(packages, p) for p in sorted(final)], apt.mirror)
    except BuildError as e:
        say(f"FAILED: {e}")
        return e.status
    say(f"wrote {LOCK_FILE} ({len(final)} packages) in {time.monotonic() - started:.0f} s")
    return 0


def closure(names: list[str], packages: dict[str, dict[str, str]]) -> set[str]:
    """Debian's own dependency closure, to break ties where two packages ship one directory."""
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen or name not in packages:
            continue
        seen.add(name)
        stack.extend(depends(packages[name]))
    return seen


def deb_of(packages: dict[str, dict[str, str]], name: str) -> Deb:
    r = packages[name]
    return Deb(name, r["Version"], r["Architecture"], r["SHA256"], int(r["Size"]), r["Filename"])


def fetch_extract(debs: list[Deb], apt: PrivateApt, work: Path, root: Path) -> None:
    incoming = work / "incoming"
    incoming.mkdir(exist_ok=True)
    apt.download(debs, incoming)
    for d in debs:
        (path,) = incoming.glob(f"{d.name}_*.deb")
        check_deb(path, d)
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(path)], stdout=subprocess.PIPE
        ) as p:
            subprocess.run(
                ["tar", "-x", "--no-same-owner", "-C", str(root)]
                + [f"--exclude={e}" for e in EXTRACT_EXCLUDES],
                stdin=p.stdout,
                check=True,
            )
        # Keep the file list to tell, at the end, which package each used directory came from.
        listing = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True
        ).stdout
        names = subprocess.run(
            ["tar", "-t"], input=listing, capture_output=True, check=True
        ).stdout.decode()
        (work / f"{d.name}.list").write_text(names)
        shutil.move(str(path), str(work / path.name))


def go_file_owners(work: Path, chosen: list[str]) -> dict[str, str]:
    """Directory (relative to the tree) -> the fetched package whose .go files are in it."""
    owners: dict[str, str] = {}
    for name in chosen:
        listing = work / f"{name}.list"
        if listing.exists():
            for line in listing.read_text().splitlines():
                if line.endswith(".go"):
                    owners.setdefault(line.removeprefix("./").rpartition("/")[0], name)
    return owners


def write_lock(debs: list[Deb], mirror: str) -> None:
    today = datetime.date.today().isoformat()
    lines = [
        f"# Written by tools/kubeapi/relock.py on {today} from Debian {SUITE} ({mirror}).",
        "# What tools/kubeapi/build.py fetches (apt-get download name=version, then checked",
        "# against the sha256 here). Refresh with relock.py; do not edit by hand.",
        "# package version arch sha256 size pool-path",
    ]
    width = max(len(d.name) for d in debs)
    for d in debs:
        lines.append(f"{d.name:<{width}} {d.version} {d.arch} {d.sha256} {d.size} {d.filename}")
    LOCK_FILE.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
