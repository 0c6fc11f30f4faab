"""Discovery over headless-Service DNS: A/AAAA, SRV, TTL → :class:`Resolution`.

The I/O shell's DNS half, on plain non-blocking sockets (:mod:`.dnswire` writes the queries and
reads the replies). One call to :meth:`DnsDiscovery.resolve` is one discovery round; the refresher
decides when to call it. Every query is for an absolute name (the name was expanded once, in
:mod:`headlesslb.core.names`), a truncated UDP answer is retried over TCP (a question that went
straight to TCP is asked over UDP when TCP fails), and the whole round is bounded by
``anyio.fail_after``. Within it each query asks the nameservers as resolv.conf's options say
(:class:`~headlesslb.core.resolv.DnsTries`: how long a try waits, how many passes over the list,
``rotate``), to a socket address carrying the scope id of an IPv6 zone (``fe80::1%eth0``).

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
loopback is fine), a hostname claiming an ordinal above
:data:`~headlesslb.core.names.ORDINAL_MAX`. Each such record is logged once per
:class:`DnsDiscovery` (not every round; the memory of what was logged is bounded). A SRV target
that is not a DNS-1123 label gives no hostname; TTLs above 2**31-1 read as 0 (RFC 2181 §8) and
are capped at an hour.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import logging
import os
import random
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import anyio

from ..core.endpoint import Endpoint, Resolution
from ..core.names import (
    ORDINAL_MAX,
    ServiceName,
    assign_ordinals,
    is_dns_label,
    split_ordinal,
    split_ordinal_text,
)
from ..core.resolv import DnsTries
from ..core.slices import unusable_address
from ..errors import AnswerTooLarge, ConfigurationError, DiscoveryError
from .dnswire import (
    AAAA,
    RDTYPE_NAMES,
    SRV,
    STEP,
    MalformedReply,
    Reply,
    address_text,
    advance,
    build_query,
    reading,
    reply_id,
)
from .dnswire import A as A_TYPE
from .pauses import between_steps

__all__ = ["DnsDiscovery", "IpFamily", "nameserver_address", "unusable_nameserver"]

log = logging.getLogger("headlesslb.dns")

IpFamily = Literal["ipv4", "ipv6", "dual"]
_MAX_TTL = 3600
"""Cap on a TTL from DNS, in seconds (CoreDNS never serves more for cluster names)."""
_MAX_NOTED = 256
"""Skipped records remembered per DnsDiscovery, so a bad record is logged once, not every round."""
_MAX_REMEMBERED_REPLIES = 8
"""Replies kept per DnsDiscovery to recognise an unchanged one by its bytes (the Service's A,
AAAA and SRV answers; a Pod looked up by name now and then comes and goes)."""
_MAX_TARGET_LOOKUPS = 16
"""SRV targets we resolve one by one when the additional section lacks them; beyond, one A query."""
_RDTYPES: dict[str, tuple[int, ...]] = {
    "ipv4": (A_TYPE,),
    "ipv6": (AAAA,),
    "dual": (A_TYPE, AAAA),
}
_ADDRESS_LIMIT = {A_TYPE: "about 4,090 IPv4", AAAA: "about 2,340 IPv6"}
"""What one 64 KiB DNS message over TCP can carry, for the error that says so."""
_RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}
_query_ids = random.SystemRandom()
"""Unpredictable query IDs (with the OS's random source port): no blind spoofing."""
_rotation = itertools.count(_query_ids.randrange(2**16))
"""Where ``rotate`` starts the next query, as glibc's process-wide counter (a random start, then
one more each query, whichever Service or client asks)."""


@dataclass(frozen=True, slots=True, eq=False)
class _Answer:
    """One query's answer, reduced to what discovery reads (records of class IN)."""

    name: str
    """Where the records are: the question's name, after any CNAME chain in the answer."""
    addresses: tuple[bytes, ...] = ()
    """Raw A (4 bytes) or AAAA (16 bytes) addresses at ``name``."""
    srv: tuple[tuple[str, int], ...] = ()
    """(target, port) of the SRV records at ``name``."""
    record_ttl: int | None = None
    """The smallest TTL of those records; None when there are none."""
    negative_ttl: int | None = None
    """min(SOA TTL, SOA minimum) when the server sent its SOA (a negative answer)."""
    additional: tuple[tuple[str, tuple[bytes, ...]], ...] = ()
    """(owner, raw addresses) of the additional section's A/AAAA records."""
    truncated: bool = False
    """The server set TC over TCP: the answer did not fit in one 64 KiB message."""
    nxdomain: bool = False
    """The server answered NXDOMAIN: the name does not exist (not: it has no such record)."""
    fingerprint: frozenset[object] = field(default_factory=frozenset)
    """The records as a set, order ignored: equal for the same records in another order."""

    @property
    def ttl(self) -> float | None:
        return _sane_ttl(self.record_ttl) if self.record_ttl is not None else None

    @property
    def has_records(self) -> bool:
        return bool(self.addresses or self.srv)


def answer_from_reply(reply: Reply, qname: str, qtype: int) -> _Answer:
    """The :class:`_Answer` a reply to (``qname``, ``qtype``) gives."""
    name = reply.final_name(qname)
    additional = tuple((owner, tuple(raw)) for owner, raw in reply.additional.items())
    srv = tuple(reply.srv.get(name, ())) if qtype == SRV else ()
    addresses = () if qtype == SRV else tuple(reply.addresses.get(name, ()))
    records: list[object] = [*srv, *addresses]
    if srv:  # the Pods' addresses come with SRV records: they are part of what it says
        records += [(owner, ip) for owner, ips in additional for ip in ips]
    return _Answer(
        name,
        addresses=addresses,
        srv=srv,
        record_ttl=reply.answer_ttl.get(name),
        negative_ttl=reply.soa_ttl,
        additional=additional,
        truncated=reply.truncated,
        nxdomain=reply.rcode == 3,
        fingerprint=frozenset(records),
    )


@dataclass(slots=True)
class _Round:
    """One round's side results: the queries that failed, the records it skipped."""

    deadline: float
    """When each query must have answered (a little before the round's own deadline)."""
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True, eq=False)
class _Built:
    """The endpoints a round built, and from which records: an unchanged answer reuses them,
    and a changed one the Endpoint objects of the addresses it still lists."""

    fingerprint: tuple[object, ...]
    endpoints: tuple[Endpoint, ...]
    by_ip: dict[str, Endpoint]


class DnsDiscovery:
    """Resolves one Service to its Pod endpoints.

    ``port`` is a named port (looked up as SRV ``_<port>._tcp.<fqdn>``, which gives each Pod's port
    and hostname) or an int (A/AAAA only, every Pod on that port). ``statefulset`` names the
    StatefulSet whose Pods' hostnames carry ordinals; by default it is inferred when every hostname
    shares one ``<name>-<n>`` prefix.

    ``timeout`` bounds a whole round; ``tries`` says how each of its queries asks the nameservers
    (:class:`~headlesslb.core.resolv.DnsTries`: resolv.conf's ``timeout:``, ``attempts:`` and
    ``rotate``, mapped by :func:`~headlesslb.core.resolv.dns_timing`). Without it a try waits up
    to a second and the servers are asked in order, round after round, until the round ends.
    """

    def __init__(
        self,
        service: ServiceName,
        *,
        port: int | str,
        nameservers: Sequence[tuple[str, int]],
        ip_family: IpFamily = "ipv4",
        timeout: float = 3.0,
        tries: DnsTries | None = None,
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
        self.nameservers: tuple[tuple[str, int], ...] = tuple(nameservers)
        self.tries = tries or DnsTries()
        """How each query asks the nameservers (resolv.conf's timeout, attempts, rotate)."""
        # One try of one nameserver waits this long; the round as a whole is bounded below.
        per_try = self.tries.per_try
        self._try_timeout = min(timeout, 1.0) if per_try is None else per_try
        self._edns_payload = edns_payload or None
        self._noted: dict[str, None] = {}  # skipped records already logged, oldest first
        self._replies: dict[tuple[str, int], tuple[bytes, _Answer]] = {}
        self._built: _Built | None = None
        self._said_srv_too_big = False
        self._over_tcp: set[tuple[str, int]] = set()
        """Questions whose last answer was too big for UDP."""

    async def resolve(self) -> Resolution:
        """One round. NXDOMAIN/no data → empty Resolution; DNS failure → DiscoveryError.

        When only some of the round's queries fail, the Resolution holds what the others gave
        and is marked ``partial``. When the records are the same as last round's (in any order),
        the Resolution carries the very same ``endpoints`` tuple, so the pool can tell at once.
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
        if len(resolution.endpoints) > STEP:
            # Building the endpoints was one step; the pool's update is the next one.
            await between_steps()
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
        resolution = Resolution(tuple(endpoints), _min_ttl(answers), nxdomain=_nxdomain(answers))
        return self._finish(resolution, rnd, name)

    # -- the two shapes of a round ----------------------------------------------------------------
    async def _resolve_addresses(self, port: int, rnd: _Round) -> Resolution:
        answers = await self._query_all(
            [(self.service.fqdn, t) for t in _RDTYPES[self.ip_family]], rnd
        )
        fingerprint = (port, *(None if a is None else a.fingerprint for a in answers))
        endpoints = self._reuse(fingerprint)
        if endpoints is None:
            ips: set[str] = set()
            for a in answers:
                if a is not None:
                    ips.update(await _usable_cooperatively(a, rnd))
            # One port for all: sorting the address texts sorts by (ip, port).
            known = self._built.by_ip if self._built is not None else {}
            built = []
            for ip in sorted(ips):
                endpoint = known.get(ip)
                if endpoint is None or endpoint.port != port or endpoint.hostname is not None:
                    endpoint = Endpoint(ip, port)
                built.append(endpoint)
            endpoints = self._remember(fingerprint, built)
        return Resolution(endpoints, _min_ttl(answers), nxdomain=_nxdomain(answers))

    async def _resolve_srv(self, port_name: str, rnd: _Round) -> Resolution:
        srv_name = self.service.srv_name(port_name)
        (srv,) = await self._query_all([(srv_name, SRV)], rnd)
        assert srv is not None  # a single query that failed raised
        if not srv.srv:
            if srv.truncated:
                raise AnswerTooLarge(
                    f"{srv_name} SRV: the answer is larger than one DNS message (64 KiB over"
                    " TCP) and not one record fitted"
                )
            named = await self._explain_missing_port(port_name, rnd)
            return Resolution((), _min_ttl([srv]), nxdomain=srv.nxdomain and _nxdomain(named))
        answers: list[_Answer | None] = [srv]
        if not srv.truncated:
            # The same records as last round, with every address in the additional section.
            reused = self._reuse((None, srv.fingerprint))
            if reused is not None:
                return Resolution(reused, _min_ttl(answers))
        targets = _srv_targets(srv_name, srv.srv, rnd)
        if srv.truncated:
            # Past ~1,150 Pods of a Deployment the SRV answer exceeds 64 KiB: the Pods' port
            # is the one the records that fitted give, and A/AAAA records list every Pod.
            if not self._said_srv_too_big:
                self._said_srv_too_big = True
                log.warning(
                    "the SRV answer for %s does not fit in one DNS message (%d of its records"
                    " fitted): discovering Pods from A/AAAA records on the SRV port instead;"
                    " hostnames and ordinals are not known this way",
                    srv_name,
                    len(srv.srv),
                )
            return await self._addresses_with_srv_port(srv_name, targets, {}, answers, rnd)
        # Pods' addresses normally come in the additional section. A large answer drops them
        # (as CoreDNS does), and asking per Pod would be a query storm: past a few, one A/AAAA
        # query for the Service gives the addresses, without hostnames.
        addresses = _additional_addresses(srv, _RDTYPES[self.ip_family], rnd)
        missing = [t for t in targets if t not in addresses]
        if len(missing) > _MAX_TARGET_LOOKUPS:
            return await self._addresses_with_srv_port(srv_name, targets, addresses, answers, rnd)
        extra: list[_Answer | None] = []
        queries = [(t, rdtype) for t in missing for rdtype in _RDTYPES[self.ip_family]]
        if queries:
            extra = await self._query_all(queries, rnd)
            answers.extend(extra)
        fingerprint = (None, *(None if a is None else a.fingerprint for a in answers))
        reused = self._reuse(fingerprint)
        if reused is not None:
            return Resolution(reused, _min_ttl(answers))
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
        with_ordinals = assign_ordinals(endpoints.values(), self.statefulset)
        built = self._remember(fingerprint, sorted(with_ordinals, key=_endpoint_key))
        return Resolution(built, _min_ttl(answers))

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
        a_answers = await self._query_all(
            [(self.service.fqdn, rdtype) for rdtype in _RDTYPES[self.ip_family]], rnd
        )
        fingerprint = (
            port,
            frozenset((t, tuple(ips)) for t, ips in addresses.items()),
            *(None if a is None else a.fingerprint for a in a_answers),
        )
        endpoints = self._reuse(fingerprint)
        if endpoints is None:
            named: dict[str, str | None] = {}
            for t in targets:
                ips = addresses.get(t, [])
                hostname = _pod_hostname(t, ips, self.service)
                if hostname is not None and _impossible_pod(hostname, t, rnd):
                    hostname = None  # its address, if the A records list it, stays nameless
                for ip in ips:
                    named[ip] = hostname
            ips = sorted({ip for a in a_answers for ip in _addresses(a, rnd)})
            built = assign_ordinals(
                (Endpoint(ip, port, named.get(ip)) for ip in ips), self.statefulset
            )
            endpoints = self._remember(fingerprint, sorted(built, key=_endpoint_key))
        return Resolution(endpoints, _min_ttl([*answers, *a_answers]))

    async def _explain_missing_port(self, port_name: str, rnd: _Round) -> list[_Answer | None]:
        # No SRV: either the Service is gone (fine: no endpoints) or the port name is wrong, which
        # should not silently look like "no Pods". Returns the Service name's answers.
        answers = await self._query_all(
            [(self.service.fqdn, t) for t in _RDTYPES[self.ip_family]], rnd
        )
        if any(a is not None and a.has_records for a in answers):
            raise DiscoveryError(
                f"Service {self.service.host} exists but has no port named {port_name!r}"
                f" (no SRV record {self.service.srv_name(port_name)})"
            )
        return answers

    # -- unchanged answers -------------------------------------------------------------------------
    def _reuse(self, fingerprint: tuple[object, ...]) -> tuple[Endpoint, ...] | None:
        """Last round's endpoints if this round's records are the same (in any order)."""
        built = self._built
        if built is not None and built.fingerprint == fingerprint:
            return built.endpoints
        return None

    def _remember(
        self, fingerprint: tuple[object, ...], endpoints: Iterable[Endpoint]
    ) -> tuple[Endpoint, ...]:
        kept = tuple(endpoints)
        built = _Built(fingerprint, kept, {e.ip: e for e in kept})
        self._built = built
        return built.endpoints

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
    async def _query_all(self, queries: list[tuple[str, int]], rnd: _Round) -> list[_Answer | None]:
        """Answers in the order of ``queries``, ``None`` for those that failed.

        Failures are noted in ``rnd``; only when every query failed is one DiscoveryError raised.
        """
        results: list[_Answer | None] = [None] * len(queries)
        errors: list[DiscoveryError] = []

        async def one(i: int, name: str, rdtype: int) -> None:
            # Nothing may escape: a failure in one query must not cancel the others (nor come
            # out of the task group as an ExceptionGroup).
            try:
                with anyio.fail_after(rnd.deadline - anyio.current_time()):
                    results[i] = await self._query(name, rdtype)
            except TimeoutError:
                errors.append(
                    DiscoveryError(
                        f"DNS did not answer {name} {RDTYPE_NAMES[rdtype]} in time"
                        f" (nameservers {self._nameserver_text()})"
                    )
                )
            except DiscoveryError as exc:
                errors.append(exc)
            except Exception as exc:  # a bug: say so, but keep it a typed error for callers
                what = f"{name} {RDTYPE_NAMES[rdtype]}"
                log.error("DNS query %s failed unexpectedly", what, exc_info=exc)
                error = DiscoveryError(f"DNS query {what} failed: {exc!r}")
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

    async def _query(self, name: str, rdtype: int) -> _Answer:
        """One question, asked of each nameserver in turn until one answers it: from the first
        server (or, with ``rotate``, the next one round), ``attempts`` times round the list."""
        qname = name.lower()
        what = f"{name} {RDTYPE_NAMES[rdtype]}"
        key = (qname, rdtype)
        servers = self._in_turn()
        problems: list[str] = []
        kinds: list[str] = []
        attempts = self.tries.attempts
        passes = 0
        while servers and (attempts is None or passes < attempts):
            passes += 1
            for server in list(servers):
                try:
                    wire, qid = await self._exchange(server, qname, rdtype)
                    known = self._replies.get(key)
                    if known is not None and known[0] == wire[2:]:
                        return known[1]  # byte for byte the last reply: nothing to read again
                    reply = await _read_cooperatively(wire, qid, qname, rdtype)
                except TimeoutError:
                    continue  # asked again next time round, while attempts and time are left
                except (OSError, MalformedReply, anyio.EndOfStream, anyio.IncompleteRead) as exc:
                    problems.append(f"{_server_text(server)}: {exc or type(exc).__name__}")
                    kinds.append(_failure_kind(exc))
                    servers.remove(server)
                    continue
                if reply.rcode in (0, 3):  # NOERROR, NXDOMAIN
                    return self._answer(key, wire, reply, what)
                rcode = _RCODES.get(reply.rcode, f"rcode {reply.rcode}")
                problems.append(f"{_server_text(server)} answered {rcode}")
                kinds.append(f"answered {rcode}")
                servers.remove(server)
        if servers:  # every try of these timed out
            problems.append(
                f"{', '.join(_server_text(s) for s in servers)}: no answer in {passes}"
                f" attempt{'s' if passes > 1 else ''} of {self._try_timeout:g} s"
            )
            raise DiscoveryError(f"DNS did not answer {what}: {'; '.join(problems)}")
        label = "; ".join(dict.fromkeys(kinds))
        raise DiscoveryError(f"no nameserver could answer {what} ({label}): {'; '.join(problems)}")

    def _in_turn(self) -> list[tuple[str, int]]:
        """The nameservers in the order a query asks them: as listed, or with ``rotate`` from
        the next one round (each query one further, as glibc's RES_ROTATE)."""
        servers = list(self.nameservers)
        if self.tries.rotate and len(servers) > 1:
            start = next(_rotation) % len(servers)
            servers = servers[start:] + servers[:start]
        return servers

    def _answer(self, key: tuple[str, int], wire: bytes, reply: Reply, what: str) -> _Answer:
        qname, rdtype = key
        answer = answer_from_reply(reply, qname, rdtype)
        if answer.truncated and rdtype != SRV:
            raise AnswerTooLarge(
                f"{what}: the answer is larger than one DNS message (64 KiB over TCP) can carry,"
                f" {_ADDRESS_LIMIT[rdtype]} addresses, and came truncated after"
                f" {len(answer.addresses)}; discovering only those would hide Pods. Split the"
                " Service, or give the client fewer Pods to see"
            )
        replies = self._replies
        replies.pop(key, None)
        if len(replies) >= _MAX_REMEMBERED_REPLIES:
            del replies[next(iter(replies))]
        replies[key] = (wire[2:], answer)
        return answer

    async def _exchange(
        self, server: tuple[str, int], qname: str, rdtype: int
    ) -> tuple[bytes, int]:
        """Ask one nameserver over UDP, and over TCP when the UDP reply is truncated.

        Returns the reply's bytes and the query ID it must carry; only the ID (and, over UDP,
        the TC bit) has been looked at. A question whose last answer needed TCP goes straight
        to TCP (RFC 7766 allows it): a 1,000-Pod Service would otherwise cost a truncated UDP
        round trip every refresh. When TCP then fails (refused, reset, timed out), the question
        is asked over UDP in the same exchange: a smaller answer may fit now, and a server
        whose TCP side broke must not freeze the Pod list. Only a UDP reply truncated again
        leaves the TCP failure standing.
        """
        key = (qname, rdtype)
        straight = key in self._over_tcp
        if not straight:
            wire, qid = await self._ask_udp(server, qname, rdtype)
            if not _truncated(wire):
                return wire, qid
        qid = _query_ids.getrandbits(16)
        query = build_query(qname, rdtype, qid, None)
        try:
            with anyio.fail_after(self._try_timeout):
                wire = await _tcp_exchange(server, query)
        except (OSError, anyio.EndOfStream, anyio.IncompleteRead):  # TimeoutError included
            if not straight:
                raise  # UDP was just asked: its answer did not fit
            wire, qid = await self._ask_udp(server, qname, rdtype)
            if _truncated(wire):
                raise
            self._over_tcp.discard(key)
            return wire, qid
        if len(wire) > (self._edns_payload or 512):
            self._over_tcp.add(key)
        else:
            self._over_tcp.discard(key)  # small again: UDP will do
        return wire, qid

    async def _ask_udp(self, server: tuple[str, int], qname: str, rdtype: int) -> tuple[bytes, int]:
        qid = _query_ids.getrandbits(16)
        query = build_query(qname, rdtype, qid, self._edns_payload)
        with anyio.fail_after(self._try_timeout):
            return await _udp_exchange(server, query, qid), qid

    def _nameserver_text(self) -> str:
        return ", ".join(_server_text(s) for s in self.nameservers)


def _truncated(wire: bytes) -> bool:
    """Whether a UDP reply has the TC bit (a reply too short to say fails reading later)."""
    return len(wire) >= 12 and bool(wire[2] & 0x02)


SocketAddress = tuple[str, int] | tuple[str, int, int, int]


def nameserver_address(server: tuple[str, int]) -> SocketAddress:
    """The socket address of a nameserver: ``(ip, port)``, or for an IPv6 address with a zone id
    (``fe80::1%eth0``) ``(ip, port, 0, scope id)``: the socket module does not read a zone in a
    2-tuple's host (connecting fails with EINVAL). Raises OSError when the OS knows no such
    interface."""
    ip, port = server
    address, sep, zone = ip.partition("%")
    if not sep:
        return server
    scope = int(zone) if re.fullmatch(r"[0-9]{1,10}", zone) else socket.if_nametoindex(zone)
    if not 0 < scope < 2**32:
        raise OSError(errno.ENXIO, f"no interface has the index {scope}")
    return (address, port, 0, scope)


def unusable_nameserver(server: tuple[str, int]) -> str | None:
    """Why this machine cannot send to ``server``, or None: a zone id naming no interface here,
    or a link-local IPv6 address naming none (glibc would try it, and fail to send). IPv4
    link-local is fine: NodeLocal DNSCache listens on 169.254.20.10."""
    try:
        nameserver_address(server)
    except OSError as exc:
        return f"{_server_text(server)}: {exc.strerror or exc}"
    ip = ipaddress.ip_address(server[0].partition("%")[0])
    if ip.version == 6 and ip.is_link_local and "%" not in server[0]:
        return f"{_server_text(server)}: a link-local address needs a zone id, as fe80::1%eth0"
    return None


def _nonblocking_socket(server: tuple[str, int], kind: socket.SocketKind) -> socket.socket:
    """A fresh non-blocking socket of ``kind`` for the address family of ``server``."""
    ip, _ = server
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, kind)
    sock.setblocking(False)
    return sock


async def _udp_exchange(server: tuple[str, int], query: bytes, qid: int) -> bytes:
    """Send ``query`` from a fresh socket (a new random source port each time) and wait for the
    reply with ``qid``. A plain non-blocking socket: anyio's UDP sockets resolve even an IP
    address through getaddrinfo in a worker thread, which cost more than the whole exchange."""
    address = nameserver_address(server)
    with _nonblocking_socket(server, socket.SOCK_DGRAM) as sock:
        sock.connect(address)  # the kernel now drops datagrams from any other address
        sock.send(query)
        while True:
            await anyio.wait_readable(sock)
            try:
                wire = sock.recv(65535)
            except BlockingIOError:
                continue
            if reply_id(wire) == qid:
                return wire
            # Otherwise a late reply to an earlier query, or a spoofing attempt: keep waiting.


async def _tcp_exchange(server: tuple[str, int], query: bytes) -> bytes:
    """Send ``query`` over a fresh TCP connection and read the one reply (both framed by a
    two-byte length, RFC 1035 4.2.2). A plain non-blocking socket, as for UDP: anyio's
    ``connect_tcp`` and streams were a third of the CPU of a round whose answer was unchanged."""
    address = nameserver_address(server)
    with _nonblocking_socket(server, socket.SOCK_STREAM) as sock:
        if error := sock.connect_ex(address):
            if error != errno.EINPROGRESS:
                raise OSError(error, f"connecting: {os.strerror(error)}")
            await anyio.wait_writable(sock)
            if error := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                raise OSError(error, f"connecting: {os.strerror(error)}")
        unsent = memoryview(len(query).to_bytes(2, "big") + query)
        while unsent:
            try:
                unsent = unsent[sock.send(unsent) :]
            except BlockingIOError:
                await anyio.wait_writable(sock)
        received = bytearray()
        size = 2  # the length prefix first, then the whole reply
        while len(received) < size:
            await anyio.wait_readable(sock)
            try:
                chunk = sock.recv(65537 - len(received))
            except BlockingIOError:
                continue
            if not chunk:
                raise anyio.IncompleteRead
            received += chunk
            if size == 2 and len(received) >= 2:
                size = 2 + int.from_bytes(received[:2], "big")
        return bytes(received[2:size])


async def _read_cooperatively(wire: bytes, qid: int, qname: str, rdtype: int) -> Reply:
    """Read a reply, letting the event loop run other tasks every few hundred records: a
    4,000-record answer never holds the loop (or, in the sync client, the GIL) for long."""
    steps = reading(wire, qid, qname, rdtype)
    while (reply := advance(steps)) is None:
        await between_steps()
    return reply


def _failure_kind(exc: BaseException) -> str:
    """What asking a nameserver met instead of a reply, in the words of a DNS failure's label.

    A refused connection (a TCP reset, or over UDP an ICMP port unreachable) means no DNS server
    listens there: not a server answering SERVFAIL or REFUSED, which the label says as
    ``answered SERVFAIL``. Timeouts never get here: a query's deadline says them.
    """
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, MalformedReply):
        return "malformed reply"
    if isinstance(exc, anyio.EndOfStream | anyio.IncompleteRead):
        return "connection closed mid-reply"
    return "network error"


def _server_text(server: tuple[str, int]) -> str:
    ip, port = server
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _endpoint_key(endpoint: Endpoint) -> tuple[str, int]:
    return endpoint.key


async def _usable_cooperatively(answer: _Answer, rnd: _Round) -> list[str]:
    """:func:`_addresses` for a big answer, in steps with the event loop running in between."""
    raw = answer.addresses
    if len(raw) <= STEP:
        return _usable_addresses(answer.name, raw, rnd)
    found: list[str] = []
    for start in range(0, len(raw), STEP):
        await between_steps()
        found += _usable_addresses(answer.name, raw[start : start + STEP], rnd)
    return found


def _addresses(answer: _Answer | None, rnd: _Round) -> list[str]:
    return [] if answer is None else _usable_addresses(answer.name, answer.addresses, rnd)


def _usable_addresses(owner: str, raw: Iterable[bytes], rnd: _Round) -> list[str]:
    """The addresses that can be a Pod's; the others are noted as skipped."""
    found = []
    for packed in raw:
        if len(packed) == 4:
            first = packed[0]
            # 0.0.0.0/8, multicast 224/4, reserved 240/4 (broadcast too), link-local 169.254/16:
            # read off the bytes, since ipaddress costs more than the rest of a record together.
            if first and first < 224 and not (first == 169 and packed[1] == 254):
                found.append(address_text(packed))
                continue
        ip = ipaddress.ip_address(packed)
        why = unusable_address(ip)
        if why is None:
            found.append(str(ip))
        else:
            rnd.skipped.append(f"{ip} ({owner}): {why}, no Pod has such an address")
    return found


def _srv_targets(srv_name: str, records: Iterable[tuple[str, int]], rnd: _Round) -> dict[str, int]:
    """SRV target (lower-case already) → port, without the records that cannot lead to a Pod."""
    targets: dict[str, int] = {}
    for target, port in records:
        if target == ".":
            rnd.skipped.append(f"{srv_name} SRV target '.': service not available (RFC 2782)")
        elif port == 0:
            rnd.skipped.append(f"{srv_name} SRV {target} port 0: no Pod listens on port 0")
        else:
            targets[target] = port
    return targets


def _sane_ttl(ttl: int) -> float:
    # RFC 2181 §8: a TTL with the top bit set is read as 0.
    return float(min(ttl, _MAX_TTL)) if 0 <= ttl <= 2**31 - 1 else 0.0


def _nxdomain(answers: Iterable[_Answer | None]) -> bool:
    """Whether the answers that came (some may have failed) all said NXDOMAIN."""
    came = [a for a in answers if a is not None]
    return bool(came) and all(a.nxdomain for a in came)


def _min_ttl(answers: Iterable[_Answer | None]) -> float:
    got = [a for a in answers if a is not None]
    ttls = [a.ttl for a in got if a.ttl is not None]
    if ttls:
        return min(ttls)
    # Negative answer: cache it for the SOA minimum if the server said, else the refresher's floor.
    for a in got:
        if a.negative_ttl is not None:
            return _sane_ttl(a.negative_ttl)
    return 0.0


def _additional_addresses(
    answer: _Answer, rdtypes: tuple[int, ...], rnd: _Round
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    sizes = {4 if t == A_TYPE else 16 for t in rdtypes}
    for owner, raw in answer.additional:
        wanted = [r for r in raw if len(r) in sizes]
        if wanted:
            found.setdefault(owner, []).extend(_usable_addresses(owner, wanted, rnd))
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
