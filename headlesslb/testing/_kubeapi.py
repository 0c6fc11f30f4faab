"""A real Kubernetes API on loopback for tests: etcd plus ``kubeapi-server``, driven from Python.

``kubeapi-server`` (``tools/kubeapi/server`` in the repository, built from Debian's packages of
``k8s.io/apiserver`` by ``make kubeapi``) is Kubernetes' own API machinery (generic server,
registry store, etcd3 storage, watch cache) serving ``discovery.k8s.io/v1`` EndpointSlices and
core/v1 Namespaces. ``KubeAPI`` starts etcd and the server on one random 127.B.C.D address,
waits for ``/readyz``, and offers what a test of an API client needs: EndpointSlice helpers,
watches read as they arrive, etcd compaction (for 410 Gone), restarts, token rotation (401)
and denied users (403). HTTPS only, with the CA the server wrote (``ca_file``).

Not imported by ``headlesslb.testing``: a private module for the project's own tests, which
pass the binaries' paths (``tools/kubeapi/build.py --json`` prints them).
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import random
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

__all__ = [
    "KubeAPI",
    "KubeAPIError",
    "WatchStream",
    "endpoint",
    "endpoint_port",
    "endpoint_slice",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
ADMIN = "admin"

_ETCD_CLIENT_PORT = 2379
_ETCD_PEER_PORT = 2380
_COMPACT_REV_KEY = "compact_rev_key"  # where kube-apiserver's compactor keeps its revision

Json = dict[str, Any]


class KubeAPIError(Exception):
    """An API request answered with an error status; ``body`` is the decoded ``Status``."""

    def __init__(self, status_code: int, body: Any, method: str, url: str) -> None:
        self.status_code = status_code
        self.body = body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {url}: {status_code} {message}")

    @property
    def reason(self) -> str | None:
        """The ``Status`` reason (``Expired``, ``Forbidden``, ``NotFound``, …)."""
        return self.body.get("reason") if isinstance(self.body, dict) else None


# -- EndpointSlice JSON ---------------------------------------------------------------------------


def endpoint(
    address: str | Sequence[str],
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    hostname: str | None = None,
    node_name: str | None = None,
    zone: str | None = None,
    for_zones: Sequence[str] | None = None,
    target_ref: Mapping[str, str] | None = None,
) -> Json:
    """One ``endpoints[]`` entry; ``None`` leaves a field out (a condition left out is unknown)."""
    conditions = {
        key: value
        for key, value in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if value is not None
    }
    ep: Json = {"addresses": [address] if isinstance(address, str) else list(address)}
    if conditions:
        ep["conditions"] = conditions
    if hostname is not None:
        ep["hostname"] = hostname
    if node_name is not None:
        ep["nodeName"] = node_name
    if zone is not None:
        ep["zone"] = zone
    if for_zones is not None:
        ep["hints"] = {"forZones": [{"name": z} for z in for_zones]}
    if target_ref is not None:
        ep["targetRef"] = dict(target_ref)
    return ep


def endpoint_port(
    port: int | None, *, name: str = "", protocol: str = "TCP", app_protocol: str | None = None
) -> Json:
    """One ``ports[]`` entry (``port=None``: all ports, as the API allows)."""
    p: Json = {"name": name, "protocol": protocol}
    if port is not None:
        p["port"] = port
    if app_protocol is not None:
        p["appProtocol"] = app_protocol
    return p


def endpoint_slice(
    name: str,
    *,
    service: str,
    endpoints: Sequence[Json] = (),
    ports: Sequence[Json] = (),
    address_type: str = "IPv4",
    labels: Mapping[str, str] | None = None,
    namespace: str | None = None,
) -> Json:
    """An EndpointSlice of ``service`` as the EndpointSlice controller labels it."""
    metadata: Json = {
        "name": name,
        "labels": {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: "headlesslb-tests"}
        | dict(labels or {}),
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": address_type,
        "endpoints": list(endpoints),
        "ports": list(ports),
    }


# -- watches ---------------------------------------------------------------------------------


class WatchStream:
    """The events of one watch request, read by a thread as they arrive.

    ``next(timeout)`` returns the next event (a dict with ``type`` and ``object``) or raises
    ``TimeoutError``; after the server ends the stream (its ``timeoutSeconds``, or an error)
    it raises ``EOFError``. ``close()`` (or leaving the ``with`` block) stops reading.
    """

    _END = object()

    def __init__(self, client: httpx.Client, url: str, params: Mapping[str, str]) -> None:
        request = client.build_request("GET", url, params=dict(params))
        response = client.send(request, stream=True)
        if response.status_code != 200:
            response.read()
            response.close()
            raise KubeAPIError(response.status_code, _decode(response), "WATCH", str(request.url))
        self._response = response
        self._events: queue.Queue[object] = queue.Queue()
        self._ended = False
        self._reader = threading.Thread(target=self._read, name="kubeapi-watch", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for line in self._response.iter_lines():
                if line:
                    self._events.put(json.loads(line))
        except (httpx.HTTPError, ValueError):
            pass  # closed by close(), or the connection broke: either ends the stream
        finally:
            self._events.put(self._END)

    def next(self, timeout: float) -> Json:
        if self._ended:
            raise EOFError("the watch has ended")
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no watch event within {timeout} s") from None
        if item is self._END:
            self._ended = True
            raise EOFError("the server ended the watch")
        assert isinstance(item, dict)
        return item

    def until(self, predicate: Callable[[Json], bool], timeout: float) -> list[Json]:
        """Events up to and including the first that matches; ``TimeoutError`` past the deadline."""
        deadline = time.monotonic() + timeout
        seen: list[Json] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no matching watch event within {timeout} s; saw {_brief(seen)}"
                )
            event = self.next(remaining)
            seen.append(event)
            if predicate(event):
                return seen

    def drain(self, timeout: float) -> list[Json]:
        """Every event until the stream ends (bounded by ``timeout``)."""
        seen: list[Json] = []
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                seen.append(self.next(remaining))
            except EOFError:
                return seen
            except TimeoutError:
                break
        raise TimeoutError(f"the watch did not end within {timeout} s; saw {_brief(seen)}")

    def close(self) -> None:
        # Closing the response from here does not wake the reader blocked in recv(); shutting
        # the socket down does, at once (the connection is not reused: the stream is cut).
        stream = self._response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=5)
        self._response.close()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _brief(events: Sequence[Json]) -> list[str]:
    return [
        f"{e.get('type')} {e.get('object', {}).get('metadata', {}).get('name', '')}".strip()
        for e in events
    ]


def _decode(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


# -- the bed ------------------------------------------------------------------------------------


class KubeAPI:
    """etcd and ``kubeapi-server`` on one loopback address, started by ``start()`` (or ``with``).

    ``watch_cache=True`` serves lists and watches from the watch cache, as kube-apiserver does
    for EndpointSlices; ``False`` reads etcd directly (a compaction then shows at once as 410 on
    lists and watches from before it). ``compaction_interval`` is the server's own periodic
    compaction (kube-apiserver: 5 minutes); 0, the default here, leaves it to ``compact()``.
    ``progress_notify_interval`` is etcd's, which moves the watch cache's revision (and so the
    BOOKMARKs' ``resourceVersion``) forward when only other keys change.
    """

    def __init__(
        self,
        server: str | Path,
        etcd: str | Path,
        *,
        watch_cache: bool = True,
        compaction_interval: float = 0.0,
        progress_notify_interval: float = 1.0,
        workdir: str | Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._server_bin = Path(server)
        self._etcd_bin = Path(etcd)
        self.watch_cache = watch_cache
        self._compaction_interval = compaction_interval
        self._progress_notify_interval = progress_notify_interval
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubeapi-"))
        self._start_timeout = start_timeout
        self.host = ""
        self.port = 0
        self._etcd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._tokens: dict[str, str] = {}  # token -> user
        self._policy: dict[str, str] = {}  # user -> verbs
        self._client: httpx.Client | None = None
        self._etcd_client: httpx.Client | None = None

    # -- lifecycle --

    def start(self) -> KubeAPI:
        for binary in (self._server_bin, self._etcd_bin):
            if not binary.is_file():
                raise FileNotFoundError(f"{binary} is missing: `make kubeapi` builds it")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = _free_loopback_address((_ETCD_CLIENT_PORT, _ETCD_PEER_PORT))
        self._tokens = {secrets.token_urlsafe(24): ADMIN}
        self._policy = {ADMIN: "*"}
        self._write_auth()
        try:
            self.start_etcd()
            self.start_apiserver()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both processes and remove the working directory if this object made it."""
        for client in (self._client, self._etcd_client):
            if client is not None:
                client.close()
        self._client = self._etcd_client = None
        self.stop_apiserver()
        self.stop_etcd()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start_etcd(self) -> None:
        """Start etcd on this bed's address with its data directory (kept across restarts)."""
        if self._etcd is not None:
            return
        client_url = self.etcd_url
        peer_url = f"http://{self.host}:{_ETCD_PEER_PORT}"
        self._etcd = self._spawn(
            "etcd",
            [
                str(self._etcd_bin),
                "--name=bed",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=bed={peer_url}",
                "--log-level=warn",
                f"--experimental-watch-progress-notify-interval={self._progress_notify_interval}s",
            ],
        )
        deadline = time.monotonic() + self._start_timeout
        while True:
            self._check_alive(self._etcd, "etcd")
            try:
                if self._etcd_http().get("/health").json().get("health") == "true":
                    return
            except (httpx.HTTPError, ValueError):
                pass  # not listening or not healthy yet: asked again until the deadline
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd not healthy within {self._start_timeout} s")
            time.sleep(0.05)

    def stop_etcd(self) -> None:
        """Stop etcd (its data stays). With the API server connected, etcd's graceful stop
        waits seconds for the server's watch streams: after one second it is killed."""
        self._terminate(self._etcd, grace=1.0)
        self._etcd = None

    def start_apiserver(self) -> None:
        """Start the API server (on the port it had, after a first start on a free one)."""
        if self._server is not None:
            return
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        self._server = self._spawn(
            "kubeapi-server",
            [
                str(self._server_bin),
                f"--bind-address={self.host}",
                f"--bind-port={self.port}",
                f"--port-file={port_file}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--etcd-servers={self.etcd_url}",
                f"--token-file={self.workdir / 'tokens.csv'}",
                f"--policy-file={self.workdir / 'policy'}",
                f"--watch-cache={str(self.watch_cache).lower()}",
                f"--etcd-compaction-interval={self._compaction_interval}s",
            ],
        )
        deadline = time.monotonic() + self._start_timeout
        while not port_file.exists():
            self._check_alive(self._server, "kubeapi-server")
            if time.monotonic() > deadline:
                raise TimeoutError(f"kubeapi-server did not listen within {self._start_timeout} s")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.wait_ready(max(1.0, deadline - time.monotonic()))

    def stop_apiserver(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._terminate(self._server)
        self._server = None

    def restart_apiserver(self) -> None:
        """Stop and start the API server: same address and port, same etcd data, same CA.

        With the watch cache, the new server's cache starts at etcd's current revision: a
        watch from an older resourceVersion is answered with an ERROR event, code 410.
        """
        self.stop_apiserver()
        self.start_apiserver()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/readyz`` (etcd reachable, caches filled) until it answers 200."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self._server is not None:
                self._check_alive(self._server, "kubeapi-server")
            try:
                response = self.client().get("/readyz")
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[-300:]}"
            except httpx.HTTPError as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise TimeoutError(f"/readyz not ready within {timeout} s: {last}")
            time.sleep(0.05)

    # -- where and who --

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA bundle that verifies the server (kept across restarts)."""
        return self.workdir / "certs" / "ca.crt"

    @property
    def etcd_url(self) -> str:
        return f"http://{self.host}:{_ETCD_CLIENT_PORT}"

    @property
    def token(self) -> str:
        """The admin user's current bearer token (``rotate_token`` replaces it)."""
        return next(t for t, u in self._tokens.items() if u == ADMIN)

    @property
    def server_log(self) -> Path:
        return self.workdir / "kubeapi-server.log"

    @property
    def etcd_log(self) -> Path:
        return self.workdir / "etcd.log"

    def kubeconfig(self, path: str | Path | None = None, token: str | None = None) -> Path:
        """Write a kubeconfig (JSON, which kubectl and client libraries read) for this server,
        its CA and the admin's token (or ``token``); returns its path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubeapi",
                    "cluster": {
                        "server": self.base_url,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": "kubeapi", "user": {"token": token or self.token}}],
            "contexts": [{"name": "kubeapi", "context": {"cluster": "kubeapi", "user": "kubeapi"}}],
            "current-context": "kubeapi",
        }
        target = Path(path) if path is not None else self.workdir / "kubeconfig"
        _write_atomic(target, json.dumps(config, indent=2) + "\n")
        return target

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client on the server that trusts its CA; the admin's unless ``token`` is
        given. With no argument, one shared client (do not close it)."""
        if token is None and not kwargs:
            if self._client is None:
                self._client = self._new_client(self.token)
            return self._client
        return self._new_client(token if token is not None else self.token, **kwargs)

    def _new_client(self, token: str, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("timeout", 10.0)
        return httpx.Client(
            base_url=self.base_url, verify=self.ssl_context(), headers=headers, **kwargs
        )

    # -- tokens and users --

    def rotate_token(self) -> str:
        """Give the admin a new token; the old one is refused (401) from the next request on."""
        old = self.token
        new = secrets.token_urlsafe(24)
        self._tokens = {t: u for t, u in self._tokens.items() if t != old} | {new: ADMIN}
        self._write_auth()
        if self._client is not None:
            self._client.headers["Authorization"] = f"Bearer {new}"
        return new

    def add_user(self, user: str, verbs: str = "*") -> str:
        """A user allowed ``verbs`` (comma-separated, ``*`` for all); returns its new token."""
        token = secrets.token_urlsafe(24)
        self._tokens[token] = user
        self._policy[user] = verbs
        self._write_auth()
        return token

    def remove_token(self, token: str) -> None:
        self._tokens.pop(token, None)
        self._write_auth()

    def allow(self, user: str, verbs: str = "*") -> None:
        self._policy[user] = verbs
        self._write_auth()

    def deny(self, user: str) -> None:
        """The user still authenticates but every resource request is refused (403)."""
        self._policy.pop(user, None)
        self._write_auth()

    def _write_auth(self) -> None:
        tokens = "".join(f"{t},{u},uid-{u}\n" for t, u in self._tokens.items())
        policy = "".join(f"{u} {verbs}\n" for u, verbs in self._policy.items())
        _write_atomic(self.workdir / "tokens.csv", tokens)
        _write_atomic(self.workdir / "policy", policy)

    # -- requests --

    def request(self, method: str, path: str, **kwargs: Any) -> Json:
        """One request as the admin; the decoded JSON, or ``KubeAPIError``."""
        response = self.client().request(method, path, **kwargs)
        if response.status_code >= 400:
            raise KubeAPIError(response.status_code, _decode(response), method, path)
        body = response.json()
        assert isinstance(body, dict)
        return body

    @staticmethod
    def slices_path(namespace: str | None = None, name: str | None = None) -> str:
        path = "/apis/discovery.k8s.io/v1"
        if namespace is not None:
            path += f"/namespaces/{namespace}"
        path += "/endpointslices"
        return f"{path}/{name}" if name is not None else path

    def create_namespace(self, name: str) -> Json:
        return self.request("POST", "/api/v1/namespaces", json={"metadata": {"name": name}})

    def create_slice(
        self,
        namespace: str,
        name: str,
        *,
        service: str,
        endpoints: Sequence[Json] = (),
        ports: Sequence[Json] = (),
        address_type: str = "IPv4",
        labels: Mapping[str, str] | None = None,
    ) -> Json:
        body = endpoint_slice(
            name,
            service=service,
            endpoints=endpoints,
            ports=ports,
            address_type=address_type,
            labels=labels,
        )
        return self.request("POST", self.slices_path(namespace), json=body)

    def get_slice(self, namespace: str, name: str) -> Json:
        return self.request("GET", self.slices_path(namespace, name))

    def list_slices(
        self,
        namespace: str | None = None,
        *,
        service: str | None = None,
        label_selector: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Json:
        """One list request (one page when ``limit`` is given); the ``EndpointSliceList``."""
        params = _params(
            labelSelector=_selector(service, label_selector),
            resourceVersion=resource_version,
            resourceVersionMatch=resource_version_match,
            limit=limit,
            **{"continue": continue_token},
        )
        return self.request("GET", self.slices_path(namespace), params=params)

    def update_slice(self, body: Json) -> Json:
        """PUT the whole object; its ``metadata.resourceVersion`` makes it conditional (409)."""
        meta = body["metadata"]
        return self.request("PUT", self.slices_path(meta["namespace"], meta["name"]), json=body)

    def patch_slice(self, namespace: str, name: str, patch: Any, *, kind: str = "merge") -> Json:
        """PATCH with a ``merge`` (RFC 7386), ``json`` (RFC 6902) or ``strategic`` patch."""
        content_type = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }[kind]
        return self.request(
            "PATCH",
            self.slices_path(namespace, name),
            content=json.dumps(patch),
            headers={"Content-Type": content_type},
        )

    def set_endpoints(self, namespace: str, name: str, endpoints: Sequence[Json]) -> Json:
        """Replace a slice's endpoints (a MODIFIED event)."""
        return self.patch_slice(namespace, name, {"endpoints": list(endpoints)})

    def relabel_slice(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> Json:
        """Set labels (``None`` removes one): moving a slice to another service, for a watch
        selecting the first, is a DELETED event."""
        return self.patch_slice(namespace, name, {"metadata": {"labels": dict(labels)}})

    def delete_slice(self, namespace: str, name: str) -> Json:
        return self.request("DELETE", self.slices_path(namespace, name))

    def delete_slices(
        self, namespace: str, *, service: str | None = None, label_selector: str | None = None
    ) -> Json:
        """deletecollection: every slice of the namespace that the selector matches."""
        params = _params(labelSelector=_selector(service, label_selector))
        return self.request("DELETE", self.slices_path(namespace), params=params)

    def watch_slices(
        self,
        namespace: str | None = None,
        *,
        resource_version: str | None,
        service: str | None = None,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
        timeout_seconds: int = 30,
        send_initial_events: bool | None = None,
        token: str | None = None,
    ) -> WatchStream:
        """A watch of EndpointSlices from ``resource_version`` (``None``: from now; "0": any
        state, with synthetic ADDED events for what exists), ended by the server after
        ``timeout_seconds``."""
        params = _params(
            watch="true",
            resourceVersion=resource_version,
            labelSelector=_selector(service, label_selector),
            allowWatchBookmarks=allow_bookmarks or None,
            timeoutSeconds=timeout_seconds,
            sendInitialEvents=send_initial_events,
            resourceVersionMatch="NotOlderThan" if send_initial_events else None,
        )
        client = self.client() if token is None else self.client(token)
        return WatchStream(client, self.slices_path(namespace), params)

    # -- etcd --

    def _etcd_http(self) -> httpx.Client:
        if self._etcd_client is None:
            self._etcd_client = httpx.Client(base_url=self.etcd_url, timeout=10.0)
        return self._etcd_client

    def _etcd_post(self, path: str, body: Json) -> Json:
        response = self._etcd_http().post(path, json=body)
        response.raise_for_status()
        result = response.json()
        assert isinstance(result, dict)
        return result

    def etcd_revision(self) -> int:
        """etcd's current revision: the resourceVersion of the newest write."""
        result = self._etcd_post("/v3/kv/range", {"key": _b64(_COMPACT_REV_KEY)})
        return int(result["header"]["revision"])

    def compact(self) -> int:
        """Compact etcd at its current revision, as kube-apiserver's compactor does (it records
        the revision in ``compact_rev_key`` first, which the server watches). Returns that
        revision: a list at an older resourceVersion or a continue token from before it gets
        410 Gone, and so does a watch from before it (an ERROR event) once it reaches etcd:
        at once without the watch cache; with it, after ``restart_apiserver()``."""
        current = self._etcd_post("/v3/kv/range", {"key": _b64(_COMPACT_REV_KEY)})
        revision = int(current["header"]["revision"])
        kvs = current.get("kvs") or []
        version = int(kvs[0].get("version", 0)) if kvs else 0
        txn = self._etcd_post(
            "/v3/kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(_COMPACT_REV_KEY),
                        "target": "VERSION",
                        "result": "EQUAL",
                        "version": str(version),
                    }
                ],
                "success": [
                    {
                        "requestPut": {
                            "key": _b64(_COMPACT_REV_KEY),
                            "value": _b64(str(revision)),
                        }
                    }
                ],
            },
        )
        if not txn.get("succeeded"):
            raise RuntimeError("another compactor moved compact_rev_key; try again")
        self._etcd_post("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    # -- processes --

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()

    def _check_alive(self, process: subprocess.Popen[bytes] | None, name: str) -> None:
        if process is not None and process.poll() is not None:
            tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with status {process.returncode}:\n{tail}")

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<KubeAPI {self.base_url} etcd={self.etcd_url} {state}>"

    def logs(self) -> Iterator[tuple[str, str]]:
        """(name, last lines) of each process's log, for a failing test's report."""
        for path in (self.server_log, self.etcd_log):
            if path.exists():
                yield path.name, path.read_text(errors="replace")[-4000:]


def _selector(service: str | None, label_selector: str | None) -> str | None:
    parts = [f"{SERVICE_NAME_LABEL}={service}"] if service else []
    if label_selector:
        parts.append(label_selector)
    return ",".join(parts) or None


def _params(**values: Any) -> dict[str, str]:
    """Query parameters: ``None`` left out, booleans as ``true``/``false``."""
    return {
        key: str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in values.items()
        if value is not None
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _free_loopback_address(ports: Sequence[int], attempts: int = 50) -> str:
    """A random 127.B.C.D (B below LocalCluster's 64-250) where every port is free."""
    for _ in range(attempts):
        host = f"127.{random.randint(2, 63)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        sockets = []
        try:
            for port in ports:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind((host, port))
            return host
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no free loopback address for ports {list(ports)}")
