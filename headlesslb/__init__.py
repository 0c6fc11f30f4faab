"""headlesslb: client-side load balancing over Kubernetes headless Services.

Discover a headless Service's Pods from DNS, balance each request over them (round-robin,
least-request, peak-EWMA, consistent-hash sharding, StatefulSet ordinal pinning), retry on another
Pod, eject bad Pods, and fall back to the Service's ClusterIP/LB twin when discovery has nothing.
"""

import logging as _logging

from .aio.client import HeadlessClient
from .aio.transport import HeadlessTransport
from .core.endpoint import Endpoint, EndpointStatus, Resolution, zone_shares
from .core.health import HealthCheck
from .core.hedge import HedgePolicy
from .core.keys import KeyFrom
from .core.names import ServiceName, expand_service_name
from .core.options import RequestOptions
from .core.orca import LoadReport
from .core.pickers import ConsistentHash, LeastLoaded, SlowStart, WeightedRoundRobin
from .core.pool import OutlierPolicy
from .core.report import AttemptReport, Report
from .core.retry import RetryBudget, RetryPolicy
from .core.schedule import RefreshPolicy
from .core.subset import Subset
from .core.throttle import AdaptiveThrottle
from .errors import (
    AnswerTooLarge,
    ClientClosed,
    ConfigurationError,
    DeadlineExceeded,
    DiscoveryError,
    DnsUnreachable,
    EmptyAnswer,
    HeadlessLBError,
    InvalidRequest,
    InvalidServiceName,
    NoEndpointsAvailable,
    NoHealthyPods,
    NotReady,
    NotReadyInTime,
    NotStarted,
    OrdinalNotFound,
    ServiceNotFound,
    Throttled,
)
from .io.kube import EndpointSlices, KubeAPIConfig

__version__ = "0.1.0"

# A library logs, the application decides where logs go (none until it configures logging).
_logging.getLogger("headlesslb").addHandler(_logging.NullHandler())

__all__ = [
    "AdaptiveThrottle",
    "AnswerTooLarge",
    "AttemptReport",
    "ClientClosed",
    "ConfigurationError",
    "ConsistentHash",
    "DeadlineExceeded",
    "DiscoveryError",
    "DnsUnreachable",
    "EmptyAnswer",
    "Endpoint",
    "EndpointSlices",
    "EndpointStatus",
    "HeadlessClient",
    "HeadlessLBError",
    "HeadlessTransport",
    "HealthCheck",
    "HedgePolicy",
    "InvalidRequest",
    "InvalidServiceName",
    "KeyFrom",
    "KubeAPIConfig",
    "LeastLoaded",
    "LoadReport",
    "NoEndpointsAvailable",
    "NoHealthyPods",
    "NotReady",
    "NotReadyInTime",
    "NotStarted",
    "OrdinalNotFound",
    "OutlierPolicy",
    "RefreshPolicy",
    "Report",
    "RequestOptions",
    "Resolution",
    "RetryBudget",
    "RetryPolicy",
    "ServiceName",
    "ServiceNotFound",
    "SlowStart",
    "Subset",
    "Throttled",
    "WeightedRoundRobin",
    "__version__",
    "expand_service_name",
    "zone_shares",
]
