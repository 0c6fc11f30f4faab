"""Request overhead: headlesslb against the plain HTTP client to one Pod, async and sync.

The baseline is what the issue names: a plain client to one Pod (``base_url`` = that Pod, the
same relative paths), while headlesslb balances over the Pods of a headless Service, found
through a real DNS server (a LocalCluster's). Rounds alternate between the clients so machine
noise hits them all alike (the nginx rows and the cluster's sync rows start each round one client
later; the cluster's async rows run plain, then headlesslb); the ratio of medians is the figure
(target ≥ 0.95). Two kinds of Pods (``--pods``):

**nginx** (the default): a static ``200 ok`` from nginx, started by this script on the
addresses of DNS-only LocalCluster Pods (``serve=False``), with its own config in a temporary
directory. A Python Pod's latency would hide the client's own cost; nginx's static answer costs
its server next to nothing, so these rows show the client's. For every entry of ``FLAVOURS``
(httpx: ``headlesslb``, ``headlesslb.sync``; httpx2: ``headlesslb.httpx2``,
``headlesslb.httpx2.sync``), each headlesslb shell against the plain client of the same library
(a flavour that does not import, httpx2 not installed or an older headlesslb under compare.py,
is skipped, saying why):

- async on asyncio: ``HeadlessClient`` and ``AsyncClient(transport=HeadlessTransport(...))``
  against a plain ``AsyncClient``, sequentially and with 16 in flight;
- sync: ``HeadlessClient`` and ``Client(transport=HeadlessTransport(...))`` against a plain
  ``Client``, sequentially (one thread) and with 8 threads.

Each row gives the ratio of median rates, its min–max over rounds (each round's own ratio),
and the client process's median CPU per request (``time.process_time``, every thread:
headlesslb's background work counts), plain and headless, and their ratio (plain / headless).
With the client the bottleneck, that CPU ratio is the rate ratio the client's own work allows;
it moves far less than the rates when other processes share the cores. It needs nginx on the
PATH (``make bench`` installs Debian's nginx-light).

**cluster**: the LocalCluster's own Python Pods (3 of them, all on one event loop in the
cluster's process, so the server side costs the same for every client), httpx only:

- async: ``HeadlessClient`` vs ``httpx.AsyncClient``, on asyncio and trio, 1 and 16 concurrent;
- sync: ``headlesslb.sync.HeadlessClient`` and ``httpx.Client(transport=headlesslb.sync.
  HeadlessTransport(...))`` vs ``httpx.Client``, sequentially and with 8 threads.

A reference row, plain ``httpx.Client`` instances taking the 3 Pods in turn, shows what
spreading the same load over 3 Pods costs by itself, with no headlesslb code at all: with 8
threads it is most of the gap between one Pod and three. Its cost is in the client process
(about half again as many voluntary context switches per request, GIL hand-offs, with the same
Pod-side CPU per request: the sync rows report voluntary context switches per request), so a
last row sends through the sync transport pinned to the very Pod of the baseline
(``ordinal=0``, parsed from the request's extensions each time): headlesslb's own cost, without
the spreading.

    python benchmarks/overhead.py [--pods nginx|cluster|all] [--flavours httpx,httpx2]
        [--nginx-rounds 15] [--nginx-requests 600] [--nginx-pods 3]
        [--rounds 7] [--requests 1500]   # the cluster rows'

Every row names its ``pods`` and ``library``: with ``--keys pods,library,backend,client,
concurrency``, ``compare.py --same-script`` runs these rows on an older commit's headlesslb.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import itertools
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
from _common import print_table, write_results

import headlesslb
import headlesslb.sync
from headlesslb import HeadlessClient
from headlesslb.core.options import EXTENSION
from headlesslb.testing import LocalCluster

# --- flavours --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flavour:
    """An HTTP library and headlesslb's shells over it: one entry, a full set of nginx rows."""

    name: str
    library: str
    """The module of the plain baseline (``AsyncClient``, ``Client``, ``Limits``)."""
    aio: str
    """The module with the async ``HeadlessClient`` and ``HeadlessTransport``."""
    sync: str
    """The module with the sync ones."""

    def modules(self) -> tuple[ModuleType, ModuleType, ModuleType]:
        """The three modules, imported (ImportError when this flavour is not there)."""
        library, aio, sync = (
            importlib.import_module(m) for m in (self.library, self.aio, self.sync)
        )
        return library, aio, sync


FLAVOURS = (
    Flavour("httpx", library="httpx", aio="headlesslb", sync="headlesslb.sync"),
    Flavour("httpx2", library="httpx2", aio="headlesslb.httpx2", sync="headlesslb.httpx2.sync"),
)
SHELLS = ("HeadlessClient", "HeadlessTransport")
"""The headlesslb rows of a flavour, each measured against the plain client."""
PATH = "/bench"

# --- nginx Pods ------------------------------------------------------------------------------

INSTALL = "apt-get install -y nginx-light"

_NGINX_CONF = """\
# Private to one benchmark run: nothing of the system's config, pid or log files is used.
worker_processes 1;
error_log {dir}/error.log warn;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # A client keeps its connections for the whole run: nginx's default closes one every 1000.
    keepalive_requests 100000000;
    default_type text/plain;
    server {{
{listen}
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def _nginx_binary() -> str:
    # Debian puts it in /usr/sbin, which a non-root PATH may lack.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit(
            f"overhead.py's fast Pods need nginx, which is not installed: {INSTALL}"
            " (make bench runs it), or pass --pods cluster"
        )
    return found


def _tail(log: Path) -> str:
    """What nginx logged (it may have died before opening its log)."""
    return log.read_text()[-2000:] if log.exists() else "(no error log)"


@contextlib.contextmanager
def _nginx(addresses: list[tuple[str, int]]) -> Iterator[None]:
    """One nginx process (one worker: the client is what is measured, and it needs the other
    core) listening on every ``(ip, port)``, until the block ends."""
    binary = _nginx_binary()
    with tempfile.TemporaryDirectory(prefix="overhead-nginx-") as tmp:
        listen = "\n".join(f"        listen {ip}:{port};" for ip, port in addresses)
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(dir=tmp, listen=listen))
        log = Path(tmp) / "error.log"
        command = [binary, "-p", tmp, "-c", str(conf), "-e", str(log)]
        pid = Path(tmp) / "nginx.pid"
        proc = subprocess.Popen([*command, "-g", f"daemon off; pid {pid};"])
        try:
            deadline = time.monotonic() + 10.0
            # The pid file is written once every address is bound; a connection then proves
            # each one serves (and not some other listener on it).
            for address in addresses:
                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"nginx exited ({proc.returncode}): {_tail(log)}")
                    if pid.exists():
                        with contextlib.suppress(OSError), socket.create_connection(address, 0.5):
                            break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"nginx not listening on {address}: {_tail(log)}")
                    time.sleep(0.05)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass(frozen=True)
class Pods:
    """A headless Service whose Pods are nginx addresses, as a client reaches them."""

    service: str
    one: str
    """``http://ip:port`` of the first Pod: the baseline's."""
    where: dict[str, Any]
    """nameservers and namespace: the cluster's DNS instead of resolv.conf."""


@contextlib.contextmanager
def _nginx_pods(cluster: LocalCluster, replicas: int) -> Iterator[Pods]:
    # DNS-only Pods (serve=False): the cluster gives them addresses and publishes their A and
    # SRV records; nginx serves on those addresses.
    pods = cluster.add_statefulset("nginx", replicas, lb=None, serve=False)
    with _nginx([(pod.ip, pod.port) for pod in pods]):
        yield Pods(
            "nginx-hl",
            f"http://{pods[0].ip}:{pods[0].port}",
            {"nameservers": [cluster.nameserver], "namespace": cluster.namespace},
        )


# --- nginx rows ------------------------------------------------------------------------------

Sample = tuple[float, float]
"""One client's round: requests per second, client CPU µs per request."""


def _orders(names: list[str], rounds: int) -> Iterator[list[str]]:
    """Each round starts one client later: no client always runs right after another."""
    for round_ in range(rounds):
        k = round_ % len(names)
        yield names[k:] + names[:k]


async def _async_sample(
    send: Callable[[], Awaitable[Any]], requests: int, concurrency: int
) -> Sample:
    per_task = requests // concurrency

    async def task() -> None:
        for _ in range(per_task):
            response = await send()
            assert response.status_code == 200

    cpu, start = time.process_time(), time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(task)
    done = per_task * concurrency
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done * 1e6


def _sync_sample(send: Callable[[], Any], requests: int, threads: int) -> Sample:
    per_thread = requests // threads

    def worker() -> None:
        for _ in range(per_thread):
            assert send().status_code == 200

    cpu, start = time.process_time(), time.perf_counter()
    if threads == 1:
        worker()  # on this thread: the sequential rows have no thread hand-off at all
    else:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(worker) for _ in range(threads)]:
                future.result()
    done = per_thread * threads
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done * 1e6


def _nginx_rows(
    flavour: Flavour, backend: str, concurrency: int, samples: dict[str, list[Sample]]
) -> list[dict[str, object]]:
    plain = samples["plain"]
    plain_rps = statistics.median(rate for rate, _ in plain)
    plain_cpu = statistics.median(cpu for _, cpu in plain)
    rows: list[dict[str, object]] = []
    for shell in SHELLS:
        rps = statistics.median(rate for rate, _ in samples[shell])
        cpu = statistics.median(cpu for _, cpu in samples[shell])
        by_round = [h / p for (h, _), (p, _) in zip(samples[shell], plain, strict=True)]
        rows.append(
            {
                "pods": "nginx",
                "library": flavour.name,
                "backend": backend,
                "client": shell,
                "concurrency": concurrency,
                "plain_rps": round(plain_rps, 1),
                "headless_rps": round(rps, 1),
                "ratio": round(rps / plain_rps, 3),
                "ratio_min": round(min(by_round), 3),
                "ratio_max": round(max(by_round), 3),
                "plain_cpu_us": round(plain_cpu, 1),
                "cpu_us": round(cpu, 1),
                "extra_cpu_us": round(cpu - plain_cpu, 1),
                "cpu_ratio": round(plain_cpu / cpu, 3),
            }
        )
    return rows


KEEPALIVE = 600.0
"""Seconds every client keeps an idle connection: the whole run. With the default 4 s, the
connections idle out between rounds, and httpcore's sync pool can close an expired idle
connection it has just handed to another thread's request (encode/httpcore#1110): seen here
once as ``ReadError: [Errno 9] Bad file descriptor`` in plain httpx with 8 threads."""


def _limits(lib: ModuleType) -> Any:
    """Every client's limits, plain and headlesslb (per Pod) alike: headlesslb's default
    connection counts, with idle connections kept for the run (:data:`KEEPALIVE`)."""
    try:
        from headlesslb.core.limits import DEFAULT_LIMITS
    except ImportError:  # an older headlesslb (compare.py --same-script): its unbounded default
        return lib.Limits(
            max_connections=None, max_keepalive_connections=None, keepalive_expiry=KEEPALIVE
        )
    return lib.Limits(
        max_connections=DEFAULT_LIMITS.max_connections,
        max_keepalive_connections=DEFAULT_LIMITS.max_keepalive_connections,
        keepalive_expiry=KEEPALIVE,
    )


async def _nginx_async(
    flavour: Flavour, pods: Pods, rounds: int, requests: int, concurrency: int
) -> list[dict[str, object]]:
    lib, aio, _ = flavour.modules()
    limits = _limits(lib)
    async with (
        lib.AsyncClient(base_url=pods.one, limits=limits) as plain,
        aio.HeadlessClient(pods.service, port="http", limits=limits, **pods.where) as client,
        lib.AsyncClient(
            transport=aio.HeadlessTransport(pods.service, port="http", limits=limits, **pods.where),
            base_url=f"http://{pods.service}",
        ) as via_transport,
    ):
        sends = {
            "plain": functools.partial(plain.get, PATH),
            "HeadlessClient": functools.partial(client.get, PATH),
            "HeadlessTransport": functools.partial(via_transport.get, PATH),
        }
        for send in sends.values():
            await _async_sample(send, 200, concurrency)  # connections and caches warm
        samples: dict[str, list[Sample]] = {name: [] for name in sends}
        for order in _orders(list(sends), rounds):
            for name in order:
                samples[name].append(await _async_sample(sends[name], requests, concurrency))
    return _nginx_rows(flavour, "asyncio", concurrency, samples)


def _nginx_sync(
    flavour: Flavour, pods: Pods, rounds: int, requests: int, threads: int
) -> list[dict[str, object]]:
    lib, _, sync = flavour.modules()
    limits = _limits(lib)
    with (
        lib.Client(base_url=pods.one, limits=limits) as plain,
        sync.HeadlessClient(pods.service, port="http", limits=limits, **pods.where) as client,
        lib.Client(
            transport=sync.HeadlessTransport(
                pods.service, port="http", limits=limits, **pods.where
            ),
            base_url=f"http://{pods.service}",
        ) as via_transport,
    ):
        sends = {
            "plain": functools.partial(plain.get, PATH),
            "HeadlessClient": functools.partial(client.get, PATH),
            "HeadlessTransport": functools.partial(via_transport.get, PATH),
        }
        for send in sends.values():
            _sync_sample(send, 200, threads)
        samples: dict[str, list[Sample]] = {name: [] for name in sends}
        for order in _orders(list(sends), rounds):
            for name in order:
                samples[name].append(_sync_sample(sends[name], requests, threads))
    return _nginx_rows(flavour, "sync", concurrency=threads, samples=samples)


def _flavours(names: str | None) -> tuple[list[Flavour], dict[str, str]]:
    """The flavours to measure, and why each skipped one was (only when none were named)."""
    known = {f.name: f for f in FLAVOURS}
    if names is not None:
        unknown = set(names.split(",")) - set(known)
        if unknown:
            raise SystemExit(f"unknown flavour(s) {sorted(unknown)}: choose among {list(known)}")
        chosen = [known[name] for name in names.split(",")]
        for flavour in chosen:
            flavour.modules()  # named: a missing one is an error, not a skipped row
        return chosen, {}
    chosen, skipped = [], {}
    for flavour in FLAVOURS:
        try:
            flavour.modules()
        except ImportError as error:
            skipped[flavour.name] = repr(error)
            print(f"skipping the {flavour.name} rows: {error!r}")
        else:
            chosen.append(flavour)
    return chosen, skipped


# --- LocalCluster rows ----------------------------------------------------------------------

Send = Callable[[], Awaitable[httpx.Response]]


async def _rate(send: Send, requests: int, concurrency: int) -> float:
    """Requests per second for ``requests`` sends split over ``concurrency`` workers."""
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            response = await send()
            assert response.status_code == 200

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return per_worker * concurrency / (time.perf_counter() - start)


async def _compare(
    cluster: LocalCluster, rounds: int, requests: int, concurrency: int
) -> dict[str, float]:
    one_pod = cluster.url(cluster.pods("web")[0].name)
    limits = _limits(httpx)
    async with (
        httpx.AsyncClient(base_url=one_pod, limits=limits) as plain,
        HeadlessClient(
            "web-hl", port="http", nameservers=[cluster.nameserver], namespace=cluster.namespace
        ) as headless,
    ):

        async def send_plain() -> httpx.Response:
            return await plain.get("/bench")

        async def send_headless() -> httpx.Response:
            return await headless.get("/bench")

        await _rate(send_plain, 200, concurrency)  # warm up connections on both
        await _rate(send_headless, 200, concurrency)
        plain_rates, headless_rates = [], []
        for _ in range(rounds):
            plain_rates.append(await _rate(send_plain, requests, concurrency))
            headless_rates.append(await _rate(send_headless, requests, concurrency))
    plain_rps = statistics.median(plain_rates)
    headless_rps = statistics.median(headless_rates)
    return {
        "plain_rps": round(plain_rps, 1),
        "headless_rps": round(headless_rps, 1),
        "ratio": round(headless_rps / plain_rps, 3),
        "ratio_of_best": round(max(headless_rates) / max(plain_rates), 3),
    }


def _switches() -> int:
    """Voluntary context switches of this process so far (threads blocking: GIL hand-offs)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def _sync_rate(
    send: Callable[[], httpx.Response], requests: int, threads: int, switches: list[float]
) -> float:
    """Requests per second for ``requests`` blocking sends split over ``threads`` threads;
    appends the voluntary context switches per request to ``switches``."""
    per_thread = requests // threads

    def worker() -> None:
        for _ in range(per_thread):
            assert send().status_code == 200

    before = _switches()
    start = time.perf_counter()
    if threads == 1:
        worker()
    else:
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(worker) for _ in range(threads)]:
                future.result()
    elapsed = time.perf_counter() - start
    switches.append((_switches() - before) / (per_thread * threads))
    return per_thread * threads / elapsed


def _compare_sync(
    cluster: LocalCluster, rounds: int, requests: int, threads: int
) -> list[dict[str, object]]:
    first = cluster.pods("web")[0]
    assert first.name.endswith("-0")  # the Pod that ordinal=0 pins to
    one_pod = cluster.url(first.name)
    limits = _limits(httpx)
    where = {"nameservers": [cluster.nameserver], "namespace": cluster.namespace}
    every_pod = [
        httpx.Client(base_url=cluster.url(pod.name), limits=limits) for pod in cluster.pods("web")
    ]
    in_turn = itertools.cycle(every_pod)  # next() on a cycle is atomic under the GIL
    with (
        contextlib.ExitStack() as stack,
        httpx.Client(base_url=one_pod, limits=limits) as plain,
        headlesslb.sync.HeadlessClient("web-hl", port="http", **where) as client,  # type: ignore[arg-type]
        httpx.Client(
            transport=headlesslb.sync.HeadlessTransport("web-hl", port="http", **where),  # type: ignore[arg-type]
            base_url="http://web-hl",
        ) as via_transport,
    ):
        for each in every_pod:
            stack.enter_context(each)
        sends: dict[str, Callable[[], httpx.Response]] = {
            "plain": lambda: plain.get("/bench"),
            "plain, 3 Pods in turn (reference)": lambda: next(in_turn).get("/bench"),
            "sync client": lambda: client.get("/bench"),
            "httpx.Client + sync transport": lambda: via_transport.get("/bench"),
            "sync transport, pinned to that Pod (reference)": lambda: via_transport.get(
                "/bench", extensions={EXTENSION: {"ordinal": 0}}
            ),
        }
        for send in sends.values():
            _sync_rate(send, 200, threads, [])  # warm up connections everywhere
        rates: dict[str, list[float]] = {name: [] for name in sends}
        switches: dict[str, list[float]] = {name: [] for name in sends}
        names = list(sends)
        for round_ in range(rounds):
            # Each round starts one row later: no row always runs right after another.
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                rates[name].append(_sync_rate(sends[name], requests, threads, switches[name]))
    plain_rps = statistics.median(rates["plain"])
    rows: list[dict[str, object]] = []
    for name in (
        "plain, 3 Pods in turn (reference)",
        "sync client",
        "httpx.Client + sync transport",
        "sync transport, pinned to that Pod (reference)",
    ):
        rps = statistics.median(rates[name])
        rows.append(
            {
                "pods": "cluster",
                "library": "httpx",
                "backend": "sync",
                "client": name,
                "concurrency": threads,
                "plain_rps": round(plain_rps, 1),
                "headless_rps": round(rps, 1),
                "ratio": round(rps / plain_rps, 3),
                "ratio_of_best": round(max(rates[name]) / max(rates["plain"]), 3),
                "switches_per_request": round(statistics.median(switches[name]), 2),
                "plain_switches_per_request": round(statistics.median(switches["plain"]), 2),
            }
        )
    return rows


def _cluster_rows(cluster: LocalCluster, rounds: int, requests: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    cluster.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
    for backend in ("asyncio", "trio"):
        for concurrency in (1, 16):
            result = anyio.run(_compare, cluster, rounds, requests, concurrency, backend=backend)
            rows.append(
                {"pods": "cluster", "library": "httpx", "backend": backend}
                | {"client": "HeadlessClient", "concurrency": concurrency}
                | result
            )
    for threads in (1, 8):
        rows.extend(_compare_sync(cluster, rounds, requests, threads))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", choices=("nginx", "cluster", "all"), default="nginx")
    parser.add_argument("--flavours", help="comma-separated (default: every one that imports)")
    parser.add_argument("--nginx-rounds", type=int, default=15)
    parser.add_argument("--nginx-requests", type=int, default=600)
    parser.add_argument("--nginx-pods", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7, help="the cluster rows'")
    parser.add_argument("--requests", type=int, default=1500, help="the cluster rows'")
    args = parser.parse_args()
    # compare.py runs this script on another tree's headlesslb: say which one was measured.
    print(f"headlesslb from {Path(headlesslb.__file__).parent}")
    flavours, skipped = _flavours(args.flavours) if args.pods != "cluster" else ([], {})
    if flavours:
        _nginx_binary()  # fail before the cluster starts, not after
    nginx_rows: list[dict[str, object]] = []
    cluster_rows: list[dict[str, object]] = []
    with LocalCluster() as cluster:
        if flavours:
            with _nginx_pods(cluster, args.nginx_pods) as pods:
                for flavour in flavours:
                    for concurrency in (1, 16):
                        nginx_rows += anyio.run(
                            _nginx_async,
                            flavour,
                            pods,
                            args.nginx_rounds,
                            args.nginx_requests,
                            concurrency,
                            backend="asyncio",
                        )
                    for threads in (1, 8):
                        nginx_rows += _nginx_sync(
                            flavour, pods, args.nginx_rounds, args.nginx_requests, threads
                        )
        if args.pods != "nginx":
            cluster_rows = _cluster_rows(cluster, args.rounds, args.requests)
    if nginx_rows:
        print_table(
            nginx_rows,
            title=f"headlesslb vs the plain client to one Pod, {args.nginx_pods} nginx Pods"
            " (req/s medians, ratio and its min-max over alternating rounds, client CPU µs"
            " per request)",
        )
    if cluster_rows:
        print_table(
            cluster_rows,
            title="headlesslb vs plain httpx (3 LocalCluster Pods, req/s, medians, alternating)",
        )
    write_results(
        "overhead",
        nginx_rows + cluster_rows,
        target={"ratio": ">= 0.95"},
        params=vars(args) | {"headlesslb": str(Path(headlesslb.__file__).parent)},
        skipped=skipped,
    )


if __name__ == "__main__":
    main()
