"""LocalCluster: the synchronous control API, in the caller's process.

Only the standard library (and headlesslb's own pure argument checks) is imported here; dnspython
and uvicorn are loaded by the cluster process alone, which keeps ``import headlesslb.testing``
cheap.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import multiprocessing
import multiprocessing.context
import os
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Final, cast

from ..core.environ import CLUSTER_DOMAIN, NAMESERVERS, NAMESPACE
from ..core.names import validate_domain, validate_label
from ..core.validate import count, number
from ._apps import AppSpec, ClientKwargs, app_spec
from ._model import (
    ClusterError,
    DnsMode,
    DnsQueryCount,
    Options,
    PodInfo,
    ServiceInfo,
    zone_name,
)


class _Auto(enum.Enum):
    AUTO = "auto"


AUTO: Final = _Auto.AUTO
"""Default for Service names: ``<workload>-hl`` (headless) and ``<workload>-lb`` (LB)."""

_CALL_TIMEOUT = 60.0
_CLOSE_TIMEOUT = 5.0


_EXTRA_MODULES = ("uvicorn", "dns")
"""What the ``testing`` extra installs that the cluster process needs (dnspython is ``dns``)."""


def _install_hint(module: str) -> str:
    return (
        f"LocalCluster needs the module {module!r}, which is not installed:"
        " pip install 'headlesslb[testing]'"
    )


def _missing_dependency() -> str | None:
    """Why the cluster process could not start for want of a module, checked without importing
    it; None when every module of the ``testing`` extra is installed."""
    for module in _EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken parent package, or sys.modules[m] = None
            found = False
        if not found:
            return _install_hint(module)
    return None


def child_main(conn: Connection, options: Options, environ: dict[str, str]) -> None:
    """Entry point of the cluster process (imports the heavy modules there, not here).

    ``environ`` is the parent's environment when the cluster started: a forkserver child would
    otherwise inherit the forkserver's, as it was when the first cluster started, and a user's
    app reading a variable set since would not see it.
    """
    os.environ.clear()
    os.environ.update(environ)
    try:
        from ._child import run
    except ImportError as exc:
        # Tell the parent what is missing instead of dying with "exited with code 1".
        missing = (exc.name or "").partition(".")[0]
        if missing and missing != "headlesslb":
            message = f"{_install_hint(missing)} ({exc})"
        else:
            message = f"cannot import the cluster process's code: {exc!r}"
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", message))
        conn.close()
        raise SystemExit(1) from None
    run(conn, options)


_ALIASED_PRELOAD = ("httpx2", "httpcore2", "uvicorn", "dns.message", "dns.rrset")
"""The forkserver's preload in a process that aliased httpx: the cluster's third-party modules,
none of which imports httpx (``tests/testing/test_aliased.py`` would fail if one did)."""


def _httpx_aliased() -> bool:
    """Whether this process called ``httpx2.alias_httpx()``: ``import httpx`` gives httpx2.

    Reliable by the time a cluster starts: headlesslb imported httpx, so ``sys.modules`` has it
    under whichever module the process chose (alias_httpx must come before any such import)."""
    module = sys.modules.get("httpx")
    return module is not None and module.__name__ != "httpx"


def _process_context() -> (
    multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext
):
    """Where cluster processes come from: a forkserver that has imported the cluster's code
    once, so each cluster starts in milliseconds instead of paying about 0.5 s of imports (a
    suite starting hundreds of clusters felt it); "spawn" where there is no forkserver. Both
    start from a fresh interpreter, never from a fork of the caller and its threads.

    In a process that aliased httpx the forkserver must not import headlesslb: that imports
    the real httpx (the forkserver is a fresh interpreter, never aliased), and each cluster
    process, forked from it, then re-runs the caller's main module as multiprocessing does,
    whose ``httpx2.alias_httpx()`` raises "httpx was already imported" and kills it during
    start-up. There the forkserver preloads only third-party modules, and each cluster process
    imports headlesslb itself, after the main module aliased httpx again.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Taken into account only when the forkserver starts (the aliasing is decided before, once
    # per process); an import error here is the forkserver's to ignore, and child_main reports it.
    if _httpx_aliased():
        ctx.set_forkserver_preload(list(_ALIASED_PRELOAD))
    else:
        ctx.set_forkserver_preload([f"{__package__}._child"])
    return ctx


def _stop_process(proc: BaseProcess, conn: Connection, timeout: float) -> None:
    """Ask the child to stop, then insist. Safe to call more than once."""
    try:
        if not conn.closed:
            try:
                conn.send(("close", (), {}))
                if conn.poll(timeout):
                    conn.recv()
            except (OSError, EOFError, ValueError):
                pass
            conn.close()
        proc.join(timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout)
    except ValueError:
        pass  # already closed and released


class LocalCluster:
    """A small, real Kubernetes-like cluster on loopback: DNS, HTTP Pods and LB Services.

    It runs in its own process (from a multiprocessing forkserver, else "spawn") on its own
    asyncio loop; every method
    here is a synchronous request to that process. Addresses: a random block 127.B.C.0/24 with
    the DNS server on 127.B.C.53 (UDP and TCP, same ephemeral port), LB Services on
    127.B.C.100+, and Pods on 127.B.C+1.1 … 127.B.C+17.254 (4,318 of them), each Pod on its own
    IP. Every Pod and LB Service listens on the cluster's port (``cluster.port``) unless a
    workload picks another.

    Workload and Service names are unique across the whole cluster, whatever their namespace.
    Pods serve the echo app unless given your own: JSON naming the Pod for any path, ``ok`` on
    ``/healthz``, and on ``/stream?chunks=N&interval=S`` server-sent events, one every ``S``
    seconds (``&reset_after=K`` resets the connection after ``K``: a Pod dying mid-stream).
    Scripts that start a cluster need the usual ``if __name__ == "__main__":`` guard (the
    cluster process re-imports the main module).
    """

    def __init__(
        self,
        *,
        namespace: str = "default",
        domain: str = "cluster.local",
        ttl: int = 5,
        startup_timeout: float = 20.0,
    ) -> None:
        # ConfigurationError is a ValueError; all of it is checked before a process is started.
        ttl = count("LocalCluster.ttl", ttl, min=0, max=2**31 - 1)  # RFC 2181 §8
        startup_timeout = number(
            "LocalCluster.startup_timeout", startup_timeout, min=0, exclusive_min=True
        )
        validate_label("LocalCluster.namespace", namespace)
        validate_domain("LocalCluster.domain", domain)
        missing = _missing_dependency()
        if missing is not None:
            raise ClusterError(missing)
        self._options = Options(namespace=namespace, domain=domain, ttl=ttl)
        self._origin = zone_name(domain)
        self._lock = threading.Lock()
        self._closed = False
        self._broken: str | None = None
        ctx = _process_context()
        parent_conn, child_conn = ctx.Pipe()
        proc = ctx.Process(
            target=child_main,
            args=(child_conn, self._options, dict(os.environ)),
            name="headlesslb-local-cluster",
            daemon=True,
        )
        proc.start()
        # Our copy of the child's end must go, or we would never see EOF when the child dies.
        child_conn.close()
        self._conn: Connection = parent_conn
        self._proc: BaseProcess = proc
        self._finalizer = weakref.finalize(self, _stop_process, proc, parent_conn, _CLOSE_TIMEOUT)
        try:
            ready = self._wait_ready(startup_timeout)
        except BaseException:
            self.close()
            raise
        ip, port = ready["dns"]
        self._dns_address: tuple[str, int] = (ip, port)
        self._port: int = ready["port"]

    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.05):
            if not self._proc.is_alive():
                raise ClusterError(f"cluster process exited with code {self._proc.exitcode}")
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster process not ready after {timeout} s")
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            raise ClusterError("cluster process died during start-up") from None
        if kind != "ready":
            raise ClusterError(f"cluster failed to start: {payload}")
        return cast(dict[str, Any], payload)

    # --- plumbing --------------------------------------------------------------------------

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._closed:
                raise ClusterError("cluster is closed")
            if self._broken is not None:
                raise ClusterError(f"cluster is unusable: {self._broken}")
            try:
                self._conn.send((op, args, kwargs))
                deadline = time.monotonic() + _CALL_TIMEOUT
                while not self._conn.poll(0.2):
                    if not self._proc.is_alive():
                        raise ClusterError(
                            f"cluster process died (exit code {self._proc.exitcode})"
                        )
                    if time.monotonic() > deadline:
                        # A late answer would be read as the reply to the next call: this
                        # cluster can no longer be trusted, so stop it.
                        self._broken = f"cluster did not answer {op!r} in {_CALL_TIMEOUT} s"
                        raise ClusterError(self._broken)
                kind, payload = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise ClusterError(f"lost the cluster process: {exc!r}") from exc
        if kind == "err":
            raise ClusterError(payload)
        return payload

    def close(self) -> None:
        """Stop every server and the cluster process. Calling it again does nothing."""
        with self._lock:
            self._closed = True
        self._finalizer()

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"dns={self.nameserver}"
        return f"<LocalCluster {self._origin} {state}>"

    # --- addresses -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The cluster process id."""
        return self._proc.pid

    @property
    def process(self) -> BaseProcess:
        """The cluster process (tests use it to check it is gone after close)."""
        return self._proc

    @property
    def dns_address(self) -> tuple[str, int]:
        """(ip, port) of the DNS server, UDP and TCP."""
        return self._dns_address

    @property
    def nameserver(self) -> str:
        """``"ip:port"`` of the DNS server, as a client's ``nameservers=[...]`` entry."""
        ip, port = self._dns_address
        return f"{ip}:{port}"

    @property
    def port(self) -> int:
        """The port every Pod and LB Service listens on (unless a workload chose another)."""
        return self._port

    @property
    def namespace(self) -> str:
        """The default namespace."""
        return self._options.namespace

    @property
    def domain(self) -> str:
        """The cluster domain, absolute (``"cluster.local."``)."""
        return self._origin

    def client_kwargs(self, namespace: str | None = None) -> ClientKwargs:
        """The arguments a headlesslb client needs to use this cluster instead of the machine's
        resolv.conf: ``HeadlessClient("web-hl", port="http", **cluster.client_kwargs())``."""
        if namespace is not None:
            validate_label("namespace", namespace)
        return {"nameservers": [self.nameserver], "namespace": namespace or self.namespace}

    def environ(self, namespace: str | None = None) -> dict[str, str]:
        """The ``HEADLESSLB_*`` variables pointing a client in **another process** at this
        cluster (its DNS, namespace and cluster domain), for an app run separately:
        ``subprocess.Popen(["uvicorn", "myapp:app"], env={**os.environ, **cluster.environ()})``.
        A client's own arguments win over them; they win over resolv.conf and POD_NAMESPACE."""
        kwargs = self.client_kwargs(namespace)
        return {
            NAMESERVERS: ",".join(kwargs["nameservers"]),
            NAMESPACE: kwargs["namespace"],
            CLUSTER_DOMAIN: self.domain.rstrip("."),
        }

    @property
    def ttl(self) -> int:
        """TTL of every cluster record."""
        return self._options.ttl

    # --- workloads -------------------------------------------------------------------------

    def add_statefulset(
        self,
        name: str,
        replicas: int = 3,
        *,
        headless: str | _Auto | None = AUTO,
        lb: str | _Auto | None = AUTO,
        port: int | None = None,
        port_name: str = "http",
        namespace: str | None = None,
        publish_not_ready: bool = True,
        tls: tuple[str, str] | None = None,
        serve: bool = True,
        app: str | None = None,
        factory: bool = False,
    ) -> list[PodInfo]:
        """Create a StatefulSet: Pods ``<name>-0`` … with stable hostnames and ordinals.

        ``headless``/``lb`` name its headless and ClusterIP/LB Services (default
        ``<name>-hl`` / ``<name>-lb``; None for none). ``tls=(certfile, keyfile)`` serves
        HTTPS. ``serve=False`` makes DNS-only Pods. ``publish_not_ready`` (default True, as
        StatefulSet peers usually need) keeps not-ready Pods in the headless Service's DNS.

        ``app="package.module:attribute"`` serves your own ASGI app (FastAPI, Starlette, ...) or
        WSGI app (Flask, Django, ...) on every Pod instead of the echo app, with its ASGI
        lifespan run per Pod; with ``factory=True`` the attribute is called with each Pod's
        :class:`~headlesslb.testing.PodContext` and returns that Pod's own app (per-Pod state, and
        ``context.client_kwargs()`` for a headlesslb client inside the app). The cluster
        process imports it, so it must be importable from ``sys.path``. The Pod controls
        (``kill``, ``slow``, ``fail``, ``reset``, ``set_ready``) and counters work on it too.
        Returns the Pods, all listening.
        """
        return cast(
            list[PodInfo],
            self._call(
                "add_statefulset",
                name,
                replicas,
                f"{name}-hl" if headless is AUTO else headless,
                f"{name}-lb" if lb is AUTO else lb,
                port,
                port_name,
                namespace,
                publish_not_ready,
                _tls(tls),
                serve,
                _app(app, factory),
            ),
        )

    def add_deployment(
        self,
        name: str,
        replicas: int = 3,
        *,
        headless: str | _Auto | None = AUTO,
        lb: str | _Auto | None = AUTO,
        port: int | None = None,
        port_name: str = "http",
        namespace: str | None = None,
        publish_not_ready: bool = False,
        tls: tuple[str, str] | None = None,
        serve: bool = True,
        app: str | None = None,
        factory: bool = False,
    ) -> list[PodInfo]:
        """Create a Deployment: Pods ``<name>-<random5>`` with no hostname.

        Their SRV targets and per-Pod names are ``<ip-with-dashes>.<svc>.<ns>.svc.<domain>``.
        Other arguments as for ``add_statefulset`` (``publish_not_ready`` defaults to False),
        ``app=`` and ``factory=`` included.
        """
        return cast(
            list[PodInfo],
            self._call(
                "add_deployment",
                name,
                replicas,
                f"{name}-hl" if headless is AUTO else headless,
                f"{name}-lb" if lb is AUTO else lb,
                port,
                port_name,
                namespace,
                publish_not_ready,
                _tls(tls),
                serve,
                _app(app, factory),
            ),
        )

    def scale(self, workload: str, replicas: int) -> list[PodInfo]:
        """Set the replica count. A StatefulSet adds/removes the highest ordinals; a Deployment
        removes not-ready or dead Pods first, then the newest. Returns the Pods."""
        return cast(list[PodInfo], self._call("scale", workload, replicas))

    def delete_workload(self, workload: str) -> None:
        """Remove a workload, its Pods and its Services."""
        self._call("delete_workload", workload)

    def pods(self, workload: str | None = None) -> list[PodInfo]:
        """The Pods of one workload (StatefulSet: by ordinal), or of the whole cluster."""
        return cast(list[PodInfo], self._call("pods", workload))

    def pod(self, name: str) -> PodInfo:
        """One Pod by name."""
        return cast(PodInfo, self._call("pod", name))

    def url(self, pod: str, path: str = "") -> str:
        """``http(s)://ip:port`` of one Pod, plus ``path``."""
        info = self.pod(pod)
        return f"{info.scheme}://{info.ip}:{info.port}{path}"

    # --- services --------------------------------------------------------------------------

    def services(self) -> list[ServiceInfo]:
        """Every Service definition (``exists`` False for deleted ones)."""
        return cast(list[ServiceInfo], self._call("services"))

    def service(self, name: str) -> ServiceInfo:
        """One Service by name."""
        return cast(ServiceInfo, self._call("service", name))

    def service_url(self, lb: str, path: str = "") -> str:
        """``http(s)://lbip:port`` of a ClusterIP/LB Service, plus ``path``."""
        info = self.service(lb)
        if info.ip is None:
            raise ClusterError(f"service {lb!r} is headless: it has no address")
        return f"{info.scheme}://{info.ip}:{info.port}{path}"

    def fqdn(self, service: str) -> str:
        """Absolute DNS name of a Service: ``web-hl.default.svc.cluster.local.``."""
        return self.service(service).fqdn

    def srv_name(self, service: str, port_name: str | None = None) -> str:
        """The SRV name of a Service's port: ``_http._tcp.web-hl.default.svc.cluster.local.``."""
        info = self.service(service)
        return f"_{port_name or info.port_name}._tcp.{info.fqdn}"

    def pod_fqdn(self, pod: str) -> str:
        """A Pod's own name under its headless Service (``web-0.web-hl…`` or
        ``127-70-3-5.app-hl…``)."""
        return cast(str, self._call("pod_fqdn", pod))

    def delete_service(self, name: str) -> None:
        """Delete a Service: its names become NXDOMAIN (an LB stops listening); Pods keep
        running. The definition is kept for ``create_service``."""
        self._call("delete_service", name)

    def create_service(self, name: str) -> None:
        """Recreate a deleted Service with its old definition (an LB keeps its address)."""
        self._call("create_service", name)

    # --- faults ----------------------------------------------------------------------------

    def kill(self, pod: str) -> None:
        """The Pod's server is gone: listener closed, connections reset, connects refused.
        Its DNS records stay (Kubernetes has not noticed yet)."""
        self._call("kill", pod)

    def restart(self, pod: str) -> None:
        """Serve again on the same ip:port (after ``kill``); on a live Pod, drops its
        connections and starts afresh."""
        self._call("restart", pod)

    def slow(self, pod: str, seconds: float) -> None:
        """Add ``seconds`` of latency to every response (0 clears)."""
        self._call("slow", pod, seconds)

    def fail(self, pod: str, status: int | None = 503) -> None:
        """Answer every request, ``/healthz`` included, with ``status`` (None clears)."""
        self._call("fail", pod, status)

    # --- load: rate limits, cold start, stragglers -----------------------------------------

    def rate_limit(
        self,
        pod: str,
        per_second: float | None,
        *,
        burst: float | None = None,
        status: int = 429,
        retry_after: int = 1,
    ) -> None:
        """Serve at most ``per_second`` requests a second (a token bucket holding ``burst``,
        by default a tenth of a second's worth); past it, answer ``status`` (429 or 503) at
        once with ``Retry-After: <retry_after>``. ``/healthz`` is exempt. None lifts the limit.
        Rejections are counted in ``stats()["rejected"]`` (and in ``"pods"``)."""
        self._call("rate_limit", pod, per_second, burst, status, retry_after)

    def cold_start(self, pod: str, seconds: float = 5.0, latency: float = 0.2) -> None:
        """The Pod is cold: for ``seconds`` from the next request it gets, every response takes
        ``latency`` more seconds; then it is normal again (0 seconds clears)."""
        self._call("cold_start", pod, seconds, latency)

    def stragglers(self, pod: str, fraction: float = 0.05, factor: float = 10.0) -> None:
        """A latency distribution: ``fraction`` of responses, at random, take ``factor`` × the
        Pod's latency (set it with ``slow``). 0 clears."""
        self._call("stragglers", pod, fraction, factor)

    def reset(self, pod: str, enabled: bool = True) -> None:
        """Send the headers and half the body of every response, then reset the connection."""
        self._call("reset", pod, enabled)

    def set_ready(self, pod: str, ready: bool) -> None:
        """Mark a Pod (not) ready: a not-ready Pod leaves DNS (unless its Service publishes
        not-ready addresses) and the LB, while its server keeps running."""
        self._call("set_ready", pod, ready)

    # --- DNS -------------------------------------------------------------------------------

    def stop_dns(self) -> None:
        """Close the DNS sockets: UDP queries then time out, TCP connects are refused."""
        self._call("stop_dns")

    def start_dns(self) -> None:
        """Listen again on the same ip:port."""
        self._call("start_dns")

    def dns_set_mode(
        self, mode: DnsMode, *, name: str | None = None, rdtype: str | None = None
    ) -> None:
        """``"normal"``, or break DNS: ``"servfail"``, ``"refuse"``, ``"drop"`` (no reply), or
        ``"tcp_reset"`` (a TCP connection asking is reset unanswered, while UDP answers as
        usual: a server whose TCP side fails, after an answer too big for UDP).

        Alone it sets the whole server and clears every selective mode. With ``name`` (taken as
        absolute, any case) and/or ``rdtype`` (``"AAAA"``) only matching queries get ``mode``:
        ``dns_set_mode("servfail", rdtype="AAAA")`` fails AAAA alone, so partial failures happen
        for real. The most specific setting wins: name and type, then name, then type.
        """
        self._call("dns_set_mode", mode, name, rdtype)

    def add_record(
        self, name: str, rdtype: str, values: list[str] | str, ttl: int | None = None
    ) -> None:
        """Add raw records inside the cluster domain, e.g. ``("x.default.svc.cluster.local.",
        "AAAA", ["::1"])``. Names are taken as absolute."""
        vals = [values] if isinstance(values, str) else list(values)
        self._call("add_record", name, rdtype, vals, ttl)

    def remove_record(self, name: str, rdtype: str | None = None) -> None:
        """Remove raw records added with ``add_record`` (all types when ``rdtype`` is None)."""
        self._call("remove_record", name, rdtype)

    def dns_query_count(self) -> DnsQueryCount:
        """Queries received since start or the last reset, in total and per (qname, qtype)."""
        return cast(DnsQueryCount, self._call("dns_query_count"))

    def reset_dns_query_count(self) -> None:
        """Zero the DNS query counters."""
        self._call("reset_dns_query_count")

    # --- stats -----------------------------------------------------------------------------

    def requests_served(self, pod: str) -> int:
        """Requests the Pod received (``/healthz`` not included) since start or reset."""
        return cast(int, self._call("requests_served", pod))

    def stats(self) -> dict[str, Any]:
        """``{"pods": {pod: requests}, "health": {pod: /healthz requests},
        "lb": {pod: LB connections}, "rejected": {pod: requests rate-limited},
        "dns": {"total": n, "by_query": {(qname, qtype): n}}}``."""
        return cast(dict[str, Any], self._call("stats"))

    def reset_stats(self) -> None:
        """Zero every counter (Pods, LB and DNS)."""
        self._call("reset_stats")


def _app(app: str | None, factory: bool) -> AppSpec | None:
    if app is None:
        if factory:
            raise ClusterError("factory=True needs app='package.module:factory'")
        return None
    return app_spec(app, factory)


def _tls(tls: tuple[str, str] | None) -> tuple[str, str] | None:
    if tls is None:
        return None
    certfile, keyfile = tls
    return (str(certfile), str(keyfile))
