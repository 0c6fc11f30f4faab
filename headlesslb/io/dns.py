"""Discovery over headless-Service DNS: A/AAAA, SRV, TTL → :class:`Resolution`.

The I/O shell's DNS half, on dnspython's async resolver. One call to :meth:`DnsDiscovery.resolve`
is one discovery round; the refresher decides when to call it. Every query is for an absolute name
(the name was expanded once, in :mod:`headlesslb.names`), a truncated UDP answer is retried over
TCP by dnspython, and the whole round is bounded by ``anyio.fail_after`` because dnspython's own
``lifetime`` can overshoot.

**A partial failure is partial.** A round's queries run in parallel (A and AAAA in dual stack, the
A lookups of SRV targets): when some fail, the round keeps what the others answered, logs what
failed once at WARNING and marks the :class:`Resolution` ``partial`` (the refresher then asks again
sooner). Only when every query failed does the round raise, always a plain
:class:`~.errors.DiscoveryError`, never an exception group. Each query must answer a little before
the round's deadline, so one that is never answered (a resolver that drops AAAA) costs its own
answer, not everyone's.

**Nothing from DNS is trusted.** A record that cannot describe a Pod is skipped, never failing the
round: SRV port 0, the SRV target ``.`` (RFC 2782: the service is decidedly not available),
addresses no Pod can have (unspecified, ``0.0.0.0/8``, multicast, reserved ``240.0.0.0/4`` incl.
broadcast, link-local incl. the cloud metadata address ``169.254.169.254``, IPv4-mapped IPv6;
loopback is fine), a hostname claiming an ordinal above :data:`~.names.ORDINAL_MAX`. Each such
record is logged once per :class:`DnsDiscovery` (not every round; the memory of what was logged is
bounded). A SRV target that is not a DNS-1123 label gives no hostname; TTLs above 2**31-1 read as 0
(RFC 2181 §8) and are capped at an hour.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anyio
import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from ..core.endpoint import Endpoint, Resolution
from ..core.names import ORDINAL_MAX, ServiceName, is_dns_label, split_ordinal, split_ordinal_text
from ..errors import ConfigurationError, DiscoveryError

__all__ = ["DnsDiscovery", "IpFamily"]

log = logging.getLogger("headlesslb.dns")

IpFamily = Literal["ipv4", "ipv6", "dual"]
_MAX_TTL = 3600
"""Cap on a TTL from DNS, in seconds (CoreDNS never serves more for cluster names)."""
_MAX_NOTED = 256
"""Skipped records remembered per DnsDiscovery, so a bad record is logged once, not every round."""
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
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
        return _sane_ttl(self.rrset.ttl) if self.rrset is not None else None


@dataclass(slots=True)
class _Round:
    """One round's side results: the queries that failed, the records it skipped."""

    deadline: float
    """When each query must have answered (a little before the round's own deadline)."""
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


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
        self._noted: dict[str, None] = {}  # skipped records already logged, oldest first
        if edns_payload:
            self._resolver.use_edns(0, 0, edns_payload)
        else:
            self._resolver.use_edns(False)

    async def resolve(self) -> Resolution:
        """One round. NXDOMAIN/no data → empty Resolution; DNS failure → DiscoveryError.

        When only some of the round's queries fail, the Resolution holds what the others gave
        and is marked ``partial``.
        """
        rnd = self._new_round()
        try:
            with anyio.fail_after(self.timeout):
                if isinstance(self.port, str):
                    resolution = await self._resolve_srv(self.port, rnd)
                else:
                    resolution = await self._resolve_addresses(self.port, rnd)
        except TimeoutError:
            raise DiscoveryError(
                f"DNS did not answer for {self.service.fqdn} within {self.timeout:g} s"
                f" (nameservers {self._nameserver_text()})"
            ) from None
        finally:
            self._log_skipped(rnd)
        return self._finish(resolution, rnd, self.service.fqdn)

    async def resolve_name(self, name: str, port: int) -> Resolution:
        """Resolve one absolute name's addresses (e.g. a Pod's own name) on ``port``."""
        rnd = self._new_round()
        try:
            with anyio.fail_after(self.timeout):
                answers = await self._query_all([(name, t) for t in _RDTYPES[self.ip_family]], rnd)
            endpoints = [Endpoint(ip, port) for a in answers for ip in _addresses(a, rnd)]
        except TimeoutError:
            raise DiscoveryError(
                f"DNS did not answer for {name} within {self.timeout:g} s"
            ) from None
        finally:
            self._log_skipped(rnd)
        return self._finish(Resolution(tuple(endpoints), _min_ttl(answers)), rnd, name)

    # -- the two shapes of a round ----------------------------------------------------------------
    async def _resolve_addresses(self, port: int, rnd: _Round) -> Resolution:
        answers = await self._query_all(
            [(self.service.fqdn, t) for t in _RDTYPES[self.ip_family]], rnd
        )
        endpoints = sorted(
            {Endpoint(ip, port) for a in answers for ip in _addresses(a, rnd)},
            key=lambda e: e.key,
        )
        return Resolution(tuple(endpoints), _min_ttl(answers))

    async def _resolve_srv(self, port_name: str, rnd: _Round) -> Resolution:
        srv_name = self.service.srv_name(port_name)
        (srv,) = await self._query_all([(srv_name, dns.rdatatype.SRV)], rnd)
        assert srv is not None  # a single query that failed raised
        if srv.rrset is None:
            await self._explain_missing_port(port_name, rnd)
            return Resolution((), _min_ttl([srv]))
        # Pods' addresses normally come in the additional section. A large answer drops them
        # (as CoreDNS does), and asking per Pod would be a query storm: past a few, one A/AAAA
        # query for the Service gives the addresses, without hostnames.
        addresses = _additional_addresses(srv.response, _RDTYPES[self.ip_family], rnd)
        targets = _srv_targets(srv_name, srv.rrset, rnd)
        missing = [t for t in targets if t not in addresses]
        answers: list[_Answer | None] = [srv]
        if len(missing) > _MAX_TARGET_LOOKUPS:
            return await self._addresses_with_srv_port(srv_name, targets, addresses, answers, rnd)
        if missing:
            queries = [(t, rdtype) for t in missing for rdtype in _RDTYPES[self.ip_family]]
            extra = await self._query_all(queries, rnd)
            answers.extend(extra)
            for (target, _), answer in zip(queries, extra, strict=True):
                addresses.setdefault(target, []).extend(_addresses(answer, rnd))
        endpoints: dict[tuple[str, int], Endpoint] = {}
        for target, port in targets.items():
            ips = addresses.get(target, [])
            hostname = _pod_hostname(target, ips, self.service)
            if hostname is not None and _impossible_pod(hostname, target, rnd):
                continue
            for ip in ips:
                endpoints.setdefault((ip, port), Endpoint(ip, port, hostname))
        with_ordinals = _assign_ordinals(endpoints.values(), self.statefulset)
        return Resolution(tuple(sorted(with_ordinals, key=lambda e: e.key)), _min_ttl(answers))

    async def _addresses_with_srv_port(
        self,
        srv_name: str,
        targets: dict[str, int],
        addresses: dict[str, list[str]],
        answers: list[_Answer | None],
        rnd: _Round,
    ) -> Resolution:
        ports = set(targets.values())
        if len(ports) != 1:
            raise DiscoveryError(
                f"{srv_name} lists {len(targets)} Pods on {len(ports)} ports without their"
                " addresses; cannot tell which Pod listens where"
            )
        (port,) = ports
        named: dict[str, str | None] = {}
        for t in targets:
            ips = addresses.get(t, [])
            hostname = _pod_hostname(t, ips, self.service)
            if hostname is not None and _impossible_pod(hostname, t, rnd):
                hostname = None  # its address, if the Service's A records list it, stays nameless
            for ip in ips:
                named[ip] = hostname
        a_answers = await self._query_all(
            [(self.service.fqdn, rdtype) for rdtype in _RDTYPES[self.ip_family]], rnd
        )
        ips = sorted({ip for a in a_answers for ip in _addresses(a, rnd)})
        endpoints = _assign_ordinals(
            (Endpoint(ip, port, named.get(ip)) for ip in ips), self.statefulset
        )
        return Resolution(
            tuple(sorted(endpoints, key=lambda e: e.key)),
            _min_ttl([*answers, *a_answers]),
        )

    async def _explain_missing_port(self, port_name: str, rnd: _Round) -> None:
        # No SRV: either the Service is gone (fine: no endpoints) or the port name is wrong, which
        # should not silently look like "no Pods".
        answers = await self._query_all(
            [(self.service.fqdn, t) for t in _RDTYPES[self.ip_family]], rnd
        )
        if any(a is not None and a.rrset is not None for a in answers):
            raise DiscoveryError(
                f"Service {self.service.host} exists but has no port named {port_name!r}"
                f" (no SRV record {self.service.srv_name(port_name)})"
            )

    # -- rounds ------------------------------------------------------------------------------------
    def _new_round(self) -> _Round:
        # Queries must answer a little before the round's deadline, so that what did answer can
        # still be used when one never does.
        margin = min(self.timeout / 4, 0.5)
        return _Round(anyio.current_time() + self.timeout - margin)

    def _finish(self, resolution: Resolution, rnd: _Round, name: str) -> Resolution:
        if not rnd.failures:
            return resolution
        log.warning(
            "partial DNS answer for %s: %s; using the %d endpoints the other queries gave",
            name,
            "; ".join(rnd.failures),
            len(resolution.endpoints),
        )
        return replace(resolution, partial=True)

    def _log_skipped(self, rnd: _Round) -> None:
        noted = self._noted
        for what in rnd.skipped:
            if what in noted:
                del noted[what]  # seen again: move it to the young end
            else:
                log.warning("skipped a DNS record for %s: %s", self.service.host, what)
                if len(noted) >= _MAX_NOTED:
                    del noted[next(iter(noted))]
            noted[what] = None

    # -- queries -----------------------------------------------------------------------------------
    async def _query_all(
        self, queries: list[tuple[str, dns.rdatatype.RdataType]], rnd: _Round
    ) -> list[_Answer | None]:
        """Answers in the order of ``queries``, ``None`` for those that failed.

        Failures are noted in ``rnd``; only when every query failed is one DiscoveryError raised.
        """
        results: list[_Answer | None] = [None] * len(queries)
        errors: list[DiscoveryError] = []
        # The backend is chosen per call: dnspython caches the first one it sniffs, which breaks a
        # process that runs both asyncio and trio (design §8).
        backend = dns.asyncbackend.get_backend(dns.asyncbackend.sniff())

        async def one(i: int, name: str, rdtype: dns.rdatatype.RdataType) -> None:
            # Nothing may escape: a failure in one query must not cancel the others (nor come
            # out of the task group as an ExceptionGroup).
            try:
                with anyio.fail_after(rnd.deadline - anyio.current_time()):
                    results[i] = await self._query(name, rdtype, backend)
            except TimeoutError:
                errors.append(
                    DiscoveryError(
                        f"DNS did not answer {name} {rdtype.name} in time"
                        f" (nameservers {self._nameserver_text()})"
                    )
                )
            except DiscoveryError as exc:
                errors.append(exc)
            except Exception as exc:  # a bug: say so, but keep it a typed error for callers
                log.error("DNS query %s %s failed unexpectedly", name, rdtype.name, exc_info=exc)
                error = DiscoveryError(f"DNS query {name} {rdtype.name} failed: {exc!r}")
                error.__cause__ = exc
                errors.append(error)

        if len(queries) == 1:
            await one(0, *queries[0])
        else:
            async with anyio.create_task_group() as tg:
                for i, (name, rdtype) in enumerate(queries):
                    tg.start_soon(one, i, name, rdtype)
        if errors and len(errors) == len(queries):
            if len(errors) == 1:
                raise errors[0]
            shown = "; ".join(str(e) for e in errors[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            raise DiscoveryError(f"every DNS query failed: {shown}{more}") from errors[0]
        rnd.failures.extend(str(e) for e in errors)
        return results

    # ``backend`` is a dns.asyncbackend.Backend, which dnspython re-exports only implicitly.
    async def _query(
        self, name: str, rdtype: dns.rdatatype.RdataType, backend: Any
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
        except (dns.exception.DNSException, OSError) as exc:
            raise DiscoveryError(f"DNS query {name} {rdtype.name} failed: {exc}") from exc
        return _Answer(answer.rrset, answer.response)

    def _nameserver_text(self) -> str:
        return ", ".join(str(ns) for ns in self._resolver.nameservers)


def _addresses(answer: _Answer | None, rnd: _Round) -> list[str]:
    return [] if answer is None else _usable_addresses(answer.rrset, rnd)


def _usable_addresses(rrset: dns.rrset.RRset | None, rnd: _Round) -> list[str]:
    """The addresses of an A/AAAA rrset that can be a Pod's; the others are noted as skipped."""
    if rrset is None:
        return []
    found = []
    for rd in rrset:
        ip = ipaddress.ip_address(rd.address)
        why = _unusable(ip)
        if why is None:
            found.append(str(ip))
        else:
            rnd.skipped.append(f"{ip} ({rrset.name}): {why}, no Pod has such an address")
    return found


def _unusable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why no Pod can have this address, or None. Loopback is fine (the local cluster uses it)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return "IPv4-mapped IPv6"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified (0.0.0.0/8, ::)"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved:
        return "reserved (240.0.0.0/4, incl. broadcast)"
    if ip.is_link_local:
        return "link-local"
    return None


def _srv_targets(srv_name: str, rrset: dns.rrset.RRset, rnd: _Round) -> dict[str, int]:
    """SRV target (case-folded) → port, without the records that cannot lead to a Pod."""
    targets: dict[str, int] = {}
    for rd in rrset:
        # DNS names compare case-insensitively: fold them once here.
        target = rd.target.to_text().lower()
        if target == ".":
            rnd.skipped.append(f"{srv_name} SRV target '.': service not available (RFC 2782)")
        elif rd.port == 0:
            rnd.skipped.append(f"{srv_name} SRV {target} port 0: no Pod listens on port 0")
        else:
            targets[target] = rd.port
    return targets


def _sane_ttl(ttl: int) -> float:
    # RFC 2181 §8: a TTL with the top bit set is read as 0.
    return float(min(ttl, _MAX_TTL)) if 0 <= ttl <= 2**31 - 1 else 0.0


def _min_ttl(answers: Iterable[_Answer | None]) -> float:
    got = [a for a in answers if a is not None]
    ttls = [a.ttl for a in got if a.ttl is not None]
    if ttls:
        return min(ttls)
    # Negative answer: cache it for the SOA minimum if the server said, else the refresher's floor.
    for a in got:
        if a.response is not None:
            for rrset in a.response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return min(_sane_ttl(rrset.ttl), _sane_ttl(rrset[0].minimum))
    return 0.0


def _additional_addresses(
    response: dns.message.Message | None,
    rdtypes: tuple[dns.rdatatype.RdataType, ...],
    rnd: _Round,
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if response is not None:
        for rrset in response.additional:
            if rrset.rdtype in rdtypes and rrset.rdclass == dns.rdataclass.IN:
                name = rrset.name.to_text().lower()
                found.setdefault(name, []).extend(_usable_addresses(rrset, rnd))
    return found


def _pod_hostname(target: str, ips: Iterable[str], service: ServiceName) -> str | None:
    """The Pod hostname a SRV target names, or None for an address-derived or invalid name."""
    if not target.endswith("." + service.fqdn):
        return None
    label = target[: -len(service.fqdn) - 1]
    # A Pod's hostname is a DNS-1123 label; anything else (escapes, '_', several labels) is not.
    if not is_dns_label(label):
        return None
    # Pods without a hostname get a name made from their address (10-0-0-1 / fd00--1).
    for ip in ips:
        if label in (ip.replace(".", "-"), ip.replace(":", "-")):
            return None
    return label


def _impossible_pod(hostname: str, target: str, rnd: _Round) -> bool:
    """A StatefulSet-like name whose ordinal no Pod can have (``web-99999999999999999999``)."""
    if split_ordinal(hostname) is not None or split_ordinal_text(hostname) is None:
        return False
    rnd.skipped.append(f"SRV target {target}: ordinal beyond {ORDINAL_MAX}, not a StatefulSet Pod")
    return True


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
