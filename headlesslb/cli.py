"""The ``headlesslb`` command: ``resolve`` a Service, ``get`` through it, ``top``, ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import anyio
import httpx

from .core.names import (
    detect_namespace,
    expand_service_name,
    load_resolv_conf,
    nameservers_from,
    parse_port,
)
from .errors import ConfigurationError, HeadlessLBError
from .io.dns import DnsDiscovery
from .top import add_top_arguments, run_top

__all__ = ["main"]


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _add_discovery_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="web-hl, web-hl.ns, or an FQDN")
    parser.add_argument(
        "--port", default=None, help="named port (SRV lookup, e.g. http) or a number (default: 80)"
    )
    parser.add_argument(
        "--nameserver",
        action="append",
        default=None,
        help="ip[:port] of a DNS server (repeatable; default: resolv.conf)",
    )
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--cluster-domain", default=None)
    parser.add_argument("--ip-family", default="ipv4", choices=["ipv4", "ipv6", "dual"])
    parser.add_argument("--resolv-conf", default="/etc/resolv.conf")
    parser.add_argument("--timeout", type=float, default=3.0, help="DNS timeout, seconds")


async def _resolve(args: argparse.Namespace) -> int:
    resolv = load_resolv_conf(args.resolv_conf)
    service = expand_service_name(
        args.service,
        namespace=args.namespace or detect_namespace(resolv),
        cluster_domain=args.cluster_domain or resolv.cluster_domain,
    )
    port = parse_port(args.port)
    discovery = DnsDiscovery(
        service,
        port=80 if port is None else port,
        nameservers=nameservers_from(args.nameserver or list(resolv.nameservers) or _none(args)),
        ip_family=args.ip_family,
        timeout=args.timeout,
    )
    resolution = await discovery.resolve()
    ttl = f"{resolution.ttl:g}"
    rows = [(e.ip, e.port, e.hostname, e.ordinal, ttl) for e in resolution.endpoints]
    print(f"{service.fqdn}: {len(rows)} endpoint(s)")
    if rows:
        print(_table(rows, ("IP", "PORT", "HOSTNAME", "ORDINAL", "TTL")))
    return 0


def _none(args: argparse.Namespace) -> list[str]:
    raise ConfigurationError(f"{args.resolv_conf} lists no nameserver: pass --nameserver ip:port")


async def _get(args: argparse.Namespace) -> int:
    from .aio.client import HeadlessClient

    async with HeadlessClient(
        args.service,
        port=args.port,
        nameservers=args.nameserver,
        namespace=args.namespace,
        cluster_domain=args.cluster_domain,
        ip_family=args.ip_family,
        resolv_conf=args.resolv_conf,
        discovery_timeout=args.timeout,
        fallback=args.fallback,
    ) as client:
        response = await client.get(args.path, key=args.key, ordinal=args.ordinal)
        print(json.dumps(response.extensions.get("headlesslb"), default=str), file=sys.stderr)
        sys.stdout.write(response.text)
        return 0 if response.is_success else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``headlesslb`` command."""
    parser = argparse.ArgumentParser(prog="headlesslb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    resolve = sub.add_parser("resolve", help="list a headless Service's endpoints from DNS")
    _add_discovery_args(resolve)
    get = sub.add_parser("get", help="GET a path from one Pod of the Service")
    _add_discovery_args(get)
    get.add_argument("path", nargs="?", default="/")
    get.add_argument("--key", default=None, help="shard by this key")
    get.add_argument("--ordinal", type=int, default=None, help="pin to this StatefulSet ordinal")
    get.add_argument("--fallback", default=None, help="ClusterIP/LB Service name or URL")
    top = sub.add_parser("top", help="a live per-Pod view: state, load, errors, latency, DNS")
    _add_discovery_args(top)
    add_top_arguments(top)
    demo = sub.add_parser("demo", help="watch requests spread over a local cluster's Pods")
    demo.add_argument("--fast", action="store_true", help="shorter phases (for tests)")
    args = parser.parse_args(argv)
    try:
        if args.command == "resolve":
            return anyio.run(_resolve, args)
        if args.command == "get":
            return anyio.run(_get, args)
        if args.command == "top":
            return run_top(args)
        from .demo import run_demo

        return run_demo(fast=args.fast)
    except (HeadlessLBError, httpx.HTTPError) as exc:
        print(f"headlesslb: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
