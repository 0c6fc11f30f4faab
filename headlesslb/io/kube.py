"""Push discovery from the Kubernetes API: list, then watch, a Service's EndpointSlices.

:class:`EndpointSliceDiscovery` is a discovery source beside DNS. Its
:meth:`~EndpointSliceDiscovery.watch` runs as one of the runtime's background tasks: it lists
``discovery.k8s.io/v1`` EndpointSlices labelled ``kubernetes.io/service-name=<service>`` in the
Service's namespace (paged), then watches from the list's resourceVersion with bookmarks, and
wakes the refresher on every change,
so a new Pod gets requests as soon as the API says it is ready, whatever a DNS TTL would say.
:meth:`~EndpointSliceDiscovery.resolve` answers from memory: the union of the slices
(:class:`~headlesslb.core.slices.SliceSet`).

What the API says is untrusted, and the API may go away:

- 410 Gone, both forms (an ERROR event with code 410 on the watch, HTTP 410 on a list's
  ``continue``): relist from scratch.
- A watch the server ends (``timeoutSeconds``): watch again from the last resourceVersion seen
  (an event's or a BOOKMARK's). One that never ends, or trickles, is cut at ``watch_timeout``
  plus a grace period, and resumed the same way.
- Unreachable, 401 (a rotated token: the token file is read again for every request), 403 (RBAC),
  5xx, malformed JSON, an event or list larger than the caps: one log line per new kind of
  failure, the last good endpoints kept (stale beats empty), reconnection with the refresh
  policy's error back-off.
- A slice that cannot be read keeps its last good version; endpoints no Pod can have are
  skipped, one log line per slice change.

Why httpx rather than ``kubernetes`` / ``kubernetes_asyncio``: httpx is already a dependency and
runs on both event loops the clients use (asyncio and trio, through anyio; the official client is
blocking and ``kubernetes_asyncio`` is asyncio only, and each pulls in a large generated model
layer). A list and a watch are two GET requests and a stream of JSON lines; reading them here
lets every byte be bounded (event and list sizes, read deadlines), which neither library does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from ..core.endpoint import Resolution
from ..core.environ import from_environ
from ..core.names import ServiceName
from ..core.schedule import RefreshPolicy
from ..core.slices import Family, SliceEndpoints, SliceSet, read_slice
from ..core.zones import ZonePolicy
from ..errors import ConfigurationError, DiscoveryError

__all__ = ["EndpointSliceDiscovery", "EndpointSlices", "KubeAPIConfig"]

log = logging.getLogger("headlesslb.kube")

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where a Pod's service-account token, CA bundle and namespace are mounted."""
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MAX_EVENT_BYTES = 8 * 1024 * 1024
"""The longest watch event line read: a slice holds at most 1,000 endpoints (a few hundred KiB
of JSON); a longer line is hostile or broken, and the watch is resumed instead."""
MAX_PAGE_BYTES = 32 * 1024 * 1024
"""The largest list page read (pages of :data:`PAGE_LIMIT` slices)."""
PAGE_LIMIT = 100
MAX_TOKEN_BYTES = 64 * 1024
FLAP_WINDOW = 60.0
"""Seconds after the API answers again during which the same failure is not logged again."""


@dataclass(frozen=True, slots=True)
class KubeAPIConfig:
    """Where the Kubernetes API is and how to authenticate: in a Pod,
    :meth:`in_cluster`; for development and tests, given explicitly (no kubeconfig needed)."""

    server: str
    """``https://host:port`` (``http://`` only for a local proxy such as ``kubectl proxy``)."""
    token: str | None = field(default=None, repr=False)
    """A bearer token, fixed; or None: :attr:`token_file`, else no Authorization header."""
    token_file: str | None = None
    """A file holding the bearer token, read again for every request: a projected
    service-account token is rotated by the kubelet (hourly) in place."""
    ca_file: str | None = None
    """The CA bundle the server's certificate is checked against (None: the system's CAs)."""

    def __post_init__(self) -> None:
        server = self.server
        if not isinstance(server, str) or not server.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"KubeAPIConfig.server must be an https:// (or http://) URL, not {server!r}"
            )
        try:
            url = httpx.URL(server)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigurationError(f"KubeAPIConfig.server: {exc}") from None
        if not url.host:
            raise ConfigurationError(f"KubeAPIConfig.server names no host: {server!r}")
        for name in ("token", "token_file", "ca_file"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigurationError(f"KubeAPIConfig.{name} must be a non-empty str or None")
        if self.token is not None and ("\n" in self.token or "\r" in self.token):
            raise ConfigurationError("KubeAPIConfig.token must be one line")

    @classmethod
    def in_cluster(
        cls, environ: Mapping[str, str] | None = None, *, service_account: str = SERVICE_ACCOUNT
    ) -> KubeAPIConfig:
        """The API as a Pod reaches it: ``KUBERNETES_SERVICE_HOST`` and
        ``KUBERNETES_SERVICE_PORT``, the service account's token file and CA bundle. Raises
        :class:`~headlesslb.errors.ConfigurationError` outside a Pod (pass
        ``EndpointSlices(api=KubeAPIConfig(...))`` there)."""
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST", "")
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigurationError(
                "EndpointSlice discovery needs the Kubernetes API: KUBERNETES_SERVICE_HOST is not"
                " set (not in a Pod?); pass EndpointSlices(api=KubeAPIConfig(server=..., ...))",
                argument="discovery",
            )
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"KUBERNETES_SERVICE_PORT is not a port: {port!r}")
        token_file = os.path.join(service_account, "token")
        ca_file = os.path.join(service_account, "ca.crt")
        if not os.path.isfile(token_file):
            raise ConfigurationError(
                f"EndpointSlice discovery needs a service-account token: {token_file} is missing"
                " (automountServiceAccountToken: false?)",
                argument="discovery",
            )
        bracketed = f"[{host}]" if ":" in host else host
        return cls(
            f"https://{bracketed}:{port}",
            token_file=token_file,
            ca_file=ca_file if os.path.isfile(ca_file) else None,
        )

    def bearer(self) -> str | None:
        """The token to send now (the token file read again); None when there is none."""
        if self.token is not None:
            return self.token
        if self.token_file is None:
            return None
        with open(self.token_file, "rb") as file:
            text = file.read(MAX_TOKEN_BYTES).decode("ascii", "replace").strip()
        if not text or "\n" in text or "\r" in text:
            raise _Failure(f"the token file {self.token_file} holds no usable token")
        return text

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What the client verifies the server with (the CA bundle read now)."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=self.ca_file)


@dataclass(frozen=True, slots=True)
class EndpointSlices:
    """``discovery=EndpointSlices()``: push discovery from the Kubernetes API's EndpointSlices
    instead of DNS (needs get, list and watch on ``endpointslices``: ``examples/k8s/rbac.yaml``).

    Clients of the same Service with equal settings share one watch."""

    api: KubeAPIConfig | None = None
    """Where the API is (None: in-cluster, from the Pod's environment and service account)."""
    include_not_ready: bool = False
    """Send requests to Pods that are not ready too (``serving`` false, or ``ready`` false
    without ``serving``): peers of a ``publishNotReadyAddresses`` Service that talk before they
    are ready. Terminating endpoints drain either way."""
    watch_timeout: float = 290.0
    """Seconds a watch asks the server to last (``timeoutSeconds``) before it is renewed from
    the last resourceVersion; a watch that outlasts it by :attr:`grace` is cut."""
    grace: float = 30.0
    """Seconds past :attr:`watch_timeout` before a watch the server did not end is cut, and
    the longest silence a list or a watch's connection may keep."""
    zone: str | None = None
    """The client's zone, for zone-aware picking (None: ``HEADLESSLB_ZONE``, else off):
    prefer Pods in this zone (or hinted for it), spill to the others when it lacks healthy
    capacity (:class:`~headlesslb.core.zones.ZonePolicy`)."""
    max_zone_overload: float = 1.5
    """:attr:`ZonePolicy.max_overload <headlesslb.core.zones.ZonePolicy.max_overload>`."""

    def __post_init__(self) -> None:
        if self.api is not None and not isinstance(self.api, KubeAPIConfig):
            raise ConfigurationError(
                f"EndpointSlices.api must be a KubeAPIConfig or None, not {self.api!r}"
            )
        if not isinstance(self.include_not_ready, bool):
            raise ConfigurationError("EndpointSlices.include_not_ready must be a bool")
        if self.zone is not None:
            ZonePolicy(self.zone, self.max_zone_overload)  # checks both
        for name in ("watch_timeout", "grace"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
                raise ConfigurationError(
                    f"EndpointSlices.{name} must be >= 1 second, not {value!r}"
                )

    def resolved(self, environ: Mapping[str, str]) -> EndpointSlices:
        """These settings with :attr:`api` filled in (in-cluster when None) and :attr:`zone`
        (from ``HEADLESSLB_ZONE`` when None)."""
        api = self.api if self.api is not None else KubeAPIConfig.in_cluster(environ)
        zone = self.zone if self.zone is not None else from_environ(environ).zone
        return dataclasses.replace(self, api=api, zone=zone)

    def zone_policy(self) -> ZonePolicy | None:
        """Zone-aware picking as the pool applies it (None: off)."""
        return None if self.zone is None else ZonePolicy(self.zone, self.max_zone_overload)


class _Failure(Exception):
    """A failed list or watch, in the words of its one log line."""


class _Gone(Exception):
    """410 Gone: the resourceVersion (or continue token) is too old; relist."""


class EndpointSliceDiscovery:
    """A Service's endpoints from its EndpointSlices: :meth:`watch` keeps them (a background
    task), :meth:`resolve` answers from memory (the runtime's refresher)."""

    def __init__(
        self,
        service: ServiceName,
        settings: EndpointSlices,
        *,
        port: int | str,
        ip_family: Family = "ipv4",
        statefulset: str | None = None,
        refresh: RefreshPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if settings.api is None:
            raise ConfigurationError("EndpointSliceDiscovery needs EndpointSlices(api=...)")
        if service.namespace is None:
            raise ConfigurationError(
                f"EndpointSlice discovery needs a cluster Service name with a namespace, not"
                f" {service.host!r}",
                argument="namespace",
            )
        self.service = service
        self.settings = settings
        self.api: KubeAPIConfig = settings.api
        self.port = port
        self.ip_family: Family = ip_family
        self.refresh = refresh or RefreshPolicy()
        self._rng = rng or random.Random()
        self._slices = SliceSet(statefulset)
        self._path = f"/apis/discovery.k8s.io/v1/namespaces/{service.namespace}/endpointslices"
        self._selector = f"{SERVICE_NAME_LABEL}={service.service}"
        self._attempted = anyio.Event()
        self._changed: Callable[[], None] | None = None
        self.synced = False
        """Whether a list has succeeded: from then on :meth:`resolve` answers, stale or not."""
        self.resource_version: str | None = None
        """Where the watch resumes from (None: list first)."""
        self.last_error: str | None = None
        """Why the latest list or watch failed; None once one succeeds again."""
        self.lists = 0
        """Successful lists (a relist after 410 or a failure counts): diagnostics and tests."""
        self.relists_gone = 0
        """Relists forced by 410 Gone (either form)."""
        self.events = 0
        """Watch events applied (bookmarks included)."""
        self._logged: dict[str, tuple[str, ...]] = {}
        self._said: str | None = None  # the latest failure (logged or not)
        self._failing = False  # whether it lasts (no success since)
        self._warned = False  # whether a warning said it (then a recovery line follows)
        self._quiet_until = -float("inf")
        self.page_limit = PAGE_LIMIT
        """Slices per list page (the API's ``limit``)."""

    # -- discovery ------------------------------------------------------------------------------
    async def resolve(self) -> Resolution:
        """The union of the Service's slices as last listed and watched; waits for the first
        list (the watch task bounds it); raises :class:`~headlesslb.errors.DiscoveryError` while
        no list has succeeded."""
        if not self._attempted.is_set():
            await self._attempted.wait()
        else:
            await anyio.lowlevel.checkpoint()
        if not self.synced:
            raise DiscoveryError(
                f"EndpointSlices of {self.service.host} could not be listed: {self.last_error}"
            )
        slices = self._slices
        return Resolution(
            slices.endpoints(), self.refresh.max_interval, zone_sizes=slices.zone_sizes()
        )

    def __repr__(self) -> str:
        return f"EndpointSliceDiscovery({self.service.host}, {self.api.server})"

    # -- the background task --------------------------------------------------------------------
    async def watch(self, changed: Callable[[], None]) -> None:
        """List, then watch, until cancelled; ``changed()`` is called when the endpoints may have
        changed. Never raises (but cancellation): every failure is logged and retried."""
        self._changed = changed
        failures = 0
        gone_at = -1
        while True:
            try:
                client = httpx.AsyncClient(
                    verify=self.api.ssl_context(),
                    trust_env=False,
                    timeout=httpx.Timeout(self.settings.grace, connect=10.0),
                )
            except Exception as exc:
                failures = self._failed(f"cannot use the CA bundle: {exc}", failures)
                await self._pause(failures)
                continue
            try:
                while True:
                    if self.resource_version is None:
                        await self._list(client)
                    events = self.events
                    began = anyio.current_time()
                    await self._watch_once(client)
                    if self.events == events and anyio.current_time() - began < 1.0:
                        # A server that ends every watch at once would make this a busy loop.
                        raise _Failure("the watch ended at once, with no event")
                    failures = 0
            except _Gone as gone:
                self.relists_gone += 1
                self.resource_version = None
                log.info(
                    "headlesslb: EndpointSlices of %s: %s; listing again", self.service.host, gone
                )
                if gone_at == self.events:
                    # 410 again with no event in between: back off rather than loop.
                    failures = self._failed(str(gone), failures)
                gone_at = self.events
            except _Failure as exc:
                failures = self._failed(str(exc), failures)
            except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
                failures = self._failed(_words(exc), failures)
            except Exception as exc:  # a bug: say it loudly, and carry on
                log.exception("headlesslb: EndpointSlice watch of %s failed", self.service.host)
                failures = self._failed(f"{type(exc).__name__}: {exc}", failures, logged=True)
            finally:
                # (resolve()'s first wait ends in _list or _failed: not on a 410, which lists
                # again at once.)
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    await client.aclose()
            if failures:
                await self._pause(failures)

    async def _pause(self, failures: int) -> None:
        await anyio.sleep(self.refresh.error_delay(failures, self._rng))

    def _failed(self, why: str, failures: int, *, logged: bool = False) -> int:
        """Note a failure: one log line when it is news. The same failure again while it lasts,
        or within :data:`FLAP_WINDOW` of the API answering again (an API that fails, answers,
        fails...), is news to nobody: debug."""
        now = anyio.current_time()
        repeated = why == self._said and (self._failing or now < self._quiet_until)
        if logged or repeated:
            log.debug("headlesslb: EndpointSlices of %s: %s", self.service.host, why)
        else:
            log.warning(
                "headlesslb: EndpointSlices of %s: %s; keeping %d known endpoints, retrying",
                self.service.host,
                why,
                len(self._slices.endpoints()),
            )
            self._warned = True
        self._said = why
        self._failing = True
        self.last_error = why
        self._attempted.set()  # resolve() says why rather than wait for a list that failed
        return failures + 1

    def _succeeded(self) -> None:
        self.last_error = None
        if not self._failing:
            return
        self._failing = False
        if self._warned:
            self._warned = False
            self._quiet_until = anyio.current_time() + FLAP_WINDOW
            log.info(
                "headlesslb: EndpointSlices of %s: the API answers again (after: %s)",
                self.service.host,
                self._said,
            )

    def _headers(self) -> dict[str, str]:
        try:
            token = self.api.bearer()
        except OSError as exc:
            raise _Failure(f"cannot read the token file: {exc}") from None
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _list(self, client: httpx.AsyncClient) -> None:
        reads: dict[str, SliceEndpoints] = {}
        token: str | None = None
        version = ""
        while True:
            params = {"labelSelector": self._selector, "limit": str(self.page_limit)}
            if token:
                params["continue"] = token
            url = self.api.server.rstrip("/") + self._path
            with anyio.fail_after(self.settings.grace + 10.0):
                async with client.stream(
                    "GET", url, params=params, headers=self._headers()
                ) as response:
                    if response.status_code == 410:
                        raise _Gone("the list's continue token expired (HTTP 410)")
                    _check(response)
                    body = await _read_capped(response, MAX_PAGE_BYTES)
            page = _json(body, "the list")
            items = page.get("items")
            meta = page.get("metadata")
            if not isinstance(items, list) or not isinstance(meta, dict):
                raise _Failure("the list is not an EndpointSliceList")
            for item in items:
                read = self._read(item)
                if read is None:
                    read = self._slices.get(_name_of(item))  # keep its last good version
                if read is not None:
                    reads[read.name] = read
                    if len(reads) > 1000:
                        raise _Failure("more than 1000 EndpointSlices for one Service")
            token = meta.get("continue") or None
            version = meta.get("resourceVersion") or version
            if token is None:
                break
            if not isinstance(token, str):
                raise _Failure("the list's continue token is not a string")
        if not isinstance(version, str) or not version:
            raise _Failure("the list has no resourceVersion")
        before = self._slices.endpoints()
        self._slices.replace(reads.values())
        self.resource_version = version
        self.synced = True
        self.lists += 1
        self._succeeded()
        self._attempted.set()
        if self._slices.endpoints() is not before:
            self._notify()

    def _read(self, obj: object) -> SliceEndpoints | None:
        """One slice read, or None (logged once) when it cannot be: then the caller keeps the
        last good version of it, if it had one."""
        read = read_slice(
            obj,
            port=self.port,
            ip_family=self.ip_family,
            include_not_ready=self.settings.include_not_ready,
        )
        if isinstance(read, str):
            log.warning(
                "headlesslb: EndpointSlices of %s: unusable slice: %s", self.service.host, read
            )
            return None
        if read.skipped and self._logged.get(read.name) != read.skipped:
            if len(self._logged) > 1000:
                self._logged.clear()
            self._logged[read.name] = read.skipped
            shown = "; ".join(read.skipped[:5])
            more = f" (and {len(read.skipped) - 5} more)" if len(read.skipped) > 5 else ""
            log.warning(
                "headlesslb: EndpointSlice %s of %s: skipped %s%s",
                read.name,
                self.service.host,
                shown,
                more,
            )
        return read

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            changed()

    async def _watch_once(self, client: httpx.AsyncClient) -> None:
        """One watch from :attr:`resource_version`, until the server ends it or it outlasts
        ``watch_timeout`` plus the grace (then it is resumed: returns normally)."""
        settings = self.settings
        timeout = max(1, int(settings.watch_timeout * (1.0 - self._rng.uniform(0.0, 0.1))))
        params = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "labelSelector": self._selector,
            "resourceVersion": self.resource_version or "",
            "timeoutSeconds": str(timeout),
        }
        url = self.api.server.rstrip("/") + self._path
        with anyio.move_on_after(timeout + settings.grace):
            async with client.stream(
                "GET", url, params=params, headers=self._headers()
            ) as response:
                if response.status_code == 410:
                    raise _Gone("the watch's resourceVersion is too old (HTTP 410)")
                _check(response)
                self._succeeded()
                # A line's pieces are kept apart until its end comes: joining each chunk to
                # what came before would copy a long event once per chunk.
                pending: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    lines = chunk.split(b"\n")
                    if len(lines) > 1:
                        self._line(b"".join([*pending, lines[0]]))
                        for line in lines[1:-1]:
                            self._line(line)
                        pending, size = [], 0
                    pending.append(lines[-1])
                    size += len(lines[-1])
                    if size > MAX_EVENT_BYTES:
                        raise _Failure(f"a watch event longer than {MAX_EVENT_BYTES} bytes")
                self._line(b"".join(pending))

    def _line(self, line: bytes) -> None:
        if line.strip():
            self._event(_json(line, "a watch event"))

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise _Failure(f"a watch event ({kind!r}) without an object")
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise _Gone("the watch said 410 Gone (its resourceVersion was compacted)")
            raise _Failure(f"the watch ended with an error: {code} {_message(obj)}")
        meta = obj.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if not isinstance(version, str) or not version or len(version) > 64:
            raise _Failure(f"a watch event ({kind!r}) without a resourceVersion")
        self.events += 1
        changed = False
        if kind in ("ADDED", "MODIFIED"):
            read = self._read(obj)
            if read is not None:
                try:
                    changed = self._slices.put(read)
                except OverflowError as exc:
                    raise _Failure(str(exc)) from None
        elif kind == "DELETED":
            name = meta.get("name") if isinstance(meta, dict) else None
            if isinstance(name, str):
                changed = self._slices.remove(name)
        elif kind != "BOOKMARK":
            raise _Failure(f"a watch event of unknown type {kind!r}")
        self.resource_version = version
        if changed:
            self._notify()


def _name_of(obj: object) -> str:
    """An object's ``metadata.name``, or "" when it has none."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def _check(response: httpx.Response) -> None:
    code = response.status_code
    if code == 200:
        return
    if code == 401:
        raise _Failure("401 Unauthorized: the API refused the token")
    if code == 403:
        raise _Failure(
            "403 Forbidden: the service account may not list or watch endpointslices"
            " (RBAC: examples/k8s/rbac.yaml)"
        )
    raise _Failure(f"HTTP {code} from the API")


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    parts = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise _Failure(f"an answer larger than {cap} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise _Failure(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise _Failure(f"{what} is not a JSON object")
    return value


def _message(status: dict[str, Any]) -> str:
    message = status.get("message")
    return message[:200] if isinstance(message, str) else ""


def _words(exc: BaseException) -> str:
    text = str(exc)[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
