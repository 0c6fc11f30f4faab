"""A real, small Kubernetes-like cluster on loopback for tests, demos and examples.

``LocalCluster`` runs an authoritative DNS server for ``cluster.local`` (A, SRV, per-Pod names,
NXDOMAIN/NODATA, truncation), HTTP Pods (uvicorn) with fault controls, and ClusterIP/LB Services
(a connection-level random TCP balancer, like kube-proxy), all in a separate process on
127.0.0.0/8 only. A workload's Pods can serve your own ASGI or WSGI app instead of the echo
app (``add_deployment("api", app="myservice:app")``), so a client and server pair is tested on
real DNS and real sockets. The pytest plugin (``headlesslb.testing.pytest_plugin``) provides the
``headlesslb_cluster`` fixture (configured by the ``headlesslb_cluster`` marker),
``headlesslb_cluster_module`` and ``headlesslb_cluster_session``.
"""

from ._apps import ClientKwargs, PodContext
from ._cluster import AUTO, LocalCluster
from ._model import ClusterError, DnsQueryCount, PodInfo, ServiceInfo
from .static import StaticDiscovery

__all__ = [
    "AUTO",
    "ClientKwargs",
    "ClusterError",
    "DnsQueryCount",
    "LocalCluster",
    "PodContext",
    "PodInfo",
    "ServiceInfo",
    "StaticDiscovery",
]
