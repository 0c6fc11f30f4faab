"""A real, small Kubernetes-like cluster on loopback for tests, demos and examples.

``LocalCluster`` runs an authoritative DNS server for ``cluster.local`` (A, SRV, per-Pod names,
NXDOMAIN/NODATA, truncation), HTTP Pods (uvicorn) with fault controls, and ClusterIP/LB Services
(a connection-level random TCP balancer, like kube-proxy), all in a separate process on
127.0.0.0/8 only. A workload's Pods can serve your own ASGI or WSGI app instead of the echo
app (``add_deployment("api", app="myservice:app")``), so a client and server pair is tested on
real DNS and real sockets. The pytest plugin (``headlesslb.testing.pytest_plugin``) provides the
``headlesslb_cluster`` fixture (configured by the ``headlesslb_cluster`` marker),
``headlesslb_cluster_module`` and ``headlesslb_cluster_session``. ``inference_app`` is an
OpenAI- and Anthropic-compatible inference server for a workload's Pods
(``app="headlesslb.testing:inference_app", factory=True``), which the real SDKs talk to.
"""

from ._apps import ClientKwargs, PodContext
from ._cluster import AUTO, LocalCluster
from ._inference import InferenceApp, inference_app
from ._model import ClusterError, DnsQueryCount, PodInfo, ServiceInfo
from .static import StaticDiscovery

__all__ = [
    "AUTO",
    "ClientKwargs",
    "ClusterError",
    "DnsQueryCount",
    "InferenceApp",
    "LocalCluster",
    "PodContext",
    "PodInfo",
    "ServiceInfo",
    "StaticDiscovery",
    "inference_app",
]
