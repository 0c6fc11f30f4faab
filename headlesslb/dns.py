"""Discovery over headless-Service DNS: A/AAAA, SRV, TTL → :class:`Resolution`.

The I/O shell's DNS half, on dnspython's async resolver. One call to :meth:`DnsDiscovery.resolve`
is one discovery round; the refresher decides when to call it. Every query is for an absolute name
(the name was expanded once, in :mod:`headlesslb.names`), a truncated UDP answer is retried over
TCP by dnspython, and the whole round is bounded by ``anyio.fail_after`` because dnspython's own
``lifetime`` can overshoot.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import dns._asyncbackend
import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from .endpoint import Endpoint, Resolution
from .errors import ConfigurationError, DiscoveryError
from .names import ServiceName, split_ordinal

__all__ = ["DnsDiscovery", "IpFamily"]

IpFamily = Literal["ipv4", "ipv6", "dual"]
_MAX_TARGET_LOOKUPS = 16
"""SRV targets we resolve one by one when the additional section lacks them; beyond, one A query."""
_RDTYPES: dict[str, tuple[dns.rdatatype.RdataType, ...]] = {
    "ipv4": (dns.rdatatype.A,),
    "ipv6": (dns.rdatatype.AAAA,),
    "dual": (dns.rdatatype.A, dns.rdatatype.AAAA),
}


@dataclass(frozen=True, slots=True)
class _Answer:
    rrset: dns.rrset.RRset | None
    response: dns.message.Message | None

    @property
    def ttl(self) -> float | None:
        return float(self.rrset.ttl) if self.rrset is not None else None


class DnsDiscovery:
    """Resolves one Service to its Pod endpoints.

    ``port`` is a named port (looked up as SRV ``_<port>._tcp.<fqdn>``, which gives each Pod's port
    and hostname) or an int (A/AAAA only, every Pod on that port). ``statefulset`` names the
    StatefulSet whose Pods' hostnames carry ordinals; by default it is inferred when every hostname
    shares one ``<name>-<n>`` prefix.
    """

    def __init__(
        self,
        service: ServiceName,
        *,
        port: int | str,
        nameservers: Sequence[tuple[str, int]],
        ip_family: IpFamily = "ipv4",
        timeout: float = 3.0,
        statefulset: str | None = None,
        edns_payload: int | None = 1232,
    ) -> None:
        if ip_family not in _RDTYPES:
            raise ConfigurationError(
                f"ip_family must be one of {sorted(_RDTYPES)}, not {ip_family!r}"
            )
        if timeout <= 0:
            raise ConfigurationError("discovery timeout must be > 0")
        if not nameservers:
            raise ConfigurationError("no nameserver: pass nameservers= or fix resolv.conf")
        self.service = service
        self.port = port
        self.ip_family: IpFamily = ip_family
        self.timeout = timeout
        self.statefulset = statefulset
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, p) for ip, p in nameservers]
        # Per-try timeout; the round as a whole is bounded by fail_after below.
        self._resolver.timeout = min(timeout, 1.0)
        self._resolver.lifetime = timeout
        self._resolver.cache = None
        if edns_payload:
            self._resolver.use_edns(0, 0, edns_payload)
        else:
            self._resolver.use_edns(False)

    async def resolve(self) -> Resolution:
        """One round. NXDOMAIN/no data → empty Resolution; DNS failure → DiscoveryError."""
        try:
            with anyio.fail_after(self.timeout):
                if isinstance(self.port, str):
                    return await self._resolve_srv(self.port)
                return await self._resolve_addresses(self.port)
        except TimeoutError:
            raise DiscoveryError(
                f"DNS did not answer for {self.service.fqdn} within {self.timeout:g} s"
                f" (nameservers {self._nameserver_text()})"
            ) from None

    async def resolve_name(self, name: str, port: int) -> Resolution:
        """Resolve one absolute name's addresses (e.g. a Pod's own name) on ``port``."""
        try:
            with anyio.fail_after(self.timeout):
                answers = await self._query_all([(name, t) for t in _RDTYPES[self.ip_family]])
        except TimeoutError:
            raise DiscoveryError(
                f"DNS did not answer for {name} within {self.timeout:g} s"
            ) from None
        endpoints = [Endpoint(ip, port) for a in answers for ip in _addresses(a.rrset)]
        return Resolution(tuple(endpoints), _min_ttl(answers))

    # -- the two shapes of a round ----------------------------------------------------------------
    async def _resolve_addresses(self, port: int) -> Resolution:
        answers = await self._query_all([(self.service.fqdn, t) for t in _RDTYPES[self.ip_family]])
        endpoints = sorted(
            {Endpoint(ip, port) for a in answers for ip in _addresses(a.rrset)},
            key=lambda e: e.key,
        )
        return Resolution(tuple(endpoints), _min_ttl(answers))

    async def _resolve_srv(self, port_name: str) -> Resolution:
        srv_name = self.service.srv_name(port_name)
        (srv,) = await self._query_all([(srv_name, dns.rdatatype.SRV)])
        if srv.rrset is None:
            await self._explain_missing_port(port_name)
            return Resolution((), _min_ttl([srv]))
        # Pods' addresses normally come in the additional section. A large answer drops them
        # (as CoreDNS does), and asking per Pod would be a query storm: past a few, one A/AAAA
        # query for the Service gives the addresses, without hostnames.
        addresses = _additional_addresses(srv.response, _RDTYPES[self.ip_family])
        # DNS names compare case-insensitively: fold them once here.
        targets = {rd.target.to_text().lower(): rd.port for rd in srv.rrset}
        missing = [t for t in targets if t not in addresses]
        answers = [srv]
        if len(missing) > _MAX_TARGET_LOOKUPS:
            return await self._addresses_with_srv_port(srv_name, targets, addresses, answers)
        if missing:
            queries = [(t, rdtype) for t in missing for rdtype in _RDTYPES[self.ip_family]]
            extra = await self._query_all(queries)
            answers.extend(extra)
            for (target, _), answer in zip(queries, extra, strict=True):
                addresses.setdefault(target, []).extend(_addresses(answer.rrset))
        endpoints: dict[tuple[str, int], Endpoint] = {}
        for target, port in targets.items():
            for ip in addresses.get(target, []):
                hostname = _pod_hostname(target, ip, self.service)
                endpoints.setdefault((ip, port), Endpoint(ip, port, hostname))
        with_ordinals = _assign_ordinals(endpoints.values(), self.statefulset)
        return Resolution(tuple(sorted(with_ordinals, key=lambda e: e.key)), _min_ttl(answers))

    async def _addresses_with_srv_port(
        self,
        srv_name: str,
        targets: dict[str, int],
        addresses: dict[str, list[str]],
        answers: list[_Answer],
    ) -> Resolution:
        ports = set(targets.values())
        if len(ports) != 1:
            raise DiscoveryError(
                f"{srv_name} lists {len(targets)} Pods on {len(ports)} ports without their"
                " addresses; cannot tell which Pod listens where"
            )
        (port,) = ports
        named = {
            ip: _pod_hostname(t, ip, self.service) for t in targets for ip in addresses.get(t, [])
        }
        a_answers = await self._query_all(
            [(self.service.fqdn, rdtype) for rdtype in _RDTYPES[self.ip_family]]
        )
        ips = sorted({ip for a in a_answers for ip in _addresses(a.rrset)})
        endpoints = _assign_ordinals(
            (Endpoint(ip, port, named.get(ip)) for ip in ips), self.statefulset
        )
        return Resolution(
            tuple(sorted(endpoints, key=lambda e: e.key)),
            _min_ttl([*answers, *a_answers]),
        )

    async def _explain_missing_port(self, port_name: str) -> None:
        # No SRV: either the Service is gone (fine: no endpoints) or the port name is wrong, which
        # should not silently look like "no Pods".
        answers = await self._query_all([(self.service.fqdn, t) for t in _RDTYPES[self.ip_family]])
        if any(a.rrset is not None for a in answers):
            raise DiscoveryError(
                f"Service {self.service.host} exists but has no port named {port_name!r}"
                f" (no SRV record {self.service.srv_name(port_name)})"
            )

    # -- queries -----------------------------------------------------------------------------------
    async def _query_all(self, queries: list[tuple[str, dns.rdatatype.RdataType]]) -> list[_Answer]:
        results: list[_Answer | None] = [None] * len(queries)
        # The backend is chosen per call: dnspython caches the first one it sniffs, which breaks a
        # process that runs both asyncio and trio (design §8).
        backend = dns.asyncbackend.get_backend(dns.asyncbackend.sniff())

        async def one(i: int, name: str, rdtype: dns.rdatatype.RdataType) -> None:
            results[i] = await self._query(name, rdtype, backend)

        if len(queries) == 1:
            await one(0, *queries[0])
        else:
            async with anyio.create_task_group() as tg:
                for i, (name, rdtype) in enumerate(queries):
                    tg.start_soon(one, i, name, rdtype)
        return [r for r in results if r is not None]

    async def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType, backend: dns._asyncbackend.Backend
    ) -> _Answer:
        try:
            answer = await self._resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False, backend=backend
            )
        except dns.resolver.NXDOMAIN as exc:
            responses: dict[Any, dns.message.Message] = exc.kwargs.get("responses") or {}
            return _Answer(None, next(iter(responses.values()), None))
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryError(
                f"no nameserver could answer {name} {rdtype.name} (SERVFAIL/REFUSED): {exc}"
            ) from exc
        except dns.exception.Timeout as exc:
            raise DiscoveryError(
                f"DNS timed out for {name} {rdtype.name} (nameservers {self._nameserver_text()})"
            ) from exc
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"DNS query {name} {rdtype.name} failed: {exc}") from exc
        return _Answer(answer.rrset, answer.response)

    def _nameserver_text(self) -> str:
        return ", ".join(str(ns) for ns in self._resolver.nameservers)


def _addresses(rrset: dns.rrset.RRset | None) -> list[str]:
    if rrset is None:
        return []
    return [str(ipaddress.ip_address(rd.address)) for rd in rrset]


def _min_ttl(answers: Iterable[_Answer]) -> float:
    ttls = [a.ttl for a in answers if a.ttl is not None]
    if ttls:
        return min(ttls)
    # Negative answer: cache it for the SOA minimum if the server said, else the refresher's floor.
    for a in answers:
        if a.response is not None:
            for rrset in a.response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return float(min(rrset.ttl, rrset[0].minimum))
    return 0.0


def _additional_addresses(
    response: dns.message.Message | None, rdtypes: tuple[dns.rdatatype.RdataType, ...]
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if response is not None:
        for rrset in response.additional:
            if rrset.rdtype in rdtypes and rrset.rdclass == dns.rdataclass.IN:
                found.setdefault(rrset.name.to_text().lower(), []).extend(_addresses(rrset))
    return found


def _pod_hostname(target: str, ip: str, service: ServiceName) -> str | None:
    """The Pod hostname a SRV target names, or None for an address-derived name."""
    if not target.endswith("." + service.fqdn):
        return None
    label = target[: -len(service.fqdn) - 1]
    if "." in label:
        return None
    # Pods without a hostname get a name made from their address (10-0-0-1 / fd00--1).
    if label in (ip.replace(".", "-"), ip.replace(":", "-")):
        return None
    return label


def _assign_ordinals(endpoints: Iterable[Endpoint], statefulset: str | None) -> list[Endpoint]:
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
            e = Endpoint(e.ip, e.port, e.hostname, p[1])
        out.append(e)
    return out
