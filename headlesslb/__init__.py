"""headlesslb: client-side load balancing over Kubernetes headless Services.

Discover a headless Service's Pods from DNS, balance each request over them (round-robin,
least-request, peak-EWMA, consistent-hash sharding, StatefulSet ordinal pinning), retry on another
Pod, eject bad Pods, and fall back to the Service's ClusterIP/LB twin when discovery has nothing.
"""

from .client import HeadlessClient
from .endpoint import Endpoint, EndpointStatus, Resolution
from .errors import (
    ClientClosed,
    ConfigurationError,
    DiscoveryError,
    HeadlessLBError,
    InvalidRequest,
    InvalidServiceName,
    NoEndpointsAvailable,
    NotStarted,
    OrdinalNotFound,
)
from .health import HealthCheck
from .names import ServiceName, expand_service_name
from .pool import OutlierPolicy
from .retry import RetryBudget, RetryPolicy
from .schedule import RefreshPolicy
from .transport import HeadlessTransport, RequestOptions

__version__ = "0.1.0"

__all__ = [
    "ClientClosed",
    "ConfigurationError",
    "DiscoveryError",
    "Endpoint",
    "EndpointStatus",
    "HeadlessClient",
    "HeadlessLBError",
    "HeadlessTransport",
    "HealthCheck",
    "InvalidRequest",
    "InvalidServiceName",
    "NoEndpointsAvailable",
    "NotStarted",
    "OrdinalNotFound",
    "OutlierPolicy",
    "RefreshPolicy",
    "RequestOptions",
    "Resolution",
    "RetryBudget",
    "RetryPolicy",
    "ServiceName",
    "__version__",
    "expand_service_name",
]
