#!/usr/bin/env python3
"""Fetch, extract and build the kubeapi test bed: etcd and our kubeapi-server, from Debian sid.

What it does, each step skipped when its result is already in the cache:

1. Download the .debs pinned in ``debs.lock`` (name, version, sha256) with ``apt-get download``
   through a private apt state (sid, the mirror this machine already uses, signatures checked
   with Debian's archive keyring), then check every file against the lock's sha256. Nothing is
   installed and the system's apt sources are not touched.
2. Extract them with ``dpkg-deb`` into a private tree (tests and testdata left out).
3. Build ``server/`` in GOPATH mode with the extracted Go toolchain and Debian's Go library
   sources (no module proxy, no network), and copy etcd beside it.

The cache is shared by every checkout of the project on this machine:
``$HEADLESSLB_KUBEAPI_CACHE``, else ``$XDG_CACHE_HOME/headlesslb/kubeapi``, else
``~/.cache/headlesslb/kubeapi``. A file lock makes concurrent runs wait for each other.

Exit status: 0 built or up to date; 1 a failure to fix (a hash mismatch, a compile error: the
message says what to do); 75 the pinned .debs cannot be had: the archive could not be reached,
or a pinned version is gone from sid, which keeps only its newest (``make test`` then goes on
and the bed's tests skip, saying why and how to refresh the pins).

Usage: build.py [--offline] [--json] [--quiet]
  --offline  never touch the network: build only from .debs already in the cache
  --json     print the binaries' paths as JSON on stdout (messages go to stderr)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOCK_FILE = HERE / "debs.lock"
SERVER_DIR = HERE / "server"
SUITE = "sid"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
EX_UNREACHABLE = 75
UNREACHABLE_NOTE = "last-unreachable.txt"  # why the last fetch could not reach the archive
# The versions worth reporting (the manifest, the docs): the rest is their dependencies.
MANIFEST_PACKAGES = (
    "etcd-server",
    "golang-k8s-apiserver-dev",
    "golang-k8s-api-dev",
    "golang-k8s-apimachinery-dev",
    "golang-k8s-client-go-dev",
)
# Bumped when the way binaries are built changes (flags, layout), so old builds are not reused.
RECIPE = "2"
# Left out of the extracted tree: the build reads none of it (a quarter of the bytes).
EXTRACT_EXCLUDES = (
    "*_test.go",
    "*/testdata/*",
    "./usr/share/doc/*",
    "./usr/share/man/*",
    "./usr/share/lintian/*",
    "./usr/share/go-*/test/*",
)


class BuildError(Exception):
    """A failure with a message that says what to do; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Deb:
    """One pinned package of the lock file."""

    name: str
    version: str
    arch: str
    sha256: str
    size: int
    filename: str  # the archive's pool path

    @property
    def basename(self) -> str:
        return self.filename.rsplit("/", 1)[-1]


def read_lock(path: Path = LOCK_FILE) -> list[Deb]:
    debs = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, version, arch, sha256, size, filename = line.split()
        debs.append(Deb(name, version, arch, sha256, int(size), filename))
    if not debs:
        raise BuildError(f"{path} lists no package")
    return debs


def cache_dir() -> Path:
    if explicit := os.environ.get("HEADLESSLB_KUBEAPI_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "headlesslb" / "kubeapi"


def say(message: str) -> None:
    print(f"kubeapi: {message}", file=sys.stderr, flush=True)


def mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another build using {cache}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


# -- apt, privately ------------------------------------------------------------------------------


def system_mirror() -> str:
    """The Debian mirror this machine's own sources use (deb822 or one-line format)."""
    if env := os.environ.get("HEADLESSLB_KUBEAPI_MIRROR"):
        return env.rstrip("/")
    candidates = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        for line in path.read_text().splitlines():
            m = re.match(r"URIs:\s*(\S+/debian)\s*$", line)
            if m:
                return m.group(1)
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            m = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s", line)
            if m:
                return m.group(1)
    return DEFAULT_MIRROR


class PrivateApt:
    """apt-get on a state directory of our own: sid's index, never the system's sources."""

    def __init__(self, cache: Path, arch: str) -> None:
        self.root = cache / "apt"
        for sub in ("lists/partial", "cache/archives/partial", "etc"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.mirror = system_mirror()
        (self.root / "etc/sources.list").write_text(
            f"deb [signed-by={KEYRING}] {self.mirror} {SUITE} main\n"
        )
        (self.root / "status").touch()
        self.options = [
            f"-oDir::State::Lists={self.root / 'lists'}",
            f"-oDir::State::status={self.root / 'status'}",
            f"-oDir::Etc::SourceList={self.root / 'etc/sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            "-oDir::Etc::Preferences=/dev/null",
            "-oDir::Etc::PreferencesParts=/dev/null",
            f"-oDir::Cache={self.root / 'cache'}",
            "-oDir::Cache::pkgcache=",
            "-oDir::Cache::srcpkgcache=",
            f"-oAPT::Architecture={arch}",
            f"-oAPT::Architectures={arch}",
            "-oAcquire::Languages=none",
            # Downloads land in our root-owned cache; apt's _apt sandbox user cannot write there.
            "-oAPT::Sandbox::User=root",
            # Pinned sha256s make an old index harmless; this machine's mirror may be a snapshot
            # whose Valid-Until has passed. The signature is still checked.
            "-oAcquire::Check-Valid-Until=false",
        ]
        self.updated = False

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["apt-get", "-q", *self.options, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )

    def update(self) -> None:
        if self.updated:
            return
        started = time.monotonic()
        result = self.run("update")
        failed = result.returncode != 0 or re.search(r"^(W|E): ", result.stderr, re.M)
        if failed:
            detail = result.stderr.strip() or result.stdout.strip()
            unreachable = re.search(
                r"Could not (resolve|connect)|Temporary failure|Failed to fetch|"
                r"Connection (failed|timed out|refused)|Unable to connect|No route",
                detail,
            )
            if unreachable:
                raise BuildError(
                    f"Debian's archive at {self.mirror} is unreachable ({SUITE}):\n{detail}",
                    EX_UNREACHABLE,
                )
            raise BuildError(f"apt-get update of {SUITE} at {self.mirror} failed:\n{detail}")
        self.updated = True
        say(f"sid index from {self.mirror}, signature checked ({time.monotonic() - started:.1f} s)")

    def index_file(self) -> Path:
        result = self.run("indextargets", "--format", "$(FILENAME)", "Created-By: Packages")
        lines = result.stdout.split()
        if result.returncode != 0 or not lines:
            raise BuildError(f"no Packages index in {self.root / 'lists'}: {result.stderr}")
        return Path(lines[0])

    def download(self, debs: list[Deb], into: Path) -> None:
        """apt-get download each name=version (checked against the signed index) into ``into``."""
        self.update()
        result = self.run("download", *(f"{d.name}={d.version}" for d in debs), cwd=into)
        if result.returncode == 0:
            return
        gone = [
            d
            for d in debs
            if re.search(
                rf"Version '{re.escape(d.version)}' for '{re.escape(d.name)}' was not found"
                rf"|Unable to locate package {re.escape(d.name)}\b",
                result.stderr,
            )
        ]
        if gone:
            names = ", ".join(f"{d.name} {d.version}" for d in gone)
            raise BuildError(
                f"pinned in {LOCK_FILE.name} but no longer in Debian {SUITE}: {names}.\n"
                "sid keeps only its newest versions. Refresh the pins and commit the new lock:\n"
                "    python3 tools/kubeapi/relock.py\n"
                "(or put the exact .debs, with the lock's sha256, into "
                f"{into.parent / 'debs'})",
                # sid moves weekly: a fresh machine must not fail every test run for it. The bed's
                # tests skip and print this, which says how to bring them back.
                EX_UNREACHABLE,
            )
        if re.search(
            r"Could not (resolve|connect)|Failed to fetch|Temporary failure", result.stderr
        ):
            raise BuildError(
                f"downloading from {self.mirror} failed:\n{result.stderr}", EX_UNREACHABLE
            )
        raise BuildError(f"apt-get download failed:\n{result.stderr.strip()}")


# -- the steps ----------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch(debs: list[Deb], cache: Path, *, offline: bool) -> tuple[int, int]:
    """Make every pinned .deb present in the cache and verified. Returns (count, bytes) fetched."""
    store = cache / "debs"
    store.mkdir(parents=True, exist_ok=True)
    missing = [d for d in debs if not (store / d.basename).is_file()]
    if missing and offline:
        why = ""
        with contextlib.suppress(OSError):
            why = "\nThe last fetch failed: " + (cache / UNREACHABLE_NOTE).read_text().strip()
        raise BuildError(
            f"{len(missing)} pinned .debs are not in {store} (first: {missing[0].name}); "
            f"`make kubeapi` fetches them.{why}",
            EX_UNREACHABLE,
        )
    fetched = 0
    if missing:
        arch = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
        foreign = sorted({d.arch for d in debs} - {arch, "all"})
        if foreign:
            raise BuildError(
                f"{LOCK_FILE.name} pins {'/'.join(foreign)} packages; this machine is {arch}. "
                "Run tools/kubeapi/relock.py on this architecture."
            )
        apt = PrivateApt(cache, arch)
        with tempfile.TemporaryDirectory(dir=cache, prefix="incoming-") as tmp:
            incoming = Path(tmp)
            apt.download(missing, incoming)
            for d in missing:
                got = list(incoming.glob(f"{d.name}_*.deb"))
                if len(got) != 1:
                    raise BuildError(f"apt-get download left {got} for {d.name}")
                check_deb(got[0], d)
                fetched += got[0].stat().st_size
                got[0].rename(store / d.basename)
    return len(missing), fetched


def check_deb(path: Path, deb: Deb) -> None:
    digest, size = sha256_of(path), path.stat().st_size
    if digest != deb.sha256 or size != deb.size:
        path.unlink()
        raise BuildError(
            f"{path.name}: sha256 {digest}, {size} bytes; "
            f"{LOCK_FILE.name} pins {deb.sha256}, {deb.size} bytes. The archive changed a "
            "published version (or the download is corrupt): refresh with "
            "`python3 tools/kubeapi/relock.py` and review the diff."
        )


def extract(debs: list[Deb], cache: Path, lock_digest: str) -> tuple[Path, bool]:
    """The extracted tree for this lock, made once; returns (root, whether it was made now)."""
    root = cache / "root" / lock_digest[:16]
    if (root / ".complete").exists():
        return root, False
    for old in (cache / "root").glob("*"):
        if old != root:
            shutil.rmtree(old, ignore_errors=True)  # one tree at a time: it is the big one
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    excludes = [f"--exclude={pattern}" for pattern in EXTRACT_EXCLUDES]
    for d in debs:
        # Every file is re-checked before it is unpacked: the cache is only as good as its hashes.
        path = cache / "debs" / d.basename
        check_deb(path, d)
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(path)], stdout=subprocess.PIPE
        ) as p:
            tar = subprocess.run(
                ["tar", "-x", "--no-same-owner", "-C", str(partial), *excludes],
                stdin=p.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
        if p.returncode != 0 or tar.returncode != 0:
            raise BuildError(f"extracting {path.name} failed: {tar.stderr.strip()}")
    (partial / ".complete").write_text(lock_digest + "\n")
    partial.rename(root)
    return root, True


def toolchain(debs: list[Deb], root: Path) -> tuple[Path, str]:
    """GOROOT from the lock's golang-X.Y-go package, and kube's version from k8s.io/apiserver."""
    go = [d for d in debs if re.fullmatch(r"golang-\d+\.\d+-go", d.name)]
    apiserver = [d for d in debs if d.name == "golang-k8s-apiserver-dev"]
    if len(go) != 1 or len(apiserver) != 1:
        raise BuildError(f"{LOCK_FILE.name} must pin one Go toolchain and golang-k8s-apiserver-dev")
    goroot = root / "usr/lib" / go[0].name.removesuffix("-go").replace("golang-", "go-")
    # k8s.io/apiserver 0.X.Y is Kubernetes 1.X.Y: what /version reports, as a real server would.
    upstream = re.match(r"0\.(\d+)\.(\d+)", apiserver[0].version)
    if not upstream:
        raise BuildError(f"cannot read a Kubernetes version from {apiserver[0].version}")
    return goroot, f"v1.{upstream.group(1)}.{upstream.group(2)}"


def go_env(root: Path, goroot: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        GOROOT=str(goroot),
        GOPATH=str(root / "usr/share/gocode"),
        GO111MODULE="off",  # Debian's library sources are a GOPATH, not modules
        GOPROXY="off",
        GOFLAGS="",
        GOTOOLCHAIN="local",
        GOTELEMETRY="off",
        GOENV="off",
        GOCACHE=str(cache / "gocache"),
        CGO_ENABLED="0",
        PATH=f"{goroot / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    return env


def build(debs: list[Deb], root: Path, cache: Path, out: Path) -> None:
    goroot, kube_version = toolchain(debs, root)
    env = go_env(root, goroot, cache)
    unformatted = subprocess.run(
        [str(goroot / "bin/gofmt"), "-l", str(SERVER_DIR)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    ).stdout.split()
    if unformatted:
        raise BuildError(f"not gofmt-formatted: {', '.join(unformatted)}")
    major, minor = kube_version[1:].split(".")[:2]
    ldflags = "-s -w " + " ".join(
        f"-X k8s.io/component-base/version.{k}={v}"
        for k, v in (("gitVersion", kube_version), ("gitMajor", major), ("gitMinor", minor))
    )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = subprocess.run(
        [
            str(goroot / "bin/go"),
            "build",
            "-trimpath",
            "-ldflags",
            ldflags,
            "-o",
            str(partial / "kubeapi-server"),
            ".",
        ],
        cwd=SERVER_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"go build of {SERVER_DIR} failed:\n{result.stderr.strip()}")
    shutil.copy2(root / "usr/bin/etcd", partial / "etcd")
    manifest = {
        "server": str(out / "kubeapi-server"),
        "etcd": str(out / "etcd"),
        "kubernetes": kube_version,
        "packages": {d.name: d.version for d in debs if d.name in MANIFEST_PACKAGES},
        "go": goroot.name,
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def source_digest(lock_bytes: bytes) -> str:
    h = hashlib.sha256(RECIPE.encode() + b"\0" + lock_bytes)
    for path in sorted(SERVER_DIR.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(SERVER_DIR)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def prune_builds(cache: Path, keep: Path, count: int = 3) -> None:
    """Keep the newest few builds (checkouts on other branches may want theirs)."""
    builds = sorted(
        (p for p in (cache / "bin").glob("*") if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[count - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def ensure(*, offline: bool = False) -> tuple[dict[str, object], bool]:
    """Make the binaries for the current lock and sources: (the build's manifest, built now)."""
    lock_bytes = LOCK_FILE.read_bytes()
    debs = read_lock()
    cache = cache_dir()
    out = cache / "bin" / source_digest(lock_bytes)[:16]
    manifest = out / "manifest.json"
    if manifest.exists():
        os.utime(out)
        return dict(json.loads(manifest.read_text())), False
    with cache_lock(cache):
        if manifest.exists():  # built by the run we waited for
            return dict(json.loads(manifest.read_text())), False
        total = time.monotonic()
        started = time.monotonic()
        count, size = fetch(debs, cache, offline=offline)
        if count:
            say(f"fetched {count} .debs ({mb(size)}) in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        root, made = extract(debs, cache, hashlib.sha256(lock_bytes).hexdigest())
        if made:
            took = time.monotonic() - started
            say(f"extracted {len(debs)} packages ({mb(dir_size(root))}) in {took:.1f} s")
        started = time.monotonic()
        build(debs, root, cache, out)
        say(f"built kubeapi-server in {time.monotonic() - started:.1f} s")
        prune_builds(cache, out)
        say(
            f"ready in {time.monotonic() - total:.1f} s: {out} "
            f"(cache {mb(dir_size(cache))} in {cache})"
        )
        return dict(json.loads(manifest.read_text())), True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", action="store_true", help="never fetch: use cached .debs only")
    parser.add_argument("--json", action="store_true", help="print the build's manifest as JSON")
    parser.add_argument("--quiet", action="store_true", help="say nothing when up to date")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        manifest, built = ensure(offline=args.offline)
    except BuildError as e:
        say(f"FAILED: {e}")
        if e.status == EX_UNREACHABLE and not args.offline:
            note = cache_dir() / UNREACHABLE_NOTE
            note.parent.mkdir(parents=True, exist_ok=True)
            note.write_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {e}\n")
        return e.status
    (cache_dir() / UNREACHABLE_NOTE).unlink(missing_ok=True)
    if args.json:
        print(json.dumps(manifest))
    elif not args.quiet and not built:
        where = Path(str(manifest["server"])).parent
        say(f"up to date in {time.monotonic() - started:.2f} s: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
