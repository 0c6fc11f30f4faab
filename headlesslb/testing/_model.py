"""Plain data shared by the parent (control API) and the child (cluster) processes.

Everything here must stay picklable and cheap to import: it crosses the control pipe.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Literal, get_args

ServiceKind = Literal["headless", "lb"]
WorkloadKind = Literal["statefulset", "deployment"]
DnsMode = Literal["normal", "servfail", "refuse", "drop", "tcp_reset"]
DNS_MODES: tuple[str, ...] = get_args(DnsMode)


def tcp_socket() -> socket.socket:
    """A TCP socket whose accepted connections asyncio will set TCP_NODELAY on.

    asyncio only sets TCP_NODELAY when ``proto == IPPROTO_TCP``; a socket made with proto 0
    leaves Nagle on, and a response written in two parts (headers, body) then waits ~40 ms for
    the client's delayed ACK.
    """
    return socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)


@dataclass(frozen=True)
class Options:
    """LocalCluster's constructor arguments, as sent to the cluster process."""

    namespace: str
    domain: str
    ttl: int


def zone_name(domain: str) -> str:
    """The absolute zone name of a cluster domain ("cluster.local" → "cluster.local.")."""
    return domain.lower().rstrip(".") + "."


class ClusterError(RuntimeError):
    """An error raised by the local cluster (bad argument, unknown name, child failure)."""


# A traceback names the class where it is imported from, not this private module.
ClusterError.__module__ = "headlesslb.testing"


@dataclass(frozen=True)
class PodInfo:
    """A snapshot of one Pod as the cluster sees it."""

    name: str
    ip: str
    port: int
    hostname: str | None
    ordinal: int | None
    alive: bool
    ready: bool
    workload: str = ""
    namespace: str = "default"
    serving: bool = True
    """False for DNS-only Pods (``serve=False``): they have an address but no server."""
    scheme: str = "http"
    """``"https"`` when the workload serves TLS."""


@dataclass(frozen=True)
class ServiceInfo:
    """A snapshot of one Service (headless or ClusterIP/LB) of the cluster."""

    name: str
    namespace: str
    kind: ServiceKind
    workload: str
    port: int
    port_name: str
    fqdn: str
    ip: str | None
    """The LB address; None for a headless Service."""
    exists: bool
    """False after ``delete_service`` (the definition is kept for ``create_service``)."""
    publish_not_ready: bool = False
    scheme: str = "http"
    """``"https"`` when the workload serves TLS (an LB passes TLS through)."""


@dataclass(frozen=True)
class DnsQueryCount:
    """Queries received by the DNS server since start or the last reset."""

    total: int
    by_query: dict[tuple[str, str], int] = field(default_factory=dict)
    """Keyed by (lower-case absolute qname, rdtype text), e.g. ``("web.ns.svc.cluster.local.",
    "A")``."""
    bytes_sent: int = 0
    """Bytes of every reply sent (TCP's 2-byte length prefix included)."""
    tcp_replies: int = 0
    """Replies sent over TCP."""

    def count(self, name: str, rdtype: str = "A") -> int:
        """Queries for ``name`` (absolute or not, any case) and ``rdtype``."""
        key = name.lower() if name.endswith(".") else name.lower() + "."
        return self.by_query.get((key, rdtype.upper()), 0)
