"""Guard tests: the public names, and the layers of the package and what each may import.

The layout is the architecture (docs/architecture.md): ``core/`` is pure (no I/O, no I/O library,
directly or through anything it imports), ``io/`` is the async I/O both clients share,
``options``/``clientbase``/``compose`` put a client together, ``aio/`` and ``sync/`` are the two
request-path shells and never import each other; no layer imports one above it (:data:`LAYERS`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import headlesslb
import headlesslb.httpx2
import headlesslb.httpx2.sync
import headlesslb.sync

PACKAGE = Path(headlesslb.__file__).parent
IO_LIBRARIES = {
    "httpx",
    "httpcore",
    "httpx2",
    "httpcore2",
    "dns",
    "anyio",
    "tenacity",
    "trio",
    "asyncio",
    "socket",
    "ssl",
    "select",
    "selectors",
    "subprocess",
    "multiprocessing",
    "urllib",
    "http",
}
BRIDGE = "headlesslb.errors"
"""The one module the core may import that touches an I/O library: its request-path errors
subclass ``httpx.TransportError`` so users can catch them as httpx errors."""

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"core"}),
    frozenset({"telemetry"}),
    frozenset({"io"}),
    frozenset({"options", "clientbase"}),
    frozenset({"compose"}),
    frozenset({"aio", "sync"}),
    frozenset({"httpx2"}),
)
"""The layers, bottom first. A module may import its own layer and the layers below it: never one
above (``io`` never imports ``compose``: a runtime is built from a spec, not from a client's
parts), and never a sibling on its own row (the two shells never import each other). The httpx2
flavour sits on top: its shells use the async and the blocking shell's hand-written parts."""
UNLAYERED = {"root", "__main__", "assembly", "cli", "demo", "errors", "events", "testing", "top"}
"""The public API, the commands, the demo and the testing kit: they may use anything."""


def _allowed(layer: str) -> set[str]:
    for row, layers in enumerate(LAYERS):
        if layer in layers:
            return {layer}.union(*LAYERS[:row])
    raise KeyError(layer)


ALLOWED_LAYERS = {layer: _allowed(layer) for layers in LAYERS for layer in layers}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(headlesslb modules imported, top-level external packages imported) by one module."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
                names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("headlesslb"):
                # the longest prefix that is a module of ours
                parts = name.split(".")
                while parts and ".".join(parts) not in MODULES:
                    parts.pop()
                if parts:
                    internal.add(".".join(parts))
            else:
                external.add(name.split(".")[0])
    internal.discard(module)
    return internal, external


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


def _reachable(module: str) -> set[str]:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for imported in _imports(current)[0]:
            if imported == "headlesslb":  # importing a subpackage runs the root __init__; not ours
                continue
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def test_public_names_are_pinned() -> None:
    assert sorted(headlesslb.__all__) == sorted(
        [
            "AdaptiveThrottle",
            "AttemptReport",
            "ClientClosed",
            "ConfigurationError",
            "ConsistentHash",
            "DeadlineExceeded",
            "AnswerTooLarge",
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
            "KubeAPIConfig",
            "InvalidServiceName",
            "KeyFrom",
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
    )
    for flavour in (headlesslb.sync, headlesslb.httpx2, headlesslb.httpx2.sync):
        assert sorted(flavour.__all__) == ["HeadlessClient", "HeadlessTransport"]
    for module in (headlesslb, headlesslb.sync, headlesslb.httpx2, headlesslb.httpx2.sync):
        for name in module.__all__:
            assert getattr(module, name) is not None
            if name[0].isupper():
                assert getattr(module, name).__doc__, f"{name} has no docstring"


def test_pure_core_does_no_io_even_transitively() -> None:
    core = [m for m in MODULES if _layer(m) == "core"]
    assert "headlesslb.core.call" in core and "headlesslb.core.pickers.hashing" in core
    for module in core:
        reachable = _reachable(module)
        outside = {m for m in reachable if _layer(m) != "core" and m != BRIDGE}
        assert not outside, f"{module} reaches the shell through {sorted(outside)}"
        for name in {module, *reachable} - {BRIDGE}:
            io = _imports(name)[1] & IO_LIBRARIES
            assert not io, f"{module} reaches {sorted(io)} through {name}"


def test_the_bridge_imports_httpx_only() -> None:
    internal, external = _imports(BRIDGE)
    assert not internal
    assert external & IO_LIBRARIES == {"httpx"}


def test_layers_import_only_what_they_may() -> None:
    for module in MODULES:
        layer = _layer(module)
        allowed = ALLOWED_LAYERS.get(layer)
        if allowed is None:
            continue  # the root (public API, cli, demo, errors) and testing may use anything
        for imported in _reachable(module):
            if imported == BRIDGE:
                continue
            assert _layer(imported) in allowed, (
                f"{module} ({layer}) reaches {imported} ({_layer(imported)})"
            )


def test_every_module_has_a_layer_or_is_the_api() -> None:
    for module in MODULES:
        layer = _layer(module)
        assert layer in ALLOWED_LAYERS or layer in UNLAYERED, f"{module}: add it to LAYERS"


def test_no_layer_imports_upward() -> None:
    assert ALLOWED_LAYERS["io"] == {"core", "telemetry", "io"}
    rank = {layer: row for row, layers in enumerate(LAYERS) for layer in layers}
    for module in MODULES:
        layer = _layer(module)
        if layer not in rank:
            continue
        for imported in _imports(module)[0]:
            above = _layer(imported)
            assert rank.get(above, -1) <= rank[layer], f"{module} ({layer}) imports {imported}"


def test_the_shells_never_import_each_other() -> None:
    for module in MODULES:
        if _layer(module) == "aio":
            assert not any(_layer(m) == "sync" for m in _reachable(module)), module
        if _layer(module) == "sync":
            assert not any(_layer(m) == "aio" for m in _reachable(module)), module


def test_the_checked_options_are_the_documented_options() -> None:
    from dataclasses import fields

    from headlesslb.compose import Settings
    from headlesslb.options import TransportOptions

    assert [f.name for f in fields(Settings)] == list(TransportOptions.__annotations__)
