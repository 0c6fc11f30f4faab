"""Server-reported load: ORCA ``endpoint-load-metrics`` response headers, read as untrusted input.

A Pod may say how loaded it is on each response (ORCA, `xds.data.orca.v3.OrcaLoadReport`): gRPC's
weighted round robin (gRFC A58) and Envoy's client-side weighted round robin weight backends by
these reports, and vLLM writes them when a request asks with ``endpoint-load-metrics-format``.
Two of the header's formats are read here, as vLLM and Envoy write them::

    endpoint-load-metrics: TEXT cpu_utilization=0.3, named_metrics.kv_cache_usage_perc=0.4
    endpoint-load-metrics: JSON {"rps_fractional": 12, "named_metrics": {"waiting": 2}}

(``BIN``, the base64 protobuf, is not: it would need protobuf.) The header comes from a Pod,
so a report is bounded (:data:`MAX_REPORT_CHARS`, :data:`MAX_ENTRIES`, names of
:data:`MAX_NAME_CHARS` plain characters) and every value must be a finite number ≥ 0; anything
else is a :class:`LoadReportError`, which never leaves this package: :class:`LoadReports` drops
the report and says so once per Pod (:class:`~.events.LoadReportRejected`), and the request goes
on. Reports age out: pickers use one only while it is younger than their own limit, so a Pod
that stops reporting falls back to what the client sees itself (in-flight counts, turns).

Pure: the clock is injected and nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from .clock import Clock

if TYPE_CHECKING:  # both import LoadReport from here
    from .endpoint import Endpoint
    from .snapshot import EndpointState

__all__ = [
    "FORMAT_HEADER",
    "HEADER",
    "MAX_ENTRIES",
    "MAX_NAME_CHARS",
    "MAX_REPORT_CHARS",
    "LoadReport",
    "LoadReportError",
    "LoadReports",
    "parse_load_report",
]

HEADER = "endpoint-load-metrics"
"""The response header carrying a report."""
FORMAT_HEADER = "endpoint-load-metrics-format"
"""The request header asking for one, and in which format (vLLM reports only when asked)."""
MAX_REPORT_CHARS = 4096
"""A longer header is refused unread: a report of every field and a few dozen metrics fits."""
MAX_ENTRIES = 64
"""Entries in all (fields and map entries) a report may have."""
MAX_NAME_CHARS = 128
"""The longest metric name kept."""

_NAME = re.compile(rf"[A-Za-z0-9_.:/\-]{{1,{MAX_NAME_CHARS}}}")
_FIELDS = ("cpu_utilization", "mem_utilization", "application_utilization", "rps_fractional", "eps")
_MAPS = ("named_metrics", "utilization", "request_cost")
_JSON_NAMES = {
    **{name: name for name in (*_FIELDS, *_MAPS)},
    "cpuUtilization": "cpu_utilization",
    "memUtilization": "mem_utilization",
    "applicationUtilization": "application_utilization",
    "rpsFractional": "rps_fractional",
    "namedMetrics": "named_metrics",
    "requestCost": "request_cost",
    "rps": "rps",  # deprecated integer field, read when rps_fractional is absent
}
_EMPTY: Mapping[str, float] = MappingProxyType({})


class LoadReportError(ValueError):
    """A load report that cannot be used: too long, malformed, or a value out of range. Kept
    inside the package: the report is dropped, the request goes on."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """One Pod's report of its own load (the fields of ORCA's ``OrcaLoadReport``; absent ones
    are 0, as in the protocol), and when it came."""

    received: float
    """When the response carrying it came (the pool's clock)."""
    since: float
    """When this Pod's current run of reports began: a report that follows one older than the
    reader's age limit starts a new run (gRFC A58's blackout period counts from here)."""
    cpu_utilization: float = 0.0
    mem_utilization: float = 0.0
    application_utilization: float = 0.0
    rps_fractional: float = 0.0
    """Queries per second the Pod served, from every client."""
    eps: float = 0.0
    """Errors per second the Pod served."""
    named_metrics: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    """The Pod's own metrics (vLLM: ``kv_cache_usage_perc``, ``num_requests_waiting``)."""
    utilization: Mapping[str, float] = field(default_factory=lambda: _EMPTY)
    request_cost: Mapping[str, float] = field(default_factory=lambda: _EMPTY)

    @property
    def busy(self) -> float:
        """The utilization weighted round robin divides by: ``application_utilization`` when
        the Pod sets it, else ``cpu_utilization`` (gRFC A58, Envoy)."""
        app = self.application_utilization
        return app if app > 0.0 else self.cpu_utilization

    def metric(self, name: str) -> float | None:
        """The value of ``name``: a field (``cpu_utilization``), ``named_metrics.<x>`` /
        ``utilization.<x>`` / ``request_cost.<x>``, or a bare name looked up in
        ``named_metrics``; None when the report does not carry it."""
        if name in _FIELDS:
            value: float = getattr(self, name)
            return value
        prefix, dot, rest = name.partition(".")
        if dot and prefix in _MAPS:
            found: float | None = getattr(self, prefix).get(rest)
            return found
        return self.named_metrics.get(name)


def _value(name: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise LoadReportError(f"{name} is not a number: {_shown(raw)}")
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        raise LoadReportError(f"{name} is not a number: {_shown(raw)}") from None
    if not math.isfinite(value) or value < 0.0:
        raise LoadReportError(f"{name} must be a finite number >= 0, not {_shown(raw)}")
    return value


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


class _Builder:
    """The entries of one report as they are read, with the bounds applied."""

    __slots__ = ("entries", "fields", "maps")

    def __init__(self) -> None:
        self.fields: dict[str, float] = {}
        self.maps: dict[str, dict[str, float]] = {}
        self.entries = 0

    def _count(self) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise LoadReportError(f"more than {MAX_ENTRIES} entries")

    def field(self, name: str, raw: object) -> None:
        self._count()
        if name in self.fields:
            raise LoadReportError(f"{name} given twice")
        self.fields[name] = _value(name, raw)

    def entry(self, map_name: str, key: str, raw: object) -> None:
        self._count()
        if not _NAME.fullmatch(key):
            raise LoadReportError(f"{map_name} name {_shown(key)} is not a plain name")
        values = self.maps.setdefault(map_name, {})
        if key in values:
            raise LoadReportError(f"{map_name}.{key} given twice")
        values[key] = _value(f"{map_name}.{key}", raw)

    def build(self, received: float, since: float) -> LoadReport:
        fields = self.fields
        rps = fields.pop("rps", None)
        if "rps_fractional" not in fields and rps is not None:
            fields["rps_fractional"] = rps
        maps = self.maps

        def table(name: str) -> Mapping[str, float]:
            values = maps.get(name)
            return _EMPTY if values is None else MappingProxyType(values)

        get = fields.get
        return LoadReport(
            received,
            since,
            cpu_utilization=get("cpu_utilization", 0.0),
            mem_utilization=get("mem_utilization", 0.0),
            application_utilization=get("application_utilization", 0.0),
            rps_fractional=get("rps_fractional", 0.0),
            eps=get("eps", 0.0),
            named_metrics=table("named_metrics"),
            utilization=table("utilization"),
            request_cost=table("request_cost"),
        )


def _text(body: str, builder: _Builder) -> None:
    for item in body.split(","):
        item = item.strip()
        if not item:
            continue
        name, eq, raw = item.partition("=")
        name = name.strip()
        if not eq:
            raise LoadReportError(f"entry {_shown(item)} is not name=value")
        prefix, dot, key = name.partition(".")
        if dot and prefix in _MAPS:
            builder.entry(prefix, key, raw.strip())
        elif name in _FIELDS or name == "rps":
            builder.field(name, raw.strip())
        else:
            raise LoadReportError(f"unknown field {_shown(name)}")


def _json(body: str, builder: _Builder) -> None:
    try:
        # Non-finite constants (NaN, Infinity) are refused by _value like any other bad number.
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise LoadReportError("malformed JSON") from None
    if not isinstance(document, dict):
        raise LoadReportError("JSON report is not an object")
    for raw_name, raw in document.items():
        name = _JSON_NAMES.get(raw_name)
        if name is None:
            raise LoadReportError(f"unknown field {_shown(raw_name)}")
        if name in _MAPS:
            if not isinstance(raw, dict):
                raise LoadReportError(f"{name} is not an object")
            for key, value in raw.items():
                builder.entry(name, key, value)
        else:
            builder.field(name, raw)


def parse_load_report(value: str, received: float, since: float | None = None) -> LoadReport:
    """The report an ``endpoint-load-metrics`` header ``value`` carries, received at
    ``received`` (its run of reports began at ``since``; None: now). Raises
    :class:`LoadReportError` for anything but a bounded, well-formed TEXT or JSON report of
    finite values ≥ 0."""
    if len(value) > MAX_REPORT_CHARS:
        raise LoadReportError(f"longer than {MAX_REPORT_CHARS} characters ({len(value)})")
    kind, _, body = value.strip().partition(" ")
    builder = _Builder()
    if kind == "TEXT":
        _text(body, builder)
    elif kind == "JSON":
        _json(body, builder)
    elif kind == "BIN":
        raise LoadReportError("the BIN (protobuf) format is not read; ask for TEXT or JSON")
    else:
        raise LoadReportError(f"unknown format {_shown(kind)} (TEXT or JSON)")
    return builder.build(received, received if since is None else since)


Rejected = Callable[["Endpoint", str], None]
"""Told once per Pod that its report was dropped, and why (until it sends a good one)."""

Reported = Callable[["Endpoint", "LoadReport"], None]
"""Told a Pod's latest usable report, at most once per :data:`REPORT_EVENT_INTERVAL`."""

REPORT_EVENT_INTERVAL = 1.0
"""Seconds between two tellings of one Pod's report: metrics are scraped every few seconds,
while a busy Pod reports with every response (hundreds a second)."""


class LoadReports:
    """Where responses' load reports go: each parsed at header time and kept on its Pod's
    :class:`~.snapshot.EndpointState` (``state.load``, one immutable record, replaced whole:
    pickers on other threads read it without a lock).

    The pool holds one only while a picker reads reports (:class:`~.pickers.base.ReadsLoad`),
    so a client that does not use them pays one ``None`` check per response. A report that
    cannot be used is dropped; ``rejected`` hears of it once per Pod, again only after that Pod
    sent a good one.
    """

    __slots__ = ("_clock", "_warned", "max_age", "rejected", "reported", "request_headers")

    def __init__(
        self,
        clock: Clock,
        *,
        max_age: float,
        ask: Literal["TEXT", "JSON"] | None = "TEXT",
        rejected: Rejected | None = None,
        reported: Reported | None = None,
    ) -> None:
        self._clock = clock
        self.max_age = max_age
        """Seconds after which a Pod's report no longer continues its run (``since``)."""
        self.request_headers: tuple[tuple[str, str], ...] = (
            () if ask is None else ((FORMAT_HEADER, ask),)
        )
        """What every attempt sends to ask for a report (vLLM reports only when asked)."""
        self.rejected = rejected
        self.reported = reported
        self._warned: set[tuple[str, int]] = set()

    def offer(self, state: EndpointState, headers: Mapping[str, str]) -> None:
        """Read the report in a response's ``headers`` from ``state``'s Pod, if it has one.
        Never raises for what the Pod sent."""
        value = headers.get(HEADER)
        if value is None:
            return
        now = self._clock()
        previous = state.load
        since = (
            now if previous is None or now - previous.received > self.max_age else previous.since
        )
        try:
            report = parse_load_report(value, now, since)
        except LoadReportError as exc:
            key = state.key
            if key not in self._warned:
                self._warned.add(key)
                if self.rejected is not None:
                    self.rejected(state.endpoint, str(exc))
            return
        state.load = report
        if self._warned:
            self._warned.discard(state.key)
        reported = self.reported
        if reported is not None and now - state.load_told >= REPORT_EVENT_INTERVAL:
            state.load_told = now
            reported(state.endpoint, report)
