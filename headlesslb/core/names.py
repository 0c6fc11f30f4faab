"""Service names: parse, validate, expand once to an absolute FQDN; Pod hostname → ordinal.

Pure code apart from the small loader at the bottom (the Pod's namespace), which reads a file or
the environment once at start; resolv.conf is read by :mod:`.resolv` (re-exported here). A short
name is expanded here exactly once, so every later DNS query is for an absolute name: no
``ndots:5`` search-list storm on each refresh.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigurationError, InvalidServiceName
from .endpoint import Endpoint
from .resolv import ResolvConf, load_resolv_conf, nameservers_from, parse_nameserver

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "ORDINAL_MAX",
    "STATEFULSET_NAME_MAX",
    "ResolvConf",
    "ServiceName",
    "assign_ordinals",
    "detect_namespace",
    "expand_service_name",
    "is_dns_label",
    "load_resolv_conf",
    "nameservers_from",
    "parse_nameserver",
    "parse_port",
    "split_ordinal",
    "split_ordinal_text",
    "validate_domain",
    "validate_label",
    "validate_statefulset",
]

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
ORDINAL_MAX = 2**31 - 1
"""The highest StatefulSet ordinal: Kubernetes keeps ordinals (and ``spec.ordinals.start``) in an
int32, so a hostname ``web-<n>`` with a larger n cannot be a StatefulSet Pod."""

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SERVICE_LABEL = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")  # DNS-1035: starts with a letter
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_ORDINAL = re.compile(r"^(?P<set>[a-z0-9]([a-z0-9-]*[a-z0-9])?)-(?P<ordinal>0|[1-9][0-9]*)$")


@dataclass(frozen=True, slots=True)
class ServiceName:
    """A Service name expanded to an absolute FQDN, as every DNS query uses it."""

    fqdn: str
    """Absolute name with the trailing dot, e.g. ``web-hl.default.svc.cluster.local.``."""
    service: str
    """The first label: the Service's own name (``web-hl``)."""
    namespace: str | None
    """The namespace when the name is a cluster Service name, else ``None``."""

    def srv_name(self, port_name: str, protocol: str = "tcp") -> str:
        """The SRV name of a named port: ``_http._tcp.<fqdn>``."""
        return f"_{port_name}._{protocol}.{self.fqdn}"

    def pod_fqdn(self, hostname: str) -> str:
        """The per-Pod name a StatefulSet Pod gets: ``web-0.<fqdn>``."""
        return f"{hostname}.{self.fqdn}"

    @property
    def host(self) -> str:
        """The FQDN without the trailing dot: what goes in Host headers and TLS SNI."""
        return self.fqdn.rstrip(".")

    def __str__(self) -> str:
        return self.host


def _check_labels(name: str, original: str) -> list[str]:
    if not name:
        raise InvalidServiceName(f"empty Service name {original!r}")
    if len(name) > 253:
        raise InvalidServiceName(f"Service name {original!r} is longer than 253 characters")
    labels = name.split(".")
    for label in labels:
        if not label:
            raise InvalidServiceName(f"Service name {original!r} has an empty label")
        if len(label) > 63:
            raise InvalidServiceName(
                f"label {label!r} of {original!r} is longer than 63 characters"
            )
        if not _LABEL.match(label):
            raise InvalidServiceName(
                f"label {label!r} of {original!r} is not a DNS-1123 label: use a-z, 0-9 and '-',"
                " starting and ending with a letter or digit"
            )
    if not _SERVICE_LABEL.match(labels[0]):
        raise InvalidServiceName(
            f"Service name {labels[0]!r} must start with a letter (DNS-1035 label)"
        )
    return labels


def expand_service_name(
    name: str,
    *,
    namespace: str | None = None,
    cluster_domain: str | None = None,
) -> ServiceName:
    """Expand ``web-hl``, ``web-hl.ns``, ``web-hl.ns.svc`` or an FQDN to an absolute name.

    ``namespace`` is needed only for a bare ``web-hl``; ``cluster_domain`` defaults to
    ``cluster.local``. Any other name with three or more labels (``api.example.com``) is taken
    as already complete. Raises :class:`InvalidServiceName` saying what is wrong.
    """
    if not isinstance(name, str):
        raise InvalidServiceName(f"Service name must be a str, not {type(name).__name__}")
    original = name
    name = name.strip().lower()
    absolute = name.endswith(".")
    labels = _check_labels(name.rstrip(".") if absolute else name, original)
    domain = (cluster_domain or DEFAULT_CLUSTER_DOMAIN).strip(".").lower()
    _check_labels(domain, cluster_domain or domain)
    if namespace is not None:
        _check_labels(namespace, namespace)
        if "." in namespace:
            raise InvalidServiceName(f"namespace {namespace!r} must be a single DNS label")

    if absolute:
        fqdn_labels = labels
    elif len(labels) == 1:
        if namespace is None:
            raise InvalidServiceName(
                f"cannot tell the namespace of {original!r}: pass namespace=, set POD_NAMESPACE,"
                " or use a qualified name such as 'web-hl.default'",
                argument="namespace",
            )
        fqdn_labels = [labels[0], namespace, "svc", *domain.split(".")]
    elif len(labels) == 2:
        fqdn_labels = [*labels, "svc", *domain.split(".")]
    elif len(labels) == 3 and labels[2] == "svc":
        fqdn_labels = [*labels, *domain.split(".")]
    else:
        fqdn_labels = labels
    ns = fqdn_labels[1] if len(fqdn_labels) >= 3 and fqdn_labels[2] == "svc" else None
    fqdn = ".".join(fqdn_labels) + "."
    if len(fqdn) > 254:
        raise InvalidServiceName(f"expanded name {fqdn!r} is longer than 253 characters")
    return ServiceName(fqdn=fqdn, service=fqdn_labels[0], namespace=ns)


def parse_port(port: int | str | None) -> int | str | None:
    """Validate a port: an int 1-65535, a named port (IANA service name, for SRV), or None."""
    if port is None:
        return None
    if isinstance(port, bool):
        raise ConfigurationError(f"port must be an int or a port name, not {port!r}")
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            raise ConfigurationError(f"port {port} is out of range 1-65535")
        return port
    if isinstance(port, str):
        if port.isdigit():
            return parse_port(int(port))
        if _PORT_NAME.match(port) and re.search("[a-z]", port) and "--" not in port:
            return port
        raise ConfigurationError(
            f"port name {port!r} is not a valid IANA service name"
            " (1-15 of a-z, 0-9 and '-', with at least one letter)"
        )
    raise ConfigurationError(f"port must be an int or a port name, not {type(port).__name__}")


def split_ordinal(hostname: str) -> tuple[str, int] | None:
    """``web-3`` → ``("web", 3)``; ``None`` if the hostname carries no StatefulSet ordinal.

    An ordinal above :data:`ORDINAL_MAX` is no ordinal (``None``): no Pod can have it.
    """
    parts = split_ordinal_text(hostname)
    if parts is None or len(parts[1]) > len(str(ORDINAL_MAX)):  # never int() a huge string
        return None
    ordinal = int(parts[1])
    return (parts[0], ordinal) if ordinal <= ORDINAL_MAX else None


def split_ordinal_text(hostname: str) -> tuple[str, str] | None:
    """``web-3`` → ``("web", "3")``: the shape of a StatefulSet Pod's name, ordinal unchecked.

    For telling a hostname that merely is not a Pod name from one that claims an ordinal no Pod
    can have (``web-99999999999999999999``), which :func:`split_ordinal` reads as no ordinal.
    """
    match = _ORDINAL.fullmatch(hostname)
    if match is None:
        return None
    return match["set"], match["ordinal"]


def is_dns_label(label: str) -> bool:
    """Whether ``label`` is a DNS-1123 label (what a Pod hostname must be): a-z, 0-9, '-'."""
    return bool(_LABEL.fullmatch(label))


def detect_namespace(
    resolv: ResolvConf,
    env: Mapping[str, str] | None = None,
    service_account_file: str | os.PathLike[str] = SERVICE_ACCOUNT_NAMESPACE,
) -> str | None:
    """The Pod's namespace: ``POD_NAMESPACE``, the service-account file, else resolv.conf."""
    env = os.environ if env is None else env
    if env.get("POD_NAMESPACE", "").strip():
        return env["POD_NAMESPACE"].strip()
    try:
        text = Path(service_account_file).read_text().strip()
    except OSError:
        text = ""
    return text or resolv.namespace


STATEFULSET_NAME_MAX = 52
"""Longest StatefulSet name that leaves room in a 63-character Pod hostname for ``-<ordinal>``
(Kubernetes itself keeps StatefulSet names this short for the same reason)."""


def validate_label(name: str, value: object, *, max_length: int = 63) -> str:
    """A DNS-1123 label (namespace, Pod hostname): 1-``max_length`` of a-z, 0-9 and '-',
    starting and ending with a letter or digit. Returns it; raises ConfigurationError naming
    the argument ``name`` otherwise."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str (a DNS-1123 label), not {value!r}")
    if not value or len(value) > max_length:
        raise ConfigurationError(
            f"{name} must be 1-{max_length} characters long, not {len(value)}: {value!r}"
        )
    if not _LABEL.fullmatch(value):
        raise ConfigurationError(
            f"{name} {value!r} is not a DNS-1123 label: use a-z, 0-9 and '-', starting and ending"
            " with a letter or digit"
        )
    return value


def validate_statefulset(name: str, value: object) -> str:
    """A StatefulSet name whose Pods' hostnames ``<name>-<ordinal>`` are valid DNS labels: a
    DNS-1123 label of at most :data:`STATEFULSET_NAME_MAX` (52) characters."""
    return validate_label(name, value, max_length=STATEFULSET_NAME_MAX)


def validate_domain(name: str, value: object) -> str:
    """A cluster domain such as ``cluster.local`` (a trailing dot is allowed, any case): DNS-1123
    labels, 253 characters at most. Returns it lower-cased, without the trailing dot."""
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a str such as 'cluster.local', not {value!r}")
    domain = value.lower()
    domain = domain[:-1] if domain.endswith(".") else domain
    if not domain or len(domain) > 253:
        raise ConfigurationError(f"{name} must be a DNS name of 1-253 characters, not {value!r}")
    for label in domain.split("."):
        if not label or len(label) > 63 or not _LABEL.fullmatch(label):
            raise ConfigurationError(
                f"{name} {value!r} has an invalid label {label!r}: each label must be 1-63 of"
                " a-z, 0-9 and '-', starting and ending with a letter or digit"
            )
    return domain


def assign_ordinals(endpoints: Iterable[Endpoint], statefulset: str | None) -> list[Endpoint]:
    """``endpoints`` with the StatefulSet ordinal their hostnames carry: those of
    ``statefulset``'s Pods, or (None) of the one StatefulSet every named Pod belongs to."""
    eps = list(endpoints)
    parsed = {e.key: split_ordinal(e.hostname) for e in eps if e.hostname}
    sets = {p[0] for p in parsed.values() if p is not None}
    if statefulset is None:
        # Only when every named Pod is "<one prefix>-<n>" is it safe to read n as an ordinal.
        if len(sets) != 1 or any(p is None for p in parsed.values()):
            return eps
        statefulset = next(iter(sets))
    out = []
    for e in eps:
        p = parsed.get(e.key)
        if p is not None and p[0] == statefulset:
            e = replace(e, ordinal=p[1])
        out.append(e)
    return out
