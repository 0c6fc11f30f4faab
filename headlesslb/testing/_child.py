"""The cluster process: state, DNS, Pods and LB Services on one asyncio loop.

The parent talks to it over a multiprocessing Pipe: it sends ``(op, args, kwargs)`` and gets back
``("ok", value)`` or ``("err", message)``. A reader thread owns the pipe so the event loop never
blocks on it; end-of-file on the pipe (the parent died) shuts the cluster down.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from ._apps import AppSpec, PodContext, UserApp, load_app
from ._dns import DnsServer, Zone, a_record, make_soa, srv_record
from ._lb import LbProxy
from ._model import (
    DNS_MODES,
    ClusterError,
    DnsQueryCount,
    Options,
    PodInfo,
    ServiceInfo,
    ServiceKind,
    WorkloadKind,
    zone_name,
)
from ._pods import Pod, PodServer

# Address plan inside 127.B.C.0/24 (+ the next /24s for Pods); see LocalCluster's docstring.
_POD_SUBNETS = 17  # 4,318 Pods: big Services (DNS-only Pods need no server)
_LB_FIRST, _LB_LAST = 100, 254
_DNS_HOST = 53
_PROBE_HOST = 1
_SRV_PRIORITY, _SRV_WEIGHT = 0, 100  # what CoreDNS publishes
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' random-suffix alphabet


@dataclass
class Workload:
    """A StatefulSet or Deployment: a named set of Pods sharing a port and Services."""

    name: str
    kind: WorkloadKind
    namespace: str
    port: int
    port_name: str
    serve: bool
    tls: tuple[str, str] | None
    headless: str | None
    lb: str | None
    pods: dict[str, Pod] = field(default_factory=dict)
    app: AppSpec | None = None
    """The user's app every Pod serves (None: the echo app)."""


@dataclass
class Service:
    """A Service definition; ``exists`` is False between delete_service and create_service."""

    name: str
    namespace: str
    kind: ServiceKind
    workload: str
    publish_not_ready: bool
    ip: str | None = None
    exists: bool = True
    proxy: LbProxy | None = None


class Cluster:
    """Everything the child runs; ``op_*`` methods are the control API."""

    def __init__(
        self, options: Options, block: tuple[int, int], dns_server: DnsServer, port: int
    ) -> None:
        self.options = options
        self.origin = dns_origin(options.domain)
        self.b, self.c = block
        self.port = port
        self.dns = dns_server
        self.workloads: dict[str, Workload] = {}
        self.services: dict[str, Service] = {}
        self.pods: dict[str, Pod] = {}
        self.extra: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], tuple[int, list[str]]] = {}
        self._next_pod_ip = 0
        self._free_pod_ips: list[str] = []
        self._next_lb_ip = _LB_FIRST
        self._version = 0
        self._zone: Zone | None = None
        self._zone_version = -1
        self.dns.zone_provider = self.zone

    # --- addresses -------------------------------------------------------------------------

    @property
    def dns_ip(self) -> str:
        """The DNS server's address."""
        return f"127.{self.b}.{self.c}.{_DNS_HOST}"

    def _alloc_pod_ip(self) -> str:
        capacity = _POD_SUBNETS * 254
        if self._next_pod_ip < capacity:
            i = self._next_pod_ip
            self._next_pod_ip += 1
            return f"127.{self.b}.{self.c + 1 + i // 254}.{1 + i % 254}"
        if self._free_pod_ips:
            # Only once fresh addresses run out: a new Pod normally gets a new IP, and reusing
            # one at once would let stale clients reach the wrong Pod.
            return self._free_pod_ips.pop(0)
        raise ClusterError(f"out of Pod addresses ({capacity} per cluster)")

    def _alloc_lb_ip(self) -> str:
        if self._next_lb_ip > _LB_LAST:
            raise ClusterError("out of LB Service addresses")
        ip = f"127.{self.b}.{self.c}.{self._next_lb_ip}"
        self._next_lb_ip += 1
        return ip

    # --- DNS zone --------------------------------------------------------------------------

    def changed(self) -> None:
        """Invalidate the cached zone."""
        self._version += 1

    def zone(self) -> Zone:
        """The current zone, rebuilt only after a change."""
        if self._zone is None or self._zone_version != self._version:
            self._zone = self._build_zone()
            self._zone_version = self._version
        return self._zone

    def _svc_name(self, svc: Service) -> dns.name.Name:
        return dns.name.Name((svc.name, svc.namespace, "svc", *self.origin.labels))

    def _build_zone(self) -> Zone:
        ttl = self.options.ttl
        zone = Zone(self.origin, ttl)
        zone.add(self.origin, make_soa(self.origin, ttl))
        ns_name = dns.name.Name(("ns", "dns", *self.origin.labels))
        zone.add(
            self.origin,
            dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NS, ns_name.to_text()),
        )
        zone.add(ns_name, a_record(self.dns_ip))
        for svc in self.services.values():
            if not svc.exists:
                continue
            wl = self.workloads[svc.workload]
            name = self._svc_name(svc)
            srv_name = dns.name.Name((f"_{wl.port_name}", "_tcp", *name.labels))
            if svc.kind == "lb":
                assert svc.ip is not None
                zone.add(name, a_record(svc.ip))
                zone.add(srv_name, srv_record(_SRV_PRIORITY, _SRV_WEIGHT, wl.port, name))
                continue
            for pod in wl.pods.values():
                if not (pod.ready or svc.publish_not_ready):
                    continue
                label = pod.hostname or pod.ip.replace(".", "-")
                target = dns.name.Name((label, *name.labels))
                record = a_record(pod.ip)
                zone.add(name, record)
                zone.add(target, record)
                zone.add(srv_name, srv_record(_SRV_PRIORITY, _SRV_WEIGHT, pod.port, target))
        for (rname, rdtype), (rttl, values) in self.extra.items():
            for value in values:
                zone.add(rname, dns.rdata.from_text(dns.rdataclass.IN, rdtype, value), rttl)
        return zone

    # --- helpers ---------------------------------------------------------------------------

    def _pod(self, name: str) -> Pod:
        try:
            return self.pods[name]
        except KeyError:
            raise ClusterError(f"no such pod: {name!r}") from None

    def _workload(self, name: str) -> Workload:
        try:
            return self.workloads[name]
        except KeyError:
            raise ClusterError(f"no such workload: {name!r}") from None

    def _service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise ClusterError(f"no such service: {name!r}") from None

    def _service_info(self, svc: Service) -> ServiceInfo:
        wl = self.workloads[svc.workload]
        return ServiceInfo(
            name=svc.name,
            namespace=svc.namespace,
            kind=svc.kind,
            workload=svc.workload,
            port=wl.port,
            port_name=wl.port_name,
            fqdn=self._svc_name(svc).to_text(),
            ip=svc.ip,
            exists=svc.exists,
            publish_not_ready=svc.publish_not_ready,
            scheme="https" if wl.tls else "http",
        )

    def _choose_for_lb(self, workload: str) -> Callable[[set[str]], Pod | None]:
        def choose(tried: set[str]) -> Pod | None:
            wl = self.workloads.get(workload)
            if wl is None:
                return None
            candidates = [
                p
                for p in wl.pods.values()
                if p.alive and p.ready and p.serve and p.name not in tried
            ]
            return random.choice(candidates) if candidates else None

        return choose

    async def _start_pod(self, wl: Workload, name: str, ordinal: int | None) -> Pod:
        pod = Pod(
            name=name,
            workload=wl.name,
            namespace=wl.namespace,
            ip=self._alloc_pod_ip(),
            port=wl.port,
            hostname=name if wl.kind == "statefulset" else None,
            ordinal=ordinal,
            serve=wl.serve,
            tls=wl.tls,
        )
        try:
            if wl.app is not None:
                pod.app = self._user_app(wl.app, pod)
            if wl.serve:
                pod.server = PodServer(pod)
                await pod.server.start()
        except BaseException:
            self._free_pod_ips.append(pod.ip)  # a Pod that never started gives its address back
            raise
        wl.pods[name] = pod
        self.pods[name] = pod
        return pod

    def _user_app(self, spec: AppSpec, pod: Pod) -> UserApp:
        context = PodContext(
            name=pod.name,
            namespace=pod.namespace,
            ip=pod.ip,
            port=pod.port,
            hostname=pod.hostname,
            ordinal=pod.ordinal,
            workload=pod.workload,
            nameserver=f"{self.dns.ip}:{self.dns.port}",
        )
        return UserApp(*load_app(spec, context))

    def _remove_pod(self, wl: Workload, pod: Pod) -> None:
        if pod.server is not None:
            pod.server.kill()
        del wl.pods[pod.name]
        del self.pods[pod.name]
        self._free_pod_ips.append(pod.ip)

    def _new_deployment_pod_name(self, wl: Workload) -> str:
        while True:
            name = f"{wl.name}-" + "".join(random.choices(_NAME_ALPHABET, k=5))
            if name not in self.pods:
                return name

    async def _scale(self, wl: Workload, replicas: int) -> None:
        if replicas < 0:
            raise ClusterError("replicas must be >= 0")
        try:
            if wl.kind == "statefulset":
                # StatefulSet: ordinals 0..n-1, the highest ordinal goes first on scale-down.
                ordinals = {p.ordinal for p in wl.pods.values()}
                for ordinal in range(replicas):
                    if ordinal not in ordinals:
                        await self._start_pod(wl, f"{wl.name}-{ordinal}", ordinal)
                for pod in list(wl.pods.values()):
                    if pod.ordinal is not None and pod.ordinal >= replicas:
                        self._remove_pod(wl, pod)
                wl.pods = dict(sorted(wl.pods.items(), key=lambda kv: kv[1].ordinal or 0))
            else:
                while len(wl.pods) < replicas:
                    await self._start_pod(wl, self._new_deployment_pod_name(wl), None)
                # ReplicaSet picks not-ready and dead Pods first, then the newest.
                victims = sorted(
                    wl.pods.values(),
                    key=lambda p: (p.ready and p.alive, list(wl.pods).index(p.name)),
                )
                for pod in victims[: max(0, len(wl.pods) - replicas)]:
                    self._remove_pod(wl, pod)
        finally:
            self.changed()

    def _check_new_name(self, name: str, what: str) -> None:
        try:
            dns.name.from_text(name, origin=None)
        except Exception as exc:
            raise ClusterError(f"invalid {what} name {name!r}: {exc}") from None
        if not name or "." in name or name != name.lower():
            raise ClusterError(f"invalid {what} name {name!r}: use a lower-case DNS label")

    async def _add_workload(
        self,
        kind: WorkloadKind,
        name: str,
        replicas: int,
        headless: str | None,
        lb: str | None,
        port: int | None,
        port_name: str,
        namespace: str | None,
        publish_not_ready: bool,
        tls: tuple[str, str] | None,
        serve: bool,
        app: AppSpec | None = None,
    ) -> list[PodInfo]:
        self._check_new_name(name, "workload")
        if name in self.workloads:
            raise ClusterError(f"workload {name!r} already exists")
        for svc_name in (headless, lb):
            if svc_name is not None:
                self._check_new_name(svc_name, "service")
                if svc_name in self.services:
                    raise ClusterError(f"service {svc_name!r} already exists")
        if headless is not None and headless == lb:
            raise ClusterError("headless and lb must be different names")
        if tls is not None and not serve:
            raise ClusterError("tls needs serve=True")
        if app is not None and not serve:
            raise ClusterError("app needs serve=True")
        wl = Workload(
            name=name,
            kind=kind,
            namespace=namespace or self.options.namespace,
            port=port or self.port,
            port_name=port_name,
            serve=serve,
            tls=tuple(tls) if tls else None,  # type: ignore[arg-type]
            headless=headless,
            lb=lb,
            app=app,
        )
        self.workloads[name] = wl
        if headless is not None:
            self.services[headless] = Service(
                headless, wl.namespace, "headless", name, publish_not_ready
            )
        if lb is not None:
            svc = Service(lb, wl.namespace, "lb", name, False, ip=self._alloc_lb_ip())
            self.services[lb] = svc
            await self._start_lb(svc)
        try:
            await self._scale(wl, replicas)
        except BaseException:
            # A workload whose Pods cannot start (an app that does not import, a port in use)
            # is not left half-made: its name can be used again.
            await self.op_delete_workload(name)
            raise
        return [p.info() for p in wl.pods.values()]

    async def _start_lb(self, svc: Service) -> None:
        assert svc.ip is not None
        svc.proxy = LbProxy(
            svc.ip, self.workloads[svc.workload].port, self._choose_for_lb(svc.workload)
        )
        await svc.proxy.start()

    # --- control API (names match LocalCluster's methods) -----------------------------------

    async def op_add_statefulset(
        self,
        name: str,
        replicas: int,
        headless: str | None,
        lb: str | None,
        port: int | None,
        port_name: str,
        namespace: str | None,
        publish_not_ready: bool,
        tls: tuple[str, str] | None,
        serve: bool,
        app: AppSpec | None = None,
    ) -> list[PodInfo]:
        return await self._add_workload(
            "statefulset", name, replicas, headless, lb, port, port_name, namespace,
            publish_not_ready, tls, serve, app,
        )  # fmt: skip

    async def op_add_deployment(
        self,
        name: str,
        replicas: int,
        headless: str | None,
        lb: str | None,
        port: int | None,
        port_name: str,
        namespace: str | None,
        publish_not_ready: bool,
        tls: tuple[str, str] | None,
        serve: bool,
        app: AppSpec | None = None,
    ) -> list[PodInfo]:
        return await self._add_workload(
            "deployment", name, replicas, headless, lb, port, port_name, namespace,
            publish_not_ready, tls, serve, app,
        )  # fmt: skip

    async def op_scale(self, name: str, replicas: int) -> list[PodInfo]:
        wl = self._workload(name)
        await self._scale(wl, replicas)
        return [p.info() for p in wl.pods.values()]

    async def op_delete_workload(self, name: str) -> None:
        wl = self._workload(name)
        await self._scale(wl, 0)
        for svc_name in (wl.headless, wl.lb):
            if svc_name is not None:
                svc = self.services.pop(svc_name)
                if svc.proxy is not None:
                    svc.proxy.stop()
        del self.workloads[name]
        self.changed()

    def op_pods(self, workload: str | None) -> list[PodInfo]:
        if workload is None:
            return [p.info() for p in self.pods.values()]
        return [p.info() for p in self._workload(workload).pods.values()]

    def op_pod(self, name: str) -> PodInfo:
        return self._pod(name).info()

    def op_services(self) -> list[ServiceInfo]:
        return [self._service_info(s) for s in self.services.values()]

    def op_service(self, name: str) -> ServiceInfo:
        return self._service_info(self._service(name))

    def op_pod_fqdn(self, name: str) -> str:
        pod = self._pod(name)
        wl = self.workloads[pod.workload]
        if wl.headless is None:
            raise ClusterError(f"pod {name!r} has no headless Service, hence no DNS name")
        svc = self._svc_name(self.services[wl.headless])
        label = pod.hostname or pod.ip.replace(".", "-")
        return dns.name.Name((label, *svc.labels)).to_text()

    async def op_delete_service(self, name: str) -> None:
        svc = self._service(name)
        svc.exists = False
        if svc.proxy is not None:
            svc.proxy.stop()
            svc.proxy = None
        self.changed()

    async def op_create_service(self, name: str) -> None:
        svc = self._service(name)
        if svc.exists:
            return
        if svc.kind == "lb":
            await self._start_lb(svc)
        svc.exists = True
        self.changed()

    def op_kill(self, name: str) -> None:
        pod = self._pod(name)
        pod.alive = False
        if pod.server is not None:
            pod.server.kill()

    async def op_restart(self, name: str) -> None:
        pod = self._pod(name)
        if pod.server is not None:
            pod.server.kill()
            await pod.server.start()
        pod.alive = True

    def op_slow(self, name: str, seconds: float) -> None:
        if seconds < 0:
            raise ClusterError("seconds must be >= 0")
        self._pod(name).slow = float(seconds)

    def op_fail(self, name: str, status: int | None) -> None:
        if status is not None and not 100 <= status <= 599:
            raise ClusterError(f"invalid HTTP status {status}")
        self._pod(name).fail_status = status

    def op_rate_limit(
        self,
        name: str,
        per_second: float | None,
        burst: float | None,
        status: int,
        retry_after: int,
    ) -> None:
        self._pod(name).behaviour.set_rate_limit(per_second, burst, status, retry_after)

    def op_cold_start(self, name: str, seconds: float, latency: float) -> None:
        self._pod(name).behaviour.set_cold_start(seconds, latency)

    def op_stragglers(self, name: str, fraction: float, factor: float) -> None:
        self._pod(name).behaviour.set_stragglers(fraction, factor)

    def op_reset(self, name: str, enabled: bool) -> None:
        self._pod(name).reset = bool(enabled)

    def op_set_ready(self, name: str, ready: bool) -> None:
        self._pod(name).ready = bool(ready)
        self.changed()

    async def op_stop_dns(self) -> None:
        await self.dns.stop()

    async def op_start_dns(self) -> None:
        try:
            await self.dns.start()
        except OSError as exc:
            raise ClusterError(
                f"cannot rebind DNS on {self.dns.ip}:{self.dns.port}: {exc}"
            ) from exc

    def op_dns_set_mode(
        self, mode: str, name: str | None = None, rdtype: str | None = None
    ) -> None:
        if mode not in DNS_MODES:
            raise ClusterError(f"unknown DNS mode {mode!r}")
        try:
            qname = None if name is None else dns.name.from_text(name)
            qtype = None if rdtype is None else dns.rdatatype.from_text(rdtype)
        except Exception as exc:
            raise ClusterError(f"bad DNS mode selector {name!r} {rdtype!r}: {exc}") from None
        self.dns.set_mode(mode, qname, qtype)  # type: ignore[arg-type]

    def _record_key(self, name: str, rdtype: str) -> tuple[dns.name.Name, dns.rdatatype.RdataType]:
        try:
            rname = dns.name.from_text(name)
            rtype = dns.rdatatype.from_text(rdtype)
        except Exception as exc:
            raise ClusterError(f"bad record {name!r} {rdtype!r}: {exc}") from None
        if not rname.is_subdomain(self.origin):
            raise ClusterError(f"{name!r} is outside the cluster domain {self.origin}")
        return rname, rtype

    def op_add_record(self, name: str, rdtype: str, values: list[str], ttl: int | None) -> None:
        key = self._record_key(name, rdtype)
        for value in values:
            try:
                dns.rdata.from_text(dns.rdataclass.IN, key[1], value)
            except Exception as exc:
                raise ClusterError(f"bad {rdtype} value {value!r}: {exc}") from None
        old_ttl, old = self.extra.get(key, (self.options.ttl if ttl is None else ttl, []))
        self.extra[key] = (
            old_ttl if ttl is None else ttl,
            old + [v for v in values if v not in old],
        )
        self.changed()

    def op_remove_record(self, name: str, rdtype: str | None) -> None:
        if rdtype is None:
            rname = self._record_key(name, "A")[0]
            for key in [k for k in self.extra if k[0] == rname]:
                del self.extra[key]
        else:
            self.extra.pop(self._record_key(name, rdtype), None)
        self.changed()

    def op_dns_query_count(self) -> DnsQueryCount:
        dns_server = self.dns
        return DnsQueryCount(
            dns_server.total, dict(dns_server.counts), dns_server.bytes_sent, dns_server.tcp_replies
        )

    def op_reset_dns_query_count(self) -> None:
        self.dns.reset_counts()

    def op_requests_served(self, name: str) -> int:
        return self._pod(name).served

    def op_stats(self) -> dict[str, Any]:
        return {
            "pods": {p.name: p.served for p in self.pods.values()},
            "health": {p.name: p.health_served for p in self.pods.values()},
            "lb": {p.name: p.lb_connections for p in self.pods.values()},
            "rejected": {p.name: p.rejected for p in self.pods.values()},
            "dns": {"total": self.dns.total, "by_query": dict(self.dns.counts)},
        }

    def op_reset_stats(self) -> None:
        for pod in self.pods.values():
            pod.served = pod.health_served = pod.lb_connections = pod.rejected = 0
        self.dns.reset_counts()

    async def shutdown(self) -> None:
        """Stop every server."""
        for svc in self.services.values():
            if svc.proxy is not None:
                svc.proxy.stop()
        for pod in self.pods.values():
            if pod.server is not None:
                pod.server.kill()
        for pod in self.pods.values():
            if pod.app is not None:
                await pod.app.stopped()
        await self.dns.stop()


def dns_origin(domain: str) -> dns.name.Name:
    """The zone origin for a cluster domain."""
    return dns.name.from_text(zone_name(domain))


def _pick_block() -> tuple[tuple[int, int], tuple[socket.socket, socket.socket], int]:
    """Find a free 127.B.C.0/24 block: DNS sockets bound, and one free port for every Pod."""
    last: Exception | None = None
    for _ in range(50):
        b = random.randint(64, 250)
        c = random.randint(0, 255 - _POD_SUBNETS - 1)
        try:
            sockets = DnsServer.bind_pair(f"127.{b}.{c}.{_DNS_HOST}", 0)
        except OSError as exc:
            last = exc
            continue
        # A port the kernel hands out as free on one address of the block is, in practice,
        # free on all of them: nothing else binds these random addresses.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            probe.bind((f"127.{b}.{c}.{_PROBE_HOST}", 0))
            port = probe.getsockname()[1]
        except OSError as exc:
            last = exc
            for s in sockets:
                s.close()
            continue
        finally:
            probe.close()
        return (b, c), sockets, port
    raise ClusterError(f"no free loopback block found: {last}")


async def _amain(conn: Connection, options: Options) -> None:
    loop = asyncio.get_running_loop()
    try:
        dns_origin(options.domain)
        block, sockets, port = _pick_block()
        udp, _ = sockets
        server = DnsServer(
            udp.getsockname()[0], udp.getsockname()[1], lambda: Zone(dns.name.root, 0)
        )
        cluster = Cluster(options, block, server, port)
        await server.start(sockets)
    except BaseException as exc:
        conn.send(("err", _describe(exc)))
        return
    conn.send(("ready", {"dns": (server.ip, server.port), "port": port, "block": block}))

    done = asyncio.Event()

    async def dispatch(op: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, Any]:
        try:
            if op == "close":
                # done is set by the reader once the reply is out: setting it here would let
                # the loop end and close the pipe under the reader's feet.
                await cluster.shutdown()
                return ("ok", None)
            method = getattr(cluster, "op_" + op, None)
            if method is None:
                raise ClusterError(f"unknown operation {op!r}")
            result = method(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return ("ok", result)
        except ClusterError as exc:
            return ("err", str(exc))
        except Exception as exc:
            return ("err", _describe(exc))

    def finish() -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(done.set)

    def reader() -> None:
        while True:
            try:
                op, args, kwargs = conn.recv()
            except (EOFError, OSError):
                # The parent is gone (or closed the pipe): nobody can stop us any more.
                finish()
                return
            future = asyncio.run_coroutine_threadsafe(dispatch(op, args, kwargs), loop)
            try:
                reply = future.result()
            except BaseException as exc:
                reply = ("err", _describe(exc))
            try:
                conn.send(reply)
            except (OSError, ValueError):
                finish()
                return
            if op == "close":
                finish()
                return

    threading.Thread(target=reader, name="headlesslb-cluster-control", daemon=True).start()
    await done.wait()
    await cluster.shutdown()
    # Let aborted connections' handlers finish; asyncio.run would cancel them mid-flight and
    # log the CancelledErrors.
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        await asyncio.wait(others, timeout=1.0)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClusterError):
        return str(exc)
    tb = "".join(traceback.format_exception(exc)).rstrip()
    return f"{type(exc).__name__}: {exc}\n--- in the cluster process ---\n{tb}"


def run(conn: Connection, options: Options) -> None:
    """Run the cluster until the parent says close or goes away."""
    # Ctrl-C goes to the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_amain(conn, options))
    finally:
        conn.close()
