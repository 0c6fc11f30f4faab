"""Guard tests: the public names, and the sans-I/O core importing nothing from the I/O shell."""

from __future__ import annotations

import ast
from pathlib import Path

import headlesslb

PACKAGE = Path(headlesslb.__file__).parent
PURE = [
    "clock",
    "endpoint",
    "names",
    "snapshot",
    "pool",
    "schedule",
    "retry",
    "validate",
    "balancer",
    "pickers/base",
    "pickers/round_robin",
    "pickers/p2c",
    "pickers/hashing",
    "pickers/hashtables",
    "pickers/ordinal",
    "pickers/__init__",
]
SHELL = {"dns", "refresher", "transport", "client", "cli", "demo", "health", "metrics", "testing"}
IO_LIBRARIES = {"httpx", "httpcore", "dns", "anyio", "tenacity", "trio", "asyncio", "socket"}


def test_public_names_are_pinned() -> None:
    assert sorted(headlesslb.__all__) == sorted(
        [
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
    )
    for name in headlesslb.__all__:
        assert getattr(headlesslb, name) is not None
        if name[0].isupper():
            assert getattr(headlesslb, name).__doc__, f"{name} has no docstring"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            prefix = "." * node.level
            names.add(prefix + (node.module or ""))
    return names


def test_pure_core_does_no_io() -> None:
    for module in PURE:
        path = PACKAGE / f"{module}.py"
        if not path.exists():
            continue
        for name in _imports(path):
            top = name.lstrip(".").split(".")[0]
            if name.startswith("."):
                assert top not in SHELL, f"{module} imports the I/O shell module {name}"
            else:
                assert top not in IO_LIBRARIES, f"{module} imports {name}"
