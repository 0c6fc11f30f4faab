"""Your own app on the local cluster's Pods: an ASGI or WSGI app named by an import string.

The parent process only checks the spec (:func:`app_spec`); the cluster process imports the app
(:func:`load_app`) and serves it on each Pod of the workload through :class:`UserApp`, which
keeps the cluster's Pod controls working on it: request counters, ``slow``, ``fail`` and
``reset``, and the app's own ASGI lifespan, run once per Pod start and ended when the Pod stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, cast

from ._model import ClusterError

if TYPE_CHECKING:
    from ._pods import PodServer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("headlesslb.testing")

_IMPORT_STRING = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_LIFESPAN_TIMEOUT = 30.0
"""Seconds an app's lifespan startup or shutdown may take before the Pod gives up on it."""


class ClientKwargs(TypedDict, total=False):
    """What a client needs to reach the local cluster instead of the Pod's own resolv.conf:
    ``HeadlessClient("web-hl", **cluster.client_kwargs())``. ``ClientKwargs()`` (empty) means
    the Pod's own DNS, as in a real cluster."""

    nameservers: list[str]
    namespace: str


@dataclass(frozen=True, slots=True)
class AppSpec:
    """Which app a workload's Pods serve (it crosses the control pipe, so it is plain data)."""

    target: str
    """``"package.module:attribute"``, as uvicorn and gunicorn name apps."""
    factory: bool
    """Call the attribute with the Pod's :class:`PodContext` to get this Pod's own app."""


@dataclass(frozen=True, slots=True)
class PodContext:
    """What an app factory learns about the Pod it is built for (its downward API).

    In Kubernetes the same facts come from the environment (``POD_NAME``, ``POD_NAMESPACE``,
    ``POD_IP``) and the Pod's resolv.conf; on the local cluster the app gets them here.
    """

    name: str
    """``web-0`` (StatefulSet) or ``api-x7k2p`` (Deployment)."""
    namespace: str
    ip: str
    port: int
    hostname: str | None
    """The StatefulSet Pod's hostname (``web-0``); None for a Deployment's Pod."""
    ordinal: int | None
    workload: str
    nameserver: str
    """``"ip:port"`` of the cluster's DNS server."""

    def client_kwargs(self) -> ClientKwargs:
        """Arguments for a headlesslb client inside this Pod: the cluster's DNS, the Pod's
        namespace (what a real Pod reads from resolv.conf and ``POD_NAMESPACE``)."""
        return {"nameservers": [self.nameserver], "namespace": self.namespace}


def app_spec(app: str, factory: bool) -> AppSpec:
    """Check an ``app=`` argument in the parent, before any process is asked to import it."""
    if not isinstance(app, str) or not _IMPORT_STRING.match(app):
        raise ClusterError(
            f"app must be an import string 'package.module:attribute' (the cluster process"
            f" imports it), not {app!r}"
        )
    if not isinstance(factory, bool):
        raise ClusterError(f"factory must be a bool, not {factory!r}")
    return AppSpec(app, factory)


def is_asgi(app: object) -> bool:
    """An ASGI 3 app is a coroutine function, or an object whose ``__call__`` is one; any other
    callable is taken for WSGI (ASGI 2's double callable is long obsolete)."""
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - the method itself is inspected
    return inspect.iscoroutinefunction(call)


def load_app(spec: AppSpec, context: PodContext) -> tuple[AsgiApp, bool]:
    """Import the app (building it for this Pod if ``factory``): ``(asgi_app, has_lifespan)``.

    A WSGI app is served through a2wsgi's thread pool, as an ASGI server serves WSGI.
    """
    module_name, _, attribute = spec.target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except ImportError as exc:
        raise ClusterError(f"app {spec.target!r}: cannot import {module_name!r}: {exc}") from exc
    except AttributeError:
        raise ClusterError(f"app {spec.target!r}: {module_name} has no {attribute!r}") from None
    if spec.factory:
        try:
            found = found(context)
        except Exception as exc:
            raise ClusterError(
                f"app factory {spec.target!r} failed for pod {context.name}: {exc!r}"
            ) from exc
    if not callable(found):
        raise ClusterError(f"app {spec.target!r} is not callable: {found!r}")
    if is_asgi(found):
        return found, True
    try:
        from a2wsgi import WSGIMiddleware
    except ImportError:
        raise ClusterError(
            f"app {spec.target!r} is a WSGI app, which needs the module 'a2wsgi':"
            " pip install 'headlesslb[testing]'"
        ) from None
    # cast: a2wsgi's own types for the ASGI callable differ from ours (and are absent when
    # it is not installed), while the object is an ASGI app either way.
    wsgi = cast(AsgiApp, WSGIMiddleware(found))
    return wsgi, False


class UserApp:
    """One Pod's instance of the user's app, behind the cluster's Pod controls."""

    def __init__(self, app: AsgiApp, has_lifespan: bool) -> None:
        self.app = app
        self.has_lifespan = has_lifespan
        self._state: dict[str, Any] = {}
        self._lifespan: _Lifespan | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    # -- lifespan, once per Pod start --------------------------------------------------------
    async def started(self, pod_name: str) -> None:
        """Run the app's lifespan startup; a failure is the Pod failing to start."""
        if not self.has_lifespan:
            return
        lifespan = _Lifespan(self.app)
        if not await lifespan.startup():
            raise ClusterError(
                f"pod {pod_name}: the app's lifespan startup failed: {lifespan.failure}"
            )
        self._lifespan = lifespan
        self._state = lifespan.state

    def stop(self) -> None:
        """End the app's lifespan in the background (the Pod's server is already gone)."""
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            task = asyncio.get_running_loop().create_task(lifespan.shutdown())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def stopped(self) -> None:
        """Wait for every lifespan shutdown begun by :meth:`stop`."""
        if self._stopping:
            await asyncio.wait(set(self._stopping), timeout=_LIFESPAN_TIMEOUT)

    # -- requests ------------------------------------------------------------------------------
    async def serve(self, server: PodServer, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request, applying the Pod's counters and faults around the app."""
        if scope["type"] != "http":
            return
        pod = server.pod
        if scope["path"] == "/healthz":
            pod.health_served += 1
        else:
            pod.served += 1
        if pod.slow > 0:
            await server.sleep_unless_killed(pod.slow)
        if pod.fail_status is not None:
            await _answer(send, pod.fail_status, b"failing", pod.name)
            return
        scope = {**scope, "state": dict(self._state)}
        if pod.reset:
            send = _resetting(server, scope, send)
        await self.app(scope, receive, send)


async def _answer(send: Send, status: int, body: bytes, pod: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
                (b"x-pod", pod.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _resetting(server: PodServer, scope: Scope, send: Send) -> Send:
    """A ``send`` that lets the headers and half the first body chunk out, then resets the
    connection: what a Pod crashing mid-response looks like."""

    async def send_then_reset(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body: bytes = message.get("body", b"")
        half = body[: len(body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        transport = server.transport_for(scope.get("client"))
        if transport is not None:
            transport.abort()

    return send_then_reset


class _Lifespan:
    """The ASGI lifespan protocol, driven for one Pod's app (as uvicorn's ``lifespan="auto"``:
    an app that raises or returns on the lifespan scope simply has no lifespan)."""

    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.failure = ""
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        try:
            await self.app(scope, self._to_app.get, self._from_app.put)
        except Exception:
            _log.debug("the app raised on the lifespan scope: served without one", exc_info=True)
        finally:
            await self._from_app.put({"type": "lifespan.ended"})

    async def _exchange(self, event: str) -> bool:
        """Send ``lifespan.<event>``; False only when the app says it failed (or never answers)."""
        await self._to_app.put({"type": f"lifespan.{event}"})
        try:
            async with asyncio.timeout(_LIFESPAN_TIMEOUT):
                reply = await self._from_app.get()
        except TimeoutError:
            self.failure = f"no lifespan.{event} answer in {_LIFESPAN_TIMEOUT:g} s"
            return False
        if reply["type"] == f"lifespan.{event}.failed":
            self.failure = str(reply.get("message", "")) or "no message"
            return False
        return True

    async def startup(self) -> bool:
        """True when the app completed its startup (or has no lifespan)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        return await self._exchange("startup")

    async def shutdown(self) -> None:
        """Ask the app to shut down and wait for it (bounded)."""
        if self._task is None or self._task.done():
            return
        if not await self._exchange("shutdown"):
            _log.warning("the app's lifespan shutdown failed: %s", self.failure)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LIFESPAN_TIMEOUT):
                await asyncio.shield(self._task)
