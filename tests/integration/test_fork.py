"""``headlesslb.sync.HeadlessClient`` across ``os.fork()``, and closed while a request is in flight.

A client made and used in the parent goes on working in a forked child, on connections of its
own: the child must drop (never use, never shut down) the sockets it inherited, take new locks
and start its own discovery thread. The parent's client must not notice. Results come back from
the child over a pipe; every wait has a deadline (a pre-fork lock held for ever is the classic
failure: grpc/grpc#41768), and the child is always reaped, killed if it does not exit.

Sync tests (not anyio-parametrized): each runs once.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import select
import signal
import socket
import struct
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from headlesslb import NotStarted, RefreshPolicy
from headlesslb.core.balancer import Balancer
from headlesslb.core.snapshot import Snapshot
from headlesslb.sync import HeadlessClient
from headlesslb.testing import LocalCluster

from .helpers import established_connections

PODS = ["web-0", "web-1", "web-2"]
KEYS = [f"user-{i}" for i in range(20)]
CHILD_TIMEOUT = 20.0
"""Longest the parent waits for one message from the child (it takes well under a second)."""


def sync_client(cluster: LocalCluster, **kwargs: Any) -> HeadlessClient:
    """A blocking client aimed at the cluster's DNS, named port ``http``."""
    kwargs.setdefault("port", "http")
    kwargs.setdefault("namespace", cluster.namespace)
    kwargs.setdefault("cluster_domain", cluster.domain)
    kwargs.setdefault("nameservers", [cluster.nameserver])
    kwargs.setdefault("timeout", 10.0)
    return HeadlessClient("web-hl", **kwargs)


def served(client: HeadlessClient, n: int) -> collections.Counter[str]:
    """``n`` sequential GETs through ``client``: which Pods answered."""
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        response = client.get("/")
        assert response.status_code == 200, response.text
        counts[response.json()["pod"]] += 1
    return counts


def served_by(client: HeadlessClient, key: str) -> str:
    """The Pod that answered a GET with ``key``."""
    response = client.get("/", key=key)
    assert response.status_code == 200, response.text
    pod: str = response.json()["pod"]
    return pod


def round_robin(counts: collections.Counter[str]) -> bool:
    """All three Pods answered, none more than once more often than another."""
    return sorted(counts) == PODS and max(counts.values()) - min(counts.values()) <= 1


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``check`` until it is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        time.sleep(0.02)


# -- this process's TCP sockets (from /proc: the fd table and the kernel's TCP table) ----------


@dataclass(frozen=True)
class TcpSocket:
    fd: int
    inode: str
    local_port: int
    remote_ip: str
    state: str
    """Two hex digits, as in /proc/net/tcp: ``01`` is ESTABLISHED."""


def pod_sockets(ips: set[str]) -> dict[str, TcpSocket]:
    """This process's TCP sockets to any of ``ips``, by socket inode, any state."""
    fds: dict[str, int] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{name}")
            if link.startswith("socket:["):
                fds[link[8:-1]] = int(name)
    found = {}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            remote_ip = _ip(remote.split(":")[0])
            if inode in fds and remote_ip in ips:
                found[inode] = TcpSocket(
                    fds[inode], inode, int(local.split(":")[1], 16), remote_ip, state
                )
    return found


def _ip(hex_ip: str) -> str:
    return ".".join(str(b) for b in reversed(bytes.fromhex(hex_ip)))


def tcp_bytes(fd: int) -> tuple[int, int]:
    """(bytes acknowledged by the peer, bytes received) of one TCP socket, from the kernel's
    ``struct tcp_info`` (``tcpi_bytes_acked``/``tcpi_bytes_received``, Linux ≥ 4.1): traffic
    that went over that very connection, whichever process sent it."""
    sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)  # a dup: closing it is harmless
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    finally:
        sock.close()
    if len(info) < 136:
        pytest.skip("this kernel's tcp_info has no byte counters")
    acked, received = struct.unpack_from("=QQ", info, 120)
    return int(acked), int(received)


# -- a forked child that reports over a pipe --------------------------------------------------


class Channel:
    """Newline-delimited JSON over a pair of pipe ends; every read has a deadline."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        while data:
            data = data[os.write(self.write_fd, data) :]

    def recv(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError(f"no message within {timeout} s")
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                raise EOFError("the other side closed the pipe")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Child(Channel):
    """The parent's side: messages, the child's final result, its exit status."""

    def __init__(self, pid: int, read_fd: int, write_fd: int) -> None:
        super().__init__(read_fd, write_fd)
        self.pid = pid
        self.exitcode: int | None = None

    def message(self, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        """The child's next message; its traceback becomes this test's failure."""
        try:
            message = self.recv(timeout)
        except (TimeoutError, EOFError) as exc:
            pytest.fail(f"forked child {self.pid}: {exc}")
        if "error" in message:
            pytest.fail(f"in the forked child:\n{message['error']}")
        return message

    def result(self, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        message = self.message(timeout)
        assert "result" in message, message
        result: dict[str, Any] = message["result"]
        return result

    def reap(self, timeout: float = 5.0) -> None:
        """Wait for the child to exit (it does once its pipe closes); kill it past ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)
        self.exitcode = os.waitstatus_to_exitcode(status)


@contextlib.contextmanager
def forked(body: Callable[[Channel], dict[str, Any]]) -> Iterator[Child]:
    """Run ``body(channel)`` in a forked child; its return value is sent as its result, an
    exception as its traceback. The child leaves with ``os._exit`` (never back into pytest),
    and is reaped, killed if need be, however the ``with`` block ends."""
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "fork() with threads"
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(down_w)
            os.close(up_r)
            channel = Channel(down_r, up_w)
            try:
                channel.send({"result": body(channel)})
                code = 0
            except BaseException:
                channel.send({"error": traceback.format_exc()})
        finally:
            os._exit(code)
    os.close(down_r)
    os.close(up_w)
    child = Child(pid, up_r, down_w)
    try:
        yield child
    finally:
        child.close()  # the child, if still waiting for a message, gets EOF and exits
        child.reap()


# -- the tests --------------------------------------------------------------------------------


def test_forked_child_balances_on_its_own_connections(cluster: LocalCluster) -> None:
    ips = {pod.ip for pod in cluster.pods("web")}
    with sync_client(cluster) as client:
        assert round_robin(served(client, 9))
        parent = pod_sockets(ips)
        # one keep-alive connection per Pod, in the client's pools when fork() copies them
        assert sorted(s.remote_ip for s in parent.values()) == sorted(ips), parent
        # Our own handles on those connections, to read their counters in the child: the
        # child's copies of the client's fds may be closed there once it drops the old pools.
        probes = {inode: os.dup(s.fd) for inode, s in parent.items()}

        def child_body(channel: Channel) -> dict[str, Any]:
            before = {inode: tcp_bytes(fd) for inode, fd in probes.items()}
            counts = served(client, 30)
            own = [s for inode, s in pod_sockets(ips).items() if inode not in parent]
            report = {
                "pid": os.getpid(),
                "counts": counts,
                "inherited_before": before,
                "inherited_after": {inode: tcp_bytes(fd) for inode, fd in probes.items()},
                "own_remote_ips": sorted({s.remote_ip for s in own if s.state == "01"}),
                "own_bytes": [tcp_bytes(s.fd) for s in own if s.state == "01"],
            }
            client.close()  # closing in the child must not shut the parent's connections down
            return report

        try:
            with forked(child_body) as child:
                report = child.result()
        finally:
            for fd in probes.values():
                os.close(fd)
        assert child.exitcode == 0
        assert report["pid"] == child.pid != os.getpid()

        assert round_robin(collections.Counter(report["counts"])), report["counts"]
        # The child had the parent's connections (fork copies fds) but sent and read nothing on
        # them: their kernel byte counters did not move while it made 30 requests...
        assert report["inherited_after"] == report["inherited_before"]
        # ...it connected to every Pod itself (the counters do see traffic on those).
        assert report["own_remote_ips"] == sorted(ips)
        assert all(acked > 0 and received > 0 for acked, received in report["own_bytes"])

        # The parent's connections survived the child and its close(): still ESTABLISHED (a
        # shutdown() by the child would have sent our FIN), and the client still balances.
        now = pod_sockets(ips)
        assert {inode: now[inode].state for inode in parent if inode in now} == {
            inode: "01" for inode in parent
        }
        assert round_robin(served(client, 9))


def test_forked_child_restarts_discovery(cluster: LocalCluster) -> None:
    within = cluster.ttl + 2.0
    with sync_client(cluster) as client, sync_client(cluster) as twin:
        assert round_robin(served(client, 3))
        # Same Service and configuration: one shared runtime on one thread.
        assert twin.transport.runtime is client.transport.runtime

        def child_body(channel: Channel) -> dict[str, Any]:
            first = served(client, 3)  # the first request starts the child's own thread
            served(twin, 1)  # ...which the twin joins: the child's registry started empty
            channel.send({"first": sorted(first)})
            channel.recv(CHILD_TIMEOUT)  # the parent has scaled the StatefulSet to 4
            deadline = time.monotonic() + within
            seen: collections.Counter[str] = collections.Counter()
            while time.monotonic() < deadline:
                seen += served(client, 1)
                if "web-3" in seen:
                    break
                time.sleep(0.02)
            return {
                "seen": seen,
                "endpoints": sorted(str(e.hostname) for e in client.endpoints()),
                "twin_endpoints": sorted(str(e.hostname) for e in twin.endpoints()),
                "shared": twin.transport.runtime is client.transport.runtime,
                "threads": [t.name for t in threading.enumerate()],
            }

        with forked(child_body) as child:
            assert child.message() == {"first": PODS}
            cluster.scale("web", 4)
            child.send({"scaled": 4})
            report = child.result()
        assert child.exitcode == 0
        assert "web-3" in report["seen"], f"the child never saw web-3 within {within} s: {report}"
        assert report["endpoints"] == report["twin_endpoints"] == [*PODS, "web-3"]
        assert report["shared"] and report["threads"].count("headlesslb discovery") == 1

        # The parent's own discovery thread went on running through the fork.
        wait_for(
            lambda: sorted(str(e.hostname) for e in client.endpoints()) == [*PODS, "web-3"],
            within,
            "the parent sees web-3",
        )


def test_close_from_another_thread_fails_the_request_in_flight(cluster: LocalCluster) -> None:
    ips = {pod.ip for pod in cluster.pods("web")}
    client = sync_client(cluster, timeout=60.0)
    try:
        assert round_robin(served(client, 3))
        cluster.reset_stats()
        for pod in PODS:
            cluster.slow(pod, 60.0)  # any answer would come long after the deadlines below

        outcome: dict[str, Any] = {}

        def request() -> None:
            try:
                outcome["response"] = client.get("/")
            except BaseException as exc:
                outcome["error"] = exc

        requester = threading.Thread(target=request, name="in flight", daemon=True)
        requester.start()
        wait_for(
            lambda: sum(cluster.requests_served(p) for p in PODS) == 1,
            10.0,
            "a Pod received the request",
        )
        closer = threading.Thread(target=client.close, name="closer", daemon=True)
        closer.start()
        closer.join(5.0)
        assert not closer.is_alive(), "close() blocked behind the request in flight"
        requester.join(5.0)
        assert not requester.is_alive(), "the request in flight went on after close()"

        error = outcome.get("error")
        assert isinstance(error, httpx.TransportError), outcome
        # Nothing was retried and nothing new was opened: no second request reached a Pod, no
        # connection is left, and the closed client refuses before touching the network.
        assert sum(cluster.requests_served(p) for p in PODS) == 1
        assert established_connections(ips) == 0
        with pytest.raises(NotStarted):
            client.get("/")
        assert established_connections(ips) == 0
        assert sum(cluster.requests_served(p) for p in PODS) == 1
    finally:
        client.close()


def test_a_child_forked_during_a_table_build_serves_keyed_requests(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The discovery thread builds the first Maglev table holding the balancer's lock;
    # its pause stops it there (in the parent only) while the main thread forks.
    parent = os.getpid()
    building, release = threading.Event(), threading.Event()
    prepare = Balancer.prepare

    def stop_here() -> None:
        if os.getpid() == parent and not release.is_set():
            building.set()
            release.wait(CHILD_TIMEOUT)

    def paused(self: Balancer, snapshot: Snapshot, pause: Any = None) -> None:
        prepare(self, snapshot, stop_here)

    monkeypatch.setattr(Balancer, "prepare", paused)  # bound when the runtime is made
    with sync_client(cluster) as client:
        assert building.wait(CHILD_TIMEOUT), "the table build never paused"

        def child_body(channel: Channel) -> dict[str, Any]:
            return {key: served_by(client, key) for key in KEYS}

        try:
            with forked(child_body) as child:
                # A child stuck on the inherited lock never answers: killed, and the test fails.
                pods = child.result(timeout=5.0)
        finally:
            release.set()
        assert child.exitcode == 0
        assert set(pods.values()) <= set(PODS)
        # The parent's build goes on, and its keys go where the child's went.
        assert {key: served_by(client, key) for key in pods} == pods


def test_forks_under_membership_churn_and_keyed_load(cluster: LocalCluster) -> None:
    # gunicorn --preload forks whenever it likes: here 30 times while DNS changes membership
    # every 50 ms (so the discovery thread is often mid-build) and two threads send keyed
    # requests. Every child must serve keyed requests at once, on its own.
    churn = RefreshPolicy(min_interval=0.02, max_interval=0.05)
    stop = threading.Event()
    failures: list[BaseException] = []
    sent = collections.Counter[str]()

    def recorded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported once the threads have stopped
                failures.append(exc)

        return run

    def scale() -> None:
        replicas = itertools.cycle([4, 5, 4, 3])
        while not stop.wait(0.05):
            cluster.scale("web", next(replicas))

    def keyed() -> None:
        keys = itertools.cycle(KEYS)
        while not stop.wait(0.002):  # busy, but leaving the children (2 cores) some CPU
            client.get("/", key=next(keys))
            sent[threading.current_thread().name] += 1

    def child_body(channel: Channel) -> dict[str, Any]:
        return {key: served_by(client, key) for key in KEYS[:3]}

    with sync_client(cluster, refresh=churn) as client:
        served_by(client, KEYS[0])
        memberships = client.transport.pool.snapshot.membership_version
        threads = [threading.Thread(target=recorded(scale), name="scaler")] + [
            threading.Thread(target=recorded(keyed), name=f"keyed-{i}") for i in range(2)
        ]
        for thread in threads:
            thread.start()
        try:
            for _ in range(30):
                with forked(child_body) as child:
                    # A child that waits for a lock its parent's threads held never answers:
                    # it fails the test and is killed.
                    pods = child.result(timeout=2.0)
                assert child.exitcode == 0
                assert set(pods.values()) <= {f"web-{i}" for i in range(5)}
        finally:
            stop.set()
            for thread in threads:
                thread.join(10.0)
        memberships = client.transport.pool.snapshot.membership_version - memberships
    assert not failures, failures
    assert all(sent[f"keyed-{i}"] for i in range(2)), sent
    assert memberships >= 10  # the parent's discovery saw the churn (a table build each)
