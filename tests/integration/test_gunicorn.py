"""``headlesslb.sync.HeadlessClient`` under a REAL ``gunicorn --preload`` with 3 sync workers.

The Flask app (``tests/integration/apps/flask_app.py``) makes one module-level client and sends
one request while it is imported, so the gunicorn master has the discovery thread running and a
keep-alive connection open when it forks its workers: every worker must drop what it inherited,
start its own discovery thread and balance on its own connections. All traffic is on loopback:
the Pods and DNS of a LocalCluster, and gunicorn on a listening socket this test binds to
127.0.0.1 (port 0) and hands over as ``fd://N``, so no port is guessed.

A sync test (not anyio-parametrized): it runs once.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from headlesslb.testing import LocalCluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.apps.flask_app:app"
PODS = ["web-0", "web-1", "web-2"]
WORKERS = 3
REQUESTS = 150
CONCURRENCY = 6
"""More requests in flight than workers: a busy sync worker cannot accept, so every connection
the kernel queues is taken by an idle one, and all workers get a share."""
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    url: str
    log: IO[bytes]

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-4000:]


@contextlib.contextmanager
def gunicorn(cluster: LocalCluster) -> Iterator[Gunicorn]:
    """gunicorn --preload, 3 sync workers, serving the Flask app; always stopped (killed as a
    process group if SIGTERM does not do it), whatever the test did."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "HLB_NAMESERVER": cluster.nameserver,
        "HLB_NAMESPACE": cluster.namespace,
        "HLB_DOMAIN": cluster.domain,
        "HLB_SERVICE": "web-hl",
    }
    command = [
        sys.executable, "-m", "gunicorn",
        "--preload",
        "--workers", str(WORKERS),
        "--worker-class", "sync",
        "--bind", f"fd://{listener.fileno()}",
        "--graceful-timeout", "5",
        "--timeout", "30",
        "--log-level", "warning",
        "--chdir", str(ROOT),
        APP,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        try:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                start_new_session=True,  # its own process group: workers included in cleanup
            )
        finally:
            listener.close()  # gunicorn has its own copy
        try:
            yield Gunicorn(process, f"http://127.0.0.1:{port}", log)
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> bool:
    """SIGTERM, wait with a deadline, then SIGKILL the whole group. True if SIGTERM sufficed."""
    graceful = True
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            graceful = False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # the master if it hung, and any stray worker
    if process.poll() is None:
        process.wait(STOP_TIMEOUT)
    return graceful


def _wait_until_serving(server: Gunicorn) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.process.returncode}:\n{server.output()}")
        try:
            response = httpx.get(server.url + "/", timeout=2.0)
            if response.status_code == 200:
                return
            last = response
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.05)
    pytest.fail(f"gunicorn not serving after {START_TIMEOUT} s ({last!r}):\n{server.output()}")


def _load(url: str, n: int) -> list[dict[str, Any]]:
    """``n`` GETs, ``CONCURRENCY`` at a time, each on a new connection (``Connection: close``;
    sync workers close anyway), so they spread over the workers. Every one must succeed."""
    with httpx.Client(headers={"Connection": "close"}, timeout=10.0) as http:

        def get(_: int) -> dict[str, Any]:
            response = http.get(url)
            assert response.status_code == 200, (response.status_code, response.text)
            body: dict[str, Any] = response.json()
            return body

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            return list(pool.map(get, range(n)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_preloaded_client_balances_in_every_gunicorn_worker(cluster: LocalCluster) -> None:
    with gunicorn(cluster) as server:
        _wait_until_serving(server)
        master = server.process.pid
        cluster.reset_stats()  # the warm-up and the readiness polls are not counted below

        answers = _load(server.url + "/", REQUESTS)

        by_worker: dict[int, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        for answer in answers:
            by_worker[answer["worker_pid"]][answer["pod"]] += 1
        assert master not in by_worker, "the master answered a request itself"
        assert len(by_worker) == WORKERS, {pid: dict(c) for pid, c in by_worker.items()}
        for pid, pods in by_worker.items():
            total = sum(pods.values())
            assert sorted(pods) == PODS, (pid, dict(pods))
            # round robin in each worker: each Pod gets about a third of that worker's requests
            assert all(n >= 0.2 * total for n in pods.values()), (pid, dict(pods))

        # The Pods saw exactly what the workers report: nothing lost, nothing sent twice.
        totals = collections.Counter(answer["pod"] for answer in answers)
        assert sum(totals.values()) == REQUESTS
        assert {pod: cluster.requests_served(pod) for pod in PODS} == {
            pod: totals[pod] for pod in PODS
        }

        # Same key, same Pod, whichever process sends it.
        keyed = _load(server.url + "/key/x", 60)
        assert len({a["worker_pid"] for a in keyed}) == WORKERS, keyed
        assert len({a["pod"] for a in keyed}) == 1, collections.Counter(a["pod"] for a in keyed)

        pinned = _load(server.url + "/ordinal/2", 60)
        assert len({a["worker_pid"] for a in pinned}) == WORKERS, pinned
        assert {a["pod"] for a in pinned} == {"web-2"}

        workers = set(by_worker)
        assert _stop(server.process), f"gunicorn ignored SIGTERM:\n{server.output()}"
        assert server.process.returncode == 0, server.output()
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers), "a worker outlived the master"
