"""The ``headlesslb`` command: ``resolve`` a Service, ``get`` through it, watch it live
(``top``), or run the ``demo``.

One function registers each subcommand (its parser, and the function that runs it), so adding a
subcommand is one ``register`` function and one line in :func:`build_parser`. Every flag is
checked by its argparse ``type``, so a bad value is reported against the flag that carried it
(``argument --port: port 0 is out of range 1-65535``), never against a Python keyword argument.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import sys
import unicodedata
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from . import __version__
from .clientbase import ServiceURLs
from .core import validate
from .core.environ import NAMESERVERS, from_environ
from .core.events import DiscoveryRound, Event
from .core.names import (
    ORDINAL_MAX,
    detect_namespace,
    expand_service_name,
    load_resolv_conf,
    parse_nameserver,
    parse_port,
    validate_domain,
    validate_label,
)
from .errors import ConfigurationError, HeadlessLBError, NoEndpointsAvailable
from .io.dns import DnsDiscovery
from .io.fallback import parse_url

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_NO_ENDPOINTS = 1
"""``resolve``: DNS answered NXDOMAIN or no usable record; ``get``: a non-2xx response."""
EXIT_ERROR = 2
"""Bad input (argparse's own code for usage errors too), or DNS/HTTP failed."""
EXIT_INTERRUPTED = 130
DEFAULT_RATE = 10.0
"""``top``: probe requests per second with ``--probe`` and no ``--rate``."""

Runner = Callable[[argparse.Namespace], int]

FLAGS = {"namespace": "--namespace", "nameservers": "--nameserver ip[:port]"}
"""The flag for each keyword argument an error of the library may say to pass
(:attr:`~headlesslb.errors.ConfigurationError.argument`)."""


def in_flags(error: BaseException) -> str:
    """The error's message, saying ``pass --namespace`` where the library, speaking to its own
    users, says ``pass namespace=`` (and ``pass --nameserver ip[:port]`` for
    ``pass nameservers=['ip:port', ...]``)."""
    text = str(error)
    argument = getattr(error, "argument", None)
    if isinstance(argument, str) and argument in FLAGS:
        text = re.sub(rf"pass {re.escape(argument)}=(\[[^\]]*\])?", f"pass {FLAGS[argument]}", text)
    return text


# -- flag types: each turns the library's ConfigurationError into argparse's error for the flag ----
def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        try:
            return parse(text)
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(in_flags(exc)) from None

    check.__name__ = parse.__name__  # argparse names the type in its fallback message
    return check


def _port(text: str) -> int | str:
    port = parse_port(text)
    assert port is not None  # parse_port returns None only for None
    return port


def _nameserver(text: str) -> str:
    parse_nameserver(text)
    return text


def _namespace(text: str) -> str:
    return validate_label("namespace", text)


def _domain(text: str) -> str:
    return validate_domain("cluster domain", text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"expected a number of seconds, not {text!r}") from None
    return float(validate.number("seconds", value, min=0, exclusive_min=True))


def _ordinal(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(f"expected a StatefulSet ordinal (an int), not {text!r}") from None
    return validate.count("ordinal", value, max=ORDINAL_MAX)


def _fallback(text: str) -> str:
    if "://" in text:
        parse_url(text)
    else:
        expand_service_name(text, namespace="default", cluster_domain="cluster.local")
    return text


def _method(text: str) -> str:
    method = text.upper()
    validate.http_methods("method", [method])
    return method


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise ConfigurationError(f"expected 'Name: value', not {text!r}")
    return name, value.strip()


def _cacert(text: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=text)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load CA bundle {text!r}: {exc}") from None


# -- help ------------------------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default: argparse's ``(default: X)``, unless the help
    says it in words already (``default: off``), as it must for a default that is no value (None,
    an empty list). Switches (off unless given) and required arguments have none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.nargs == 0 or action.required:
            return text
        return super()._get_help_string(action)


def _subcommand(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    """A subcommand's parser, whose --help shows every default (HelpFormatter)."""
    return sub.add_parser(name, formatter_class=HelpFormatter, **kwargs)


# -- shared flags ----------------------------------------------------------------------------------
def _add_discovery_args(parser: argparse.ArgumentParser, *, scheme: bool = False) -> None:
    parser.add_argument(
        "service", help="the headless Service: web-hl, web-hl.NAMESPACE, or an FQDN"
    )
    default_port = "80, or 443 with --scheme https" if scheme else "80"
    parser.add_argument(
        "--port",
        type=_checked(_port),
        default=None,
        help="a named port (e.g. http: SRV gives each Pod's port, hostname and ordinal) or a"
        f" number (default: {default_port})",
    )
    parser.add_argument(
        "--nameserver",
        metavar="IP[:PORT]",
        action="append",
        type=_checked(_nameserver),
        default=None,
        help="ip[:port] of a DNS server; repeatable (default: --resolv-conf's nameservers)",
    )
    parser.add_argument(
        "--namespace",
        type=_checked(_namespace),
        default=None,
        help="the namespace of a bare Service name such as web-hl (default: POD_NAMESPACE, the"
        " service-account file, else --resolv-conf's search list)",
    )
    parser.add_argument(
        "--cluster-domain",
        metavar="DOMAIN",
        type=_checked(_domain),
        default=None,
        help="the cluster's DNS domain (default: --resolv-conf's search list, else cluster.local)",
    )
    parser.add_argument(
        "--ip-family",
        default="ipv4",
        choices=["ipv4", "ipv6", "dual"],
        help="which addresses to ask DNS for: A records, AAAA records, or both",
    )
    parser.add_argument(
        "--resolv-conf",
        metavar="FILE",
        default="/etc/resolv.conf",
        help="where to read nameservers, the namespace and the cluster domain",
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_checked(_seconds),
        default=3.0,
        help="how long a DNS round may take",
    )


def _nameservers(args: argparse.Namespace) -> list[str]:
    """The --nameserver flags, else HEADLESSLB_NAMESERVERS, else resolv.conf's (``resolve``,
    which asks DNS itself; the clients of ``get`` and ``top`` read them as the library does)."""
    if args.nameserver:
        return list(args.nameserver)
    from_env = from_environ(os.environ).nameservers
    if from_env is not None:
        return [f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}" for ip, port in from_env]
    servers = list(load_resolv_conf(args.resolv_conf).nameservers)
    if not servers:
        raise ConfigurationError(
            f"{args.resolv_conf} lists no nameserver: pass --nameserver ip[:port]"
            f" or set {NAMESERVERS}"
        )
    return servers


def why_empty(nxdomain: bool, ip_family: str) -> str:
    """Why DNS gave no endpoint, in words to act on: NXDOMAIN and an empty answer differ.

    Kubernetes DNS answers NXDOMAIN for a Service that does not exist and, as well, for a
    headless Service with no ready Pod (kubernetes/dns#245); an empty answer (NOERROR, no
    record) means the name exists, without an address of the family asked.
    """
    if nxdomain:
        return (
            "no such Service, or none of its Pods is ready (NXDOMAIN: Kubernetes DNS has no"
            " name for a headless Service without ready Pods either)"
        )
    family = _FAMILIES.get(ip_family, "IPv4 or IPv6")
    other = {"ipv4": "ipv6", "ipv6": "ipv4"}.get(ip_family)
    hint = "" if other is None else f"; for {_FAMILIES[other]} Pods pass --ip-family {other}"
    return (
        f"the Service exists but DNS lists no {family} address of a ready Pod (empty answer){hint}"
    )


_FAMILIES = {"ipv4": "IPv4", "ipv6": "IPv6"}


# -- resolve ---------------------------------------------------------------------------------------
def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def register_resolve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``headlesslb resolve``: the endpoints DNS gives, as a table or JSON."""
    parser = _subcommand(
        sub,
        "resolve",
        help="list a headless Service's endpoints from DNS",
        description="List the endpoints DNS gives for a headless Service. Exits 1 when DNS gives"
        " none (saying whether it answered NXDOMAIN or an empty answer), 2 on bad input or when"
        " DNS cannot be asked.",
    )
    _add_discovery_args(parser)
    parser.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="a table, or JSON"
    )
    parser.set_defaults(run=lambda args: anyio.run(_resolve, args))


async def _resolve(args: argparse.Namespace) -> int:
    resolv = load_resolv_conf(args.resolv_conf)
    environ = dict(os.environ)
    env = from_environ(environ)  # the flags, else HEADLESSLB_*, else the Pod's (as a client)
    service = expand_service_name(
        args.service,
        namespace=args.namespace or env.namespace or detect_namespace(resolv, environ),
        cluster_domain=args.cluster_domain or env.cluster_domain or resolv.cluster_domain,
    )
    discovery = DnsDiscovery(
        service,
        port=80 if args.port is None else args.port,
        nameservers=tuple(parse_nameserver(spec) for spec in _nameservers(args)),
        ip_family=args.ip_family,
        timeout=args.timeout,
    )
    resolution = await discovery.resolve()
    endpoints = resolution.endpoints
    if args.output == "json":
        document = {
            "service": service.fqdn,
            "ttl": resolution.ttl,
            "partial": resolution.partial,
            "nxdomain": resolution.nxdomain,
            "endpoints": [
                {"ip": e.ip, "port": e.port, "hostname": e.hostname, "ordinal": e.ordinal}
                for e in endpoints
            ],
        }
        print(json.dumps(document, indent=2))
    else:
        ttl = f"{resolution.ttl:g}"
        rows = [(e.ip, e.port, e.hostname, e.ordinal, ttl) for e in endpoints]
        print(f"{service.fqdn}: {len(rows)} endpoint(s)")
        if rows:
            print(_table(rows, ("IP", "PORT", "HOSTNAME", "ORDINAL", "TTL")))
    if not endpoints:
        what = f"port {args.port!r} of " if isinstance(args.port, str) else ""
        why = why_empty(resolution.nxdomain, args.ip_family)
        print(f"headlesslb: DNS has no endpoints for {what}{service.fqdn}: {why}", file=sys.stderr)
        return EXIT_NO_ENDPOINTS
    return EXIT_OK


# -- get -------------------------------------------------------------------------------------------
def register_get(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``headlesslb get``: one request through the balancer, with curl's -X, -H and -d."""
    parser = _subcommand(
        sub,
        "get",
        help="send one request to a Pod of the Service",
        description="Send one request through headlesslb to one Pod of the Service; the body"
        " goes to stdout, the routing report (JSON) to stderr. Exits 1 on a non-2xx response, 2"
        " on bad input (nothing is sent) or a failed request.",
    )
    _add_discovery_args(parser, scheme=True)
    parser.add_argument(
        "path", nargs="?", default="/",
        help="a path of the Service ('/items?q=1'), or a URL naming the Service itself; never"
        " another host",
    )  # fmt: skip
    parser.add_argument(
        "-X", "--request", dest="method", metavar="METHOD", type=_checked(_method), default=None,
        help="HTTP method (default: GET, or POST with -d)",
    )  # fmt: skip
    parser.add_argument(
        "-H", "--header", dest="headers", metavar="HEADER", action="append", default=[],
        type=_checked(_header), help="a request header, 'Name: value'; repeatable (default: none)",
    )  # fmt: skip
    parser.add_argument(
        "-d", "--data", metavar="DATA", action="append", default=[],
        help="request body, as curl: '@file' reads a file, '@-' stdin; repeats join with '&';"
        " sets Content-Type application/x-www-form-urlencoded unless -H gives one (default: no"
        " body)",
    )  # fmt: skip
    parser.add_argument(
        "--scheme", choices=["http", "https"], default="http",
        help="how Pods are reached; https verifies the certificate for the Service's FQDN",
    )  # fmt: skip
    parser.add_argument(
        "--cacert", metavar="FILE", type=_checked(_cacert), default=None,
        help="CA bundle (PEM) to verify the Pods' certificates with (default: the system's)",
    )  # fmt: skip
    routing = parser.add_mutually_exclusive_group()  # a request shards or pins, not both
    routing.add_argument(
        "--key", default=None,
        help="shard by this key: one key, one Pod (default: none, the request is balanced)",
    )  # fmt: skip
    routing.add_argument(
        "--ordinal", metavar="N", type=_checked(_ordinal), default=None,
        help="pin to the StatefulSet Pod of this ordinal (default: none, any Pod)",
    )  # fmt: skip
    parser.add_argument(
        "--fallback", metavar="NAME|URL", type=_checked(_fallback), default=None,
        help="the ClusterIP/LB Service, by name or http(s)://host[:port] URL, for when no Pod"
        " can take the request (default: none: fail)",
    )  # fmt: skip
    parser.set_defaults(run=lambda args: anyio.run(_get, args))


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
"""RFC 3986's scheme."""


def _unfit_character(text: str) -> str | None:
    """What in ``text`` cannot go in a request line as it is: a space or a control character,
    said with how to write it instead (httpx would send some as they are, refuse others)."""
    for char in text:
        category = unicodedata.category(char)
        if char.isspace() or category[0] in "CZ":
            if char == " ":
                kind = "a space"
            elif category == "Cc":
                kind = f"a control character (U+{ord(char):04X})"
            else:
                kind = f"a {unicodedata.name(char, 'non-printing character').lower()}"
                kind += f" (U+{ord(char):04X})"
            return f"{kind} in it: write it {urllib.parse.quote(char)}"
    return None


def _request_target(text: str, service: str, urls: ServiceURLs) -> str:
    """``get``'s PATH, checked before anything is sent: a path of the Service (``/items?q=1``)
    or a URL naming the Service itself, as the client reaches it; else a ConfigurationError
    saying what was wrong and what to pass.

    Never another host (the client would send it through the system resolver, past the Pods),
    and never a text httpx would quietly make another request of (``://bad`` is ``GET /``).
    """
    unfit = _unfit_character(text)
    if unfit is not None:
        raise ConfigurationError(f"path {text!r} has {unfit}")
    if text.startswith("/") and not text.startswith("//"):
        return text  # the Service's own path
    scheme, sep, _ = text.partition("://")
    if not sep and not text.startswith("//"):
        raise ConfigurationError(
            f"path {text!r} is neither a path nor a URL: a path starts with '/' (/{text})"
        )
    if sep and not _SCHEME.fullmatch(scheme):
        what = f"{scheme!r} is no scheme" if scheme else "no scheme before '://'"
        raise ConfigurationError(
            f"{text!r} is not a URL: {what} (pass a path, /..., or a URL of the Service,"
            f" {urls.base}/...)"
        )
    try:
        url = httpx.URL(text if sep else f"{urls.scheme}:{text}")
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"{text!r} is not a valid URL: {exc}") from None
    if url.raw_host not in urls.hosts:
        host = f"{url.host}, not the Service {service}" if url.host else "no host"
        raise ConfigurationError(
            f"{text!r} names {host}: headlesslb get sends only to the Service's Pods (pass a"
            f" path, such as {url.raw_path.decode('ascii')})"
        )
    if url.scheme != urls.scheme:
        fix = f"pass --scheme {url.scheme}" if url.scheme in ("http", "https") else "pass a path"
        raise ConfigurationError(
            f"{text!r} has scheme {url.scheme}: the Pods are reached over {urls.scheme}"
            f" (--scheme {urls.scheme}); {fix}"
        )
    if url.port is not None and url.port != urls.url_port:
        where = (
            f"{urls.url_port}, --port's"
            if urls.url_port is not None
            else "--port's (SRV gives it per Pod)"
        )
        raise ConfigurationError(
            f"{text!r} gives port {url.port}: the port is {where}; leave the port out of the URL"
        )
    return text


def _body(args: argparse.Namespace) -> bytes | None:
    if not args.data:
        return None
    parts = []
    for item in args.data:
        if item == "@-":
            parts.append(sys.stdin.buffer.read())
        elif item.startswith("@"):
            try:
                parts.append(Path(item[1:]).read_bytes())
            except OSError as exc:
                raise ConfigurationError(f"-d {item}: cannot read {item[1:]!r}: {exc}") from None
        else:
            parts.append(item.encode())
    return b"&".join(parts)


class _LastRound:
    """An observer keeping the client's last DNS round: why ``get`` found no Pod."""

    last: DiscoveryRound | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, DiscoveryRound):
            self.last = event


async def _get(args: argparse.Namespace) -> int:
    from .aio.client import HeadlessClient

    if args.cacert is not None and args.scheme != "https":
        raise ConfigurationError("--cacert verifies https Pods: add --scheme https")
    body = _body(args)
    headers = dict(args.headers)
    if body is not None and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    method = args.method or ("POST" if body is not None else "GET")
    client = HeadlessClient(
        args.service,
        port=args.port,
        scheme=args.scheme,
        verify=True if args.cacert is None else args.cacert,
        nameservers=args.nameserver,
        namespace=args.namespace,
        cluster_domain=args.cluster_domain,
        ip_family=args.ip_family,
        resolv_conf=args.resolv_conf,
        discovery_timeout=args.timeout,
        fallback=args.fallback,
    )
    target = _request_target(args.path, args.service, client.transport.parts.urls)
    rounds = _LastRound()
    client.transport.events.subscribe(rounds)
    async with client:
        try:
            response = await client.request(
                method, target, content=body, headers=headers, key=args.key, ordinal=args.ordinal
            )
        except NoEndpointsAvailable as exc:
            last = rounds.last
            if last is None or not last.ok or last.endpoints:
                raise
            raise NoEndpointsAvailable(
                f"{exc}: {why_empty(last.nxdomain, args.ip_family)}"
            ) from exc
        print(json.dumps(response.extensions.get("headlesslb"), default=str), file=sys.stderr)
        sys.stdout.write(response.text)
        return EXIT_OK if response.is_success else EXIT_NO_ENDPOINTS


# -- top -------------------------------------------------------------------------------------------
def _request_path(text: str) -> str:
    return validate.request_path("path", text)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"expected requests per second, not {text!r}") from None
    return float(validate.number("rate", value, min=0, exclusive_min=True, max=1000))


def _interval(text: str) -> float:
    return float(validate.number("interval", _seconds(text), min=0.05))


def register_top(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``headlesslb top``: a live per-Pod view (see :mod:`headlesslb.top`)."""
    parser = _subcommand(
        sub,
        "top",
        help="a live per-Pod view: state, DNS, changes; load and latency with --probe",
        description="A live table of a headless Service's Pods: state, the last DNS round, the"
        " latest changes. Like kubectl top it only observes: it asks DNS (and, with"
        " --health-path, health-checks the Pods) but sends no request unless --probe PATH asks"
        " it to measure the Pods with GET requests of its own.",
    )
    _add_discovery_args(parser)
    parser.add_argument(
        "--probe", metavar="PATH", type=_checked(_request_path), default=None,
        help="send GET PATH to the Service's Pods, --rate times a second, and show what they"
        " measure: in flight, requests/s, errors, EWMA latency (default: off, nothing is sent)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", metavar="N", type=_checked(_rate), default=None,
        help=f"probe requests per second, with --probe (default: {DEFAULT_RATE:g})",
    )  # fmt: skip
    parser.add_argument(
        "--load", metavar="METRIC", default=None,
        help="with --probe: the probes ask the Pods for ORCA load reports and pick the less"
        " loaded of two Pods by this metric (vLLM's num_requests_waiting, cpu_utilization, ...),"
        " and a LOAD column shows each Pod's last reported value (default: off)",
    )  # fmt: skip
    parser.add_argument(
        "--health-path", metavar="PATH", type=_checked(_request_path), default=None,
        help="health-check the Pods on this path, every second (default: off)",
    )  # fmt: skip
    parser.add_argument(
        "--interval", metavar="SECONDS", type=_checked(_interval), default=1.0,
        help="how long between redraws",
    )  # fmt: skip
    parser.add_argument(
        "--duration", metavar="SECONDS", type=_checked(_seconds), default=None,
        help="stop after so long (default: run until Ctrl-C)",
    )  # fmt: skip
    parser.add_argument(
        "--once", action="store_true", help="print one table after --interval seconds, and exit"
    )
    parser.set_defaults(run=_top)


def _top(args: argparse.Namespace) -> int:
    from .top import run_top  # it reads the words of this module

    if args.rate is not None and args.probe is None:
        raise ConfigurationError(
            "--rate is how often --probe sends, and top sends nothing without it:"
            " add --probe PATH, or leave --rate out"
        )
    if args.load is not None and args.probe is None:
        raise ConfigurationError(
            "--load shows what the Pods report to top's own probes, and top sends nothing"
            " without them: add --probe PATH, or leave --load out"
        )
    if args.load is not None and not args.load.strip():
        raise ConfigurationError("--load takes a metric's name, such as num_requests_waiting")
    if args.rate is None:
        args.rate = DEFAULT_RATE
    return run_top(args)


# -- demo ------------------------------------------------------------------------------------------
def register_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``headlesslb demo``: the narrated demo on a local cluster."""
    parser = _subcommand(
        sub,
        "demo",
        help="watch requests spread over a local cluster's Pods",
        description="The narrated demo, on a local cluster (pip install 'headlesslb[testing]').",
    )
    parser.add_argument("--fast", action="store_true", help="shorter phases (for tests)")
    parser.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(fast=args.fast)


# -- entry point -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``headlesslb`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="headlesslb",
        description="Client-side load balancing over a Kubernetes headless Service, from the"
        " command line: resolve it, get through it, watch it (top), or run the demo.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"headlesslb {__version__}",
        help="print the version and exit",
    )
    sub = parser.add_subparsers(
        dest="command",
        required=True,
        metavar="COMMAND",
        help="one of these; 'headlesslb COMMAND --help' shows its flags",
    )
    register_resolve(sub)
    register_get(sub)
    register_top(sub)
    register_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``headlesslb`` command (and of ``python -m headlesslb``)."""
    args = build_parser().parse_args(argv)
    run: Runner = args.run
    try:
        return run(args)
    except (HeadlessLBError, httpx.HTTPError, httpx.InvalidURL) as exc:
        print(f"headlesslb: {type(exc).__name__}: {in_flags(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
