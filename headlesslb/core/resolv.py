"""resolv.conf as glibc reads it, and what its options make of a DNS query.

Pure code apart from the loader at the bottom, which reads the file once at start. glibc's rules
(resolv.conf(5); ``resolv/res_init.c``, ``res_send.c``) are followed, so a Pod's client asks the
servers its own C library would, and gives up when it would:

- A keyword counts only at the very start of a line, followed by a space or a tab; a line starting
  with ``#`` or ``;`` is a comment. Any other line is ignored, as glibc ignores it, and logged.
- ``nameserver`` reads its first word (later words are ignored, so ``nameserver 10.0.0.10 # dns``
  is fine): an IPv4 address, or an IPv6 address with an optional zone id (``fe80::1%eth0``). A line
  glibc cannot read (a name, ``10.0.0.10:53``: resolv.conf takes no port) is skipped and logged.
  The first :data:`MAXNS` (3) addresses count; later ones are ignored and logged.
- ``search`` and ``domain`` (a one-domain search list): the last such line wins. There is no limit
  on the number of domains, as in glibc since 2.26 (glibc 2.25 and older kept 6 domains of 256
  characters in all; the kubelet writes up to 32).
- ``options``: ``timeout:N`` (seconds one try waits for one server, glibc's default 5, capped at
  30; under 1 waits 1 s, as glibc does), ``attempts:N`` (passes over the server list, default 2,
  capped at 5; ``attempts:0``, which makes glibc send nothing at all, is read as 1 and logged) and
  ``rotate`` (each query starts at the next server). Numbers are read as C's ``atoi`` reads them.
  Other options are kept as text and change nothing: ``ndots`` in particular, since a Service name
  is expanded once and then always queried as an absolute name.

:func:`dns_timing` maps the options onto a discovery round (``docs/reference/client.md``, "DNS
and resolv.conf", has the table).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_DISCOVERY_TIMEOUT",
    "MAXNS",
    "DnsTries",
    "ResolvConf",
    "dns_timing",
    "load_resolv_conf",
    "nameservers_from",
    "note_once",
    "parse_nameserver",
]

log = logging.getLogger("headlesslb.dns")

MAXNS = 3
"""glibc's limit on nameservers (``<resolv.h>``): later ``nameserver`` lines are ignored."""
GLIBC_TIMEOUT = 5
"""``RES_TIMEOUT``: seconds one try waits for one server when resolv.conf says nothing."""
GLIBC_ATTEMPTS = 2
"""``RES_DFLRETRY``: passes over the server list when resolv.conf says nothing."""
MAX_TIMEOUT = 30
"""``RES_MAXRETRANS``: ``timeout:`` is capped at this many seconds."""
MAX_ATTEMPTS = 5
"""``RES_MAXRETRY``: ``attempts:`` is capped at this many passes."""
DEFAULT_DISCOVERY_TIMEOUT = 3.0
"""Seconds one discovery round may take when neither ``discovery_timeout=`` nor resolv.conf's
``timeout:``/``attempts:`` say otherwise."""
ROUND_SLACK = 1.0
"""Seconds a round bounded by resolv.conf's options gets beyond its queries' last try, so that the
try, not the round, is what gives up."""

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_ATOI = re.compile(r"\s*([+-]?[0-9]{1,18})")  # no int() of a huge string
_BLANK = re.compile(r"[ \t]")
_KEYWORDS = ("nameserver", "search", "domain", "options", "sortlist")


@dataclass(frozen=True, slots=True)
class ResolvConf:
    """What a resolv.conf says, as glibc reads it (see the module's documentation)."""

    nameservers: tuple[str, ...] = ()
    """At most :data:`MAXNS` addresses, as written: ``10.96.0.10``, ``fe80::1%eth0``."""
    search: tuple[str, ...] = ()
    """The search list, lower-cased, without trailing dots."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Every option as text, name → value (``{"ndots": "5", "rotate": ""}``); the last wins."""
    timeout: int | None = None
    """``timeout:N`` as glibc uses it (1-30 seconds); None when not given."""
    attempts: int | None = None
    """``attempts:N`` as glibc uses it (1-5 passes); None when not given."""
    rotate: bool = False
    """``options rotate``."""
    notes: tuple[str, ...] = ()
    """What was skipped or capped, one sentence each (the loader logs them)."""

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        """Parse resolv.conf text as glibc does; what it ignores is noted in :attr:`notes`."""
        nameservers: list[str] = []
        search: tuple[str, ...] = ()
        options: dict[str, str] = {}
        timeout: int | None = None
        attempts: int | None = None
        rotate = False
        notes: list[str] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line[0] in "#;":
                continue
            keyword = _BLANK.split(line, maxsplit=1)[0]  # glibc: the keyword, then a space or tab
            words = line[len(keyword) :].split()
            where = f"line {number} {line.strip()!r}"
            if keyword not in _KEYWORDS:
                why = "indented" if line[0].isspace() else "not a resolv.conf keyword"
                notes.append(f"{where}: {why}, ignored (as glibc ignores it)")
            elif not words:
                notes.append(f"{where}: nothing after {keyword!r}, ignored")
            elif keyword == "nameserver":
                address = _address(words[0])
                if isinstance(address, str):
                    hint = (
                        " (resolv.conf takes no port)"
                        if "." in words[0] and ":" in words[0]
                        else ""
                    )
                    notes.append(f"{where}: {address}{hint}, ignored (as glibc ignores it)")
                elif len(nameservers) >= MAXNS:
                    notes.append(
                        f"{where}: ignored, glibc uses the first {MAXNS} nameservers (MAXNS)"
                    )
                else:
                    nameservers.append(address[0])
            elif keyword in ("search", "domain"):  # the last one wins; domain is one domain
                chosen = words if keyword == "search" else words[:1]
                search = tuple(d.rstrip(".").lower() for d in chosen if d.rstrip("."))
            elif keyword == "options":
                for word in words:
                    name, colon, value = word.partition(":")
                    options[name] = value
                    if name == "rotate":
                        rotate = True
                    elif name == "timeout" and colon:
                        timeout = _glibc_number(
                            word, value, MAX_TIMEOUT, notes, "glibc waits 1 s all the same"
                        )
                    elif name == "attempts" and colon:
                        attempts = _glibc_number(
                            word, value, MAX_ATTEMPTS, notes, "glibc would send no query at all"
                        )
        return cls(
            nameservers=tuple(nameservers),
            search=search,
            options=options,
            timeout=timeout,
            attempts=attempts,
            rotate=rotate,
            notes=tuple(notes),
        )

    @property
    def namespace(self) -> str | None:
        """The namespace of the first ``<ns>.svc.<domain>`` search entry: the kubelet writes it
        first, but ``dnsConfig.searches`` may put domains of one's own before it."""
        found = self._service_entry()
        return None if found is None else found[0]

    @property
    def cluster_domain(self) -> str | None:
        """The ``<domain>`` of that same entry, else of the first ``svc.<domain>`` one."""
        found = self._service_entry()
        if found is not None:
            return found[1]
        for entry in self.search:
            labels = entry.split(".")
            if len(labels) >= 2 and labels[0] == "svc" and _all_labels(labels[1:]):
                return ".".join(labels[1:])
        return None

    def _service_entry(self) -> tuple[str, str] | None:
        for entry in self.search:
            labels = entry.split(".")
            if len(labels) >= 3 and labels[1] == "svc" and _all_labels(labels):
                return labels[0], ".".join(labels[2:])
        return None


@dataclass(frozen=True, slots=True)
class DnsTries:
    """How one DNS query asks the nameservers: resolv.conf's options, glibc's meaning.

    A query sends to each server in turn (``rotate``: starting at the next one each query, round
    robin), waits ``per_try`` for each, and goes round the list ``attempts`` times; a server that
    answered SERVFAIL or REFUSED, or could not be reached, is not asked again by that query. The
    round's own bound (``discovery_timeout``) caps all of it.
    """

    per_try: float | None = None
    """Seconds one try waits for one server; None: a second, or the round if shorter."""
    attempts: int | None = None
    """Passes over the server list; None: as many as the round has time for."""
    rotate: bool = False
    """Start each query at the next server rather than the first."""


def dns_timing(
    conf: ResolvConf, *, discovery_timeout: float | None, servers: int
) -> tuple[float, DnsTries]:
    """The bound of one discovery round and the tries its queries make.

    ``discovery_timeout=`` given: it bounds the round, tries of up to a second each go round the
    servers until it ends (resolv.conf's ``timeout:`` and ``attempts:`` are not used; ``rotate``
    is). Not given, and resolv.conf has neither ``timeout:`` nor ``attempts:``: the same, within
    :data:`DEFAULT_DISCOVERY_TIMEOUT`. Otherwise glibc's model: tries of ``timeout:`` seconds
    (default 5), ``attempts:`` passes (default 2) over the ``servers``, and a round long enough
    for every try of one query (plus :data:`ROUND_SLACK`).
    """
    if discovery_timeout is not None:
        return discovery_timeout, DnsTries(rotate=conf.rotate)
    if conf.timeout is None and conf.attempts is None:
        return DEFAULT_DISCOVERY_TIMEOUT, DnsTries(rotate=conf.rotate)
    per_try = conf.timeout if conf.timeout is not None else GLIBC_TIMEOUT
    attempts = conf.attempts if conf.attempts is not None else GLIBC_ATTEMPTS
    round_timeout = per_try * attempts * max(servers, 1) + ROUND_SLACK
    return float(round_timeout), DnsTries(float(per_try), attempts, conf.rotate)


def parse_nameserver(spec: str) -> tuple[str, int]:
    """Parse ``"ip"``, ``"ip:port"`` or ``"[v6]:port"`` into ``(ip, port)``; port defaults to 53.

    An IPv6 address may carry a zone id (``fe80::1%eth0``, ``[fe80::1%eth0]:53``), kept in the
    ip text: whether the OS knows the interface is asked when the client is built.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(
            f"nameserver must be a str 'ip', 'ip:port' or '[ipv6]:port', not {spec!r}"
        )
    text = spec.strip()
    if any(char.isspace() for char in text):
        raise ConfigurationError(f"nameserver {spec!r} has whitespace inside")
    host, port_text, has_port = text, "", False
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigurationError(f"nameserver {spec!r}: expected '[ipv6]:port'")
        port_text, has_port = rest[1:], bool(rest)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        has_port = True
    address = _address(host)
    if isinstance(address, str):
        raise ConfigurationError(
            f"nameserver {spec!r}: {address} (nameservers are given by address)"
        )
    port = 53
    if has_port:
        # ASCII digits only: str.isdigit() also says yes to '٥٣' and '¹'.
        if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
            raise ConfigurationError(f"nameserver {spec!r}: port {port_text!r} is not 1-65535")
        port = int(port_text)
    return (address[0], port)


def nameservers_from(specs: Sequence[str]) -> tuple[tuple[str, int], ...]:
    """Parse a list of nameserver specs; an empty list is an error, not 'use the system'."""
    if isinstance(specs, str):
        specs = [specs]
    if isinstance(specs, bytes | bytearray) or not isinstance(specs, Sequence):
        raise ConfigurationError(
            "nameservers must be a list of 'ip', 'ip:port' or '[ipv6]:port' strings (in order"
            f" of preference), not {type(specs).__name__}"
        )
    parsed = []
    for index, spec in enumerate(specs):
        try:
            parsed.append(parse_nameserver(spec))
        except ConfigurationError as exc:
            raise ConfigurationError(f"nameservers[{index}]: {exc}") from None
    if not parsed:
        raise ConfigurationError("nameservers is empty: pass None to use resolv.conf")
    return tuple(parsed)


def _all_labels(labels: list[str]) -> bool:
    return all(_LABEL.fullmatch(label) for label in labels)


def _address(text: str) -> tuple[str] | str:
    """``(ip,)``, the address written canonically (with its zone id), or why ``text`` is none: an
    IPv4 or IPv6 address, and only an IPv6 one may name a zone (``fe80::1%eth0``)."""
    host, sep, zone = text.partition("%")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"{host!r} is not an IP address"
    if sep and (ip.version == 4 or not zone):
        return f"{text!r}: a zone id goes on an IPv6 address, as 'fe80::1%eth0'"
    return (f"{ip}%{zone}" if sep else str(ip),)


def _glibc_number(word: str, value: str, high: int, notes: list[str], low_means: str) -> int:
    """An option's number as glibc reads it (C's ``atoi``: 0 when no digits lead), capped at
    ``high`` as glibc caps it, and at least 1; ``low_means`` says what less means to glibc."""
    match = _ATOI.match(value)
    number = int(match[1]) if match else 0
    used = min(max(number, 1), high)
    if match is None or match.end() != len(value):
        notes.append(f"options {word}: not a number; glibc reads {number}, used as {used}")
    elif number > high:
        notes.append(f"options {word}: capped at {high}, as glibc caps it")
    elif number < 1:
        notes.append(f"options {word}: {low_means}; read as 1")
    return used


_NOTED: dict[str, None] = {}
_MAX_NOTED = 256


def note_once(message: str) -> None:
    """Log ``message`` at WARNING, once per process (the memory of what was said is bounded):
    every client built reads resolv.conf again, and says what it skipped only the first time."""
    if message in _NOTED:
        return
    if len(_NOTED) >= _MAX_NOTED:
        del _NOTED[next(iter(_NOTED))]
    _NOTED[message] = None
    log.warning("%s", message)


def load_resolv_conf(path: str | os.PathLike[str] = "/etc/resolv.conf") -> ResolvConf:
    """Read resolv.conf and log, once, what glibc would ignore in it. A file that is missing or
    cannot be read reads as empty (no search list, no nameservers), as glibc reads it."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ResolvConf()
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        note_once(f"{os.fspath(path)}: cannot be read ({exc.strerror}), read as empty")
        return ResolvConf()
    conf = ResolvConf.parse(text)
    for what in conf.notes:
        note_once(f"{os.fspath(path)}: {what}")
    return conf
