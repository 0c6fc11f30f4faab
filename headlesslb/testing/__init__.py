"""A real, small Kubernetes-like cluster on loopback for tests, demos and examples.

``LocalCluster`` runs an authoritative DNS server for ``cluster.local`` (A, SRV, per-Pod names,
NXDOMAIN/NODATA, truncation), HTTP Pods (uvicorn) with fault controls, and ClusterIP/LB Services
(a connection-level random TCP balancer, like kube-proxy), all in a separate process on
127.0.0.0/8 only. The pytest plugin (``headlesslb.testing.pytest_plugin``) provides the
``local_cluster`` and ``local_cluster_module`` fixtures.
"""

from ._cluster import AUTO, LocalCluster
from ._model import ClusterError, DnsQueryCount, PodInfo, ServiceInfo
from .static import StaticDiscovery

__all__ = [
    "AUTO",
    "ClusterError",
    "DnsQueryCount",
    "LocalCluster",
    "PodInfo",
    "ServiceInfo",
    "StaticDiscovery",
]
