"""Authoritative DNS server for the local cluster (runs in the child process).

Message parsing and rendering is dnspython's; the UDP and TCP servers are plain asyncio so they
live on the same event loop as the Pods and can be stopped, restarted and broken on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.SRV import SRV

from ._model import DnsMode, tcp_socket

# RFC 1035 limit for UDP without EDNS; 4096 caps what a client may ask for with EDNS.
_UDP_PLAIN_MAX = 512
_UDP_EDNS_CAP = 4096
_TCP_MAX = 65535
_RENDERED_MAX = 256
"""Rendered answers kept per zone version (the cache starts over when it is full)."""

Node = dict[dns.rdatatype.RdataType, tuple[int, list[dns.rdata.Rdata]]]


@dataclass
class Zone:
    """An immutable-by-convention view of every record of the cluster domain."""

    origin: dns.name.Name
    ttl: int
    nodes: dict[dns.name.Name, Node] = field(default_factory=dict)
    empty_non_terminals: set[dns.name.Name] = field(default_factory=set)

    def add(self, name: dns.name.Name, rdata: dns.rdata.Rdata, ttl: int | None = None) -> None:
        """Add one record; ancestors up to the origin become existing (empty) names."""
        node = self.nodes.setdefault(name, {})
        # No de-duplication: the cluster never produces duplicates, and comparing rdatas
        # would make building a 1,000-Pod zone quadratic.
        old_ttl, rdatas = node.get(rdata.rdtype, (self.ttl if ttl is None else ttl, []))
        rdatas.append(rdata)
        node[rdata.rdtype] = (old_ttl, rdatas)
        parent = name
        while parent != self.origin and len(parent) > len(self.origin):
            parent = parent.parent()
            self.empty_non_terminals.add(parent)

    def exists(self, name: dns.name.Name) -> bool:
        """True for names that own records or have descendants that do (RFC 8020)."""
        return name in self.nodes or name in self.empty_non_terminals

    def soa_rrset(self) -> dns.rrset.RRset:
        """The apex SOA, used in the authority section of negative answers."""
        ttl, rdatas = self.nodes[self.origin][dns.rdatatype.SOA]
        rrset = dns.rrset.RRset(self.origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        rrset.update_ttl(ttl)
        for rd in rdatas:
            rrset.add(rd)
        return rrset


# dnspython's rdata constructors are untyped; building rdatas directly is ~10x faster than
# from_text, which matters for 1,000-Pod zones.
_RdataCtor = Callable[..., dns.rdata.Rdata]
_SOA, _A, _SRV = cast(_RdataCtor, SOA), cast(_RdataCtor, A), cast(_RdataCtor, SRV)


def a_record(ip: str) -> dns.rdata.Rdata:
    """An A rdata."""
    return _A(dns.rdataclass.IN, dns.rdatatype.A, ip)


def srv_record(priority: int, weight: int, port: int, target: dns.name.Name) -> dns.rdata.Rdata:
    """An SRV rdata."""
    return _SRV(dns.rdataclass.IN, dns.rdatatype.SRV, priority, weight, port, target)


def make_soa(origin: dns.name.Name, ttl: int) -> dns.rdata.Rdata:
    """A CoreDNS-like SOA: ns.dns.<zone> hostmaster.<zone>, negative TTL = record TTL."""
    return _SOA(
        dns.rdataclass.IN,
        dns.rdatatype.SOA,
        dns.name.Name(("ns", "dns", *origin.labels)),
        dns.name.Name(("hostmaster", *origin.labels)),
        1,
        7200,
        1800,
        86400,
        ttl,
    )


class _ResetConnection(Exception):
    """The query's mode is ``tcp_reset``: reset its TCP connection instead of answering."""


class DnsServer:
    """UDP + TCP DNS server on one ip:port, answering from ``zone_provider()``."""

    def __init__(self, ip: str, port: int, zone_provider: Callable[[], Zone]) -> None:
        self.ip = ip
        self.port = port
        self.zone_provider = zone_provider
        self.mode: DnsMode = "normal"
        self.rules: dict[tuple[dns.name.Name | None, dns.rdatatype.RdataType | None], DnsMode] = {}
        """Selective modes by (qname, qtype), either one None for "any"; see :meth:`mode_for`."""
        self.counts: Counter[tuple[str, str]] = Counter()
        self.total = 0
        self.bytes_sent = 0
        """Bytes of the replies sent (DNS messages, with TCP's length prefix)."""
        self.tcp_replies = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._rendered: dict[tuple[object, ...], bytes] = {}
        self._rendered_zone: Zone | None = None

    @property
    def running(self) -> bool:
        """True while both sockets are open."""
        return self._udp is not None

    @staticmethod
    def bind_pair(ip: str, port: int) -> tuple[socket.socket, socket.socket]:
        """Bind UDP and TCP sockets on the same ip:port (port 0 picks one free for both)."""
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind((ip, port))
            port = udp.getsockname()[1]
            tcp = tcp_socket()
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((ip, port))
                tcp.listen(128)
            except OSError:
                tcp.close()
                raise
        except OSError:
            udp.close()
            raise
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp

    async def start(self, sockets: tuple[socket.socket, socket.socket] | None = None) -> None:
        """Serve on pre-bound sockets, or bind ip:port again (after ``stop``)."""
        if self.running:
            return
        udp_sock, tcp_sock = sockets or self.bind_pair(self.ip, self.port)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), sock=udp_sock
        )
        self._udp = transport
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)

    async def stop(self) -> None:
        """Close both sockets and every open TCP connection."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._tcp_writers):
                writer.transport.abort()
            self._tcp_writers.clear()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
            self._tcp = None

    def set_mode(
        self,
        mode: DnsMode,
        name: dns.name.Name | None = None,
        rdtype: dns.rdatatype.RdataType | None = None,
    ) -> None:
        """The whole server's mode (clearing every selective one), or one for matching queries."""
        if name is None and rdtype is None:
            self.mode = mode
            self.rules.clear()
        else:
            self.rules[(name, rdtype)] = mode

    def mode_for(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> DnsMode:
        """The most specific mode set for a query: name and type, name, type, else the server's."""
        if self.rules:
            for key in ((qname, rdtype), (qname, None), (None, rdtype)):
                mode = self.rules.get(key)
                if mode is not None:
                    return mode
        return self.mode

    def reset_counts(self) -> None:
        """Forget the query counters."""
        self.counts.clear()
        self.total = 0
        self.bytes_sent = 0
        self.tcp_replies = 0

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(2)
                wire = await reader.readexactly(int.from_bytes(header, "big"))
                try:
                    reply = self.handle(wire, tcp=True)
                except _ResetConnection:
                    # SO_LINGER 0: closing sends RST, as a TCP side that fails does.
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._tcp_writers.discard(writer)
            writer.close()

    def handle(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """Answer one wire-format query; None means "say nothing". Over TCP, a query whose mode
        is ``tcp_reset`` raises :class:`_ResetConnection` (over UDP it is answered as usual)."""
        reply = self._handle(wire, tcp=tcp)
        if reply is not None:
            self.bytes_sent += len(reply) + (2 if tcp else 0)
            self.tcp_replies += tcp
        return reply

    def _handle(self, wire: bytes, *, tcp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        self.total += 1
        mode = self.mode
        if query.question:
            q = query.question[0]
            self.counts[(q.name.to_text().lower(), dns.rdatatype.to_text(q.rdtype))] += 1
            mode = self.mode_for(q.name, q.rdtype)
        if mode == "drop":
            return None
        if mode == "tcp_reset":
            if tcp:
                raise _ResetConnection
            mode = "normal"
        if tcp:
            limit = _TCP_MAX
        elif query.edns < 0:
            limit = _UDP_PLAIN_MAX
        else:
            limit = min(max(query.payload, _UDP_PLAIN_MAX), _UDP_EDNS_CAP)
        key: tuple[object, ...] | None = None
        if mode == "normal" and len(query.question) == 1 and query.opcode() == dns.opcode.QUERY:
            # Rendering a 1,000-record answer with dnspython takes a good part of a second (a
            # 64 KiB SRV answer several, fitted by bisection): answer a repeated question from
            # the bytes rendered for the same zone, with this query's ID.
            q = query.question[0]
            key = (q.name.to_text(), q.rdtype, q.rdclass, query.flags, query.edns, limit, tcp)
            zone = self.zone_provider()
            if zone is not self._rendered_zone:
                self._rendered_zone = zone
                self._rendered.clear()
            cached = self._rendered.get(key)
            if cached is not None:
                return query.id.to_bytes(2, "big") + cached
        wire = self._render(query, mode, limit, tcp=tcp)
        if key is not None:
            if len(self._rendered) >= _RENDERED_MAX:
                self._rendered.clear()
            self._rendered[key] = wire[2:]
        return wire

    def _render(self, query: dns.message.Message, mode: DnsMode, limit: int, *, tcp: bool) -> bytes:
        response = dns.message.make_response(query, our_payload=_UDP_EDNS_CAP)
        if mode == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif mode == "refuse":
            response.set_rcode(dns.rcode.REFUSED)
        elif query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            self._answer(response, self.zone_provider())
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            pass
        if tcp:
            return _fit_tcp(response)
        # Over UDP a truncated answer carries no records at all, so a client can never
        # mistake a partial answer for the full set: it must retry over TCP.
        truncated = dns.message.make_response(query, our_payload=_UDP_EDNS_CAP)
        truncated.flags |= dns.flags.TC | dns.flags.AA
        return truncated.to_wire(max_size=limit)

    def _answer(self, response: dns.message.Message, zone: Zone) -> None:
        q = response.question[0]
        qname = q.name
        lookup = qname  # dnspython names compare and hash case-insensitively
        if not lookup.is_subdomain(zone.origin) or q.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        if not zone.exists(lookup):
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(zone.soa_rrset())
            return
        node = zone.nodes.get(lookup, {})
        if q.rdtype == dns.rdatatype.ANY:
            types = list(node)
        else:
            types = [q.rdtype] if q.rdtype in node else []
        if not types:
            response.authority.append(zone.soa_rrset())
            return
        for rdtype in types:
            response.answer.append(_rrset(qname, rdtype, node[rdtype]))
            if rdtype == dns.rdatatype.SRV:
                self._add_glue(response, zone, node[rdtype][1])

    @staticmethod
    def _add_glue(response: dns.message.Message, zone: Zone, srvs: list[dns.rdata.Rdata]) -> None:
        for srv in srvs:
            assert isinstance(srv, SRV)
            target_node = zone.nodes.get(srv.target)
            if not target_node:
                continue
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                if rdtype in target_node:
                    response.additional.append(_rrset(srv.target, rdtype, target_node[rdtype]))


def _fit_tcp(response: dns.message.Message) -> bytes:
    """Make an answer fit in one TCP message (64 KiB), as CoreDNS does.

    Glue goes first (no TC needed, RFC 2181 §9). If the answer alone is still too big (SRV
    targets are never compressed: ~1,000 Deployment Pods' SRV records exceed 64 KiB), keep as
    many answer records as fit and set TC.
    """
    response.additional = []
    try:
        return response.to_wire(max_size=_TCP_MAX)
    except dns.exception.TooBig:
        pass
    records = [(rrset, rd) for rrset in response.answer for rd in rrset]
    response.flags |= dns.flags.TC

    def render(k: int) -> bytes | None:
        answer: list[dns.rrset.RRset] = []
        for rrset, rd in records[:k]:
            if not answer or answer[-1].name != rrset.name or answer[-1].rdtype != rrset.rdtype:
                answer.append(dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype))
                answer[-1].update_ttl(rrset.ttl)
            answer[-1].add(rd)
        response.answer = answer
        try:
            return response.to_wire(max_size=_TCP_MAX)
        except dns.exception.TooBig:
            return None

    lo, hi = 0, len(records)  # render(lo) fits, render(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if render(mid) is None:
            hi = mid
        else:
            lo = mid
    wire = render(lo)
    assert wire is not None
    return wire


def _rrset(
    name: dns.name.Name, rdtype: dns.rdatatype.RdataType, data: tuple[int, list[dns.rdata.Rdata]]
) -> dns.rrset.RRset:
    ttl, rdatas = data
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
    rrset.update_ttl(ttl)
    for rd in rdatas:
        rrset.add(rd)
    return rrset


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport is not a registered DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        reply = self.server.handle(data, tcp=False)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable" from a client that gave up is not our problem.
        pass
