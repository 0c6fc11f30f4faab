"""The ``HEADLESSLB_*`` environment variables: where a client's DNS comes from when the app is
run outside the cluster (``uvicorn --reload`` against a :class:`~headlesslb.testing.LocalCluster`).

Pure: :func:`from_environ` reads the mapping it is handed (the composition root passes
``os.environ``, read once per client), never ``os.environ`` itself. Each variable stands for the
keyword argument of the same name; the precedence is

    the argument  >  ``HEADLESSLB_*``  >  resolv.conf, ``POD_NAMESPACE``, the service-account file

An empty (or blank) variable counts as unset; a malformed one is a
:class:`~headlesslb.errors.ConfigurationError` naming the variable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..errors import ConfigurationError
from .names import nameservers_from, validate_domain, validate_label

__all__ = [
    "CLUSTER_DOMAIN",
    "NAMESERVERS",
    "NAMESPACE",
    "ZONE",
    "EnvironSettings",
    "from_environ",
]

NAMESERVERS = "HEADLESSLB_NAMESERVERS"
"""Comma-separated ``ip``, ``ip:port`` or ``[ipv6]:port``, in order: ``nameservers=``."""
NAMESPACE = "HEADLESSLB_NAMESPACE"
"""A namespace (a DNS-1123 label): ``namespace=``."""
CLUSTER_DOMAIN = "HEADLESSLB_CLUSTER_DOMAIN"
"""A cluster domain such as ``cluster.local``: ``cluster_domain=``."""
ZONE = "HEADLESSLB_ZONE"
"""The client's zone (its node's ``topology.kubernetes.io/zone``): ``EndpointSlices(zone=)``."""


@dataclass(frozen=True, slots=True)
class EnvironSettings:
    """What the ``HEADLESSLB_*`` variables say, checked; None where a variable is unset."""

    nameservers: tuple[tuple[str, int], ...] | None = None
    namespace: str | None = None
    cluster_domain: str | None = None
    zone: str | None = None


def from_environ(env: Mapping[str, str]) -> EnvironSettings:
    """Read the ``HEADLESSLB_*`` variables from ``env``; a malformed one raises
    :class:`~headlesslb.errors.ConfigurationError` naming it."""
    nameservers = None
    if text := _value(env, NAMESERVERS):
        specs = [spec.strip() for spec in text.split(",")]
        try:
            nameservers = nameservers_from(specs)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{NAMESERVERS}={text!r}: {exc} (expected 'ip:port,ip:port')"
            ) from None
    namespace = _checked(env, NAMESPACE, validate_label)
    domain = _checked(env, CLUSTER_DOMAIN, validate_domain)
    zone = _value(env, ZONE)
    if zone is not None and len(zone) > 253:
        raise ConfigurationError(f"{ZONE} is longer than 253 characters")
    return EnvironSettings(nameservers, namespace, domain, zone)


def _value(env: Mapping[str, str], variable: str) -> str | None:
    value = env.get(variable)
    return value.strip() or None if isinstance(value, str) else None


def _checked(
    env: Mapping[str, str], variable: str, check: Callable[[str, object], str]
) -> str | None:
    text = _value(env, variable)
    if text is None:
        return None
    try:
        return check(variable, text)
    except ConfigurationError as exc:
        raise ConfigurationError(str(exc)) from None
