"""Optional active health checks: probe every Pod and feed the verdicts to the pool.

A headless Service publishes a Pod until its endpoints are updated, and with
``publishNotReadyAddresses: true`` it publishes Pods that are not ready at all; passive outlier
detection only notices once real requests fail. Probes notice first. The policy and the threshold
logic (:mod:`headlesslb.core.health`) are pure; :class:`HealthChecker` is the thin loop that sends
the probes, each reading at most :data:`PROBE_BODY_LIMIT` bytes of the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import httpx

from ..core.endpoint import Endpoint
from ..core.health import HealthCheck, HealthTracker
from ..core.pool import Pool

__all__ = [
    "PROBE_BODY_LIMIT",
    "HealthChecker",
    "Probe",
    "ProbeSend",
    "probe_once",
    "probe_request",
    "read_probe_response",
]

log = logging.getLogger("headlesslb.health")

Probe = Callable[[Endpoint], Awaitable[bool]]
"""Sends one probe to an endpoint; True when it answered healthy in time."""

ProbeSend = Callable[[Endpoint, httpx.Request], Awaitable[httpx.Response]]
"""Sends a probe request to one endpoint and returns the response with its body not yet read
(as ``httpx.AsyncClient.send(request, stream=True)`` or ``PodSender.send_to`` do)."""

PROBE_BODY_LIMIT = 1024
"""Bytes of a probe response's body looked at, at most (Envoy buffers 1 KiB of it too)."""


def probe_request(
    check: HealthCheck, endpoint: Endpoint, *, base_url: str | None = None
) -> httpx.Request:
    """The ``GET <check.path>`` request that probes ``endpoint``.

    ``base_url`` (``"https://web-hl.default.svc.cluster.local"``) sets the scheme and the Host
    header; by default the URL is ``http://<ip>:<port>``. Every httpx timeout of the request
    (connect, read, write, pool) is ``check.timeout``.
    """
    base = base_url.rstrip("/") if base_url is not None else f"http://{endpoint.authority}"
    timeout = check.timeout
    return httpx.Request(
        "GET",
        base + check.path,
        headers={"user-agent": "headlesslb-health-check"},
        extensions={
            "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        },
    )


async def read_probe_response(response: httpx.Response, check: HealthCheck) -> bool:
    """Whether a probe's response passes (its status is in ``check.healthy_statuses``).

    Reads the body raw (never decompressed) until it ends or :data:`PROBE_BODY_LIMIT` bytes have
    arrived (the last network read may bring a little more: one httpcore read, 64 KiB at most),
    so a connection can be reused after a small answer; then closes the response whatever
    happened: an endless or huge body is cut off (the connection is dropped), never read to the
    end or held in memory. A body that breaks off or stalls raises as httpx does (the caller
    counts a failure); bound the wait with a timeout (:func:`probe_once` does).
    """
    try:
        passed = response.status_code in check.healthy_statuses
        if not response.is_stream_consumed and not response.is_closed:
            seen = 0
            async for chunk in response.aiter_raw():
                seen += len(chunk)
                if seen >= PROBE_BODY_LIMIT:
                    break
        return passed
    finally:
        await response.aclose()


async def probe_once(
    send: ProbeSend, endpoint: Endpoint, check: HealthCheck, *, base_url: str | None = None
) -> bool:
    """Send one probe to ``endpoint`` and judge it, within ``check.timeout`` in all.

    ``send(endpoint, request)`` must return the response unread (streaming). False when the
    status is not healthy, the exchange failed (any ``httpx.HTTPError``, an ``OSError`` such as
    an ``ssl.SSLError``) or the whole probe, body included, took longer than ``check.timeout``:
    a Pod that trickles bytes or streams an endless body cannot hold a probe past its timeout.
    Other exceptions propagate (:class:`HealthChecker` counts them as failures too).
    """
    request = probe_request(check, endpoint, base_url=base_url)
    try:
        with anyio.fail_after(check.timeout):
            response = await send(endpoint, request)
            return await read_probe_response(response, check)
    except (httpx.HTTPError, OSError, TimeoutError):  # TimeoutError: fail_after ran out
        return False


class HealthChecker:
    """Probes every pool member each interval, or at once when the membership changes."""

    def __init__(self, check: HealthCheck, pool: Pool, probe: Probe) -> None:
        self.check = check
        self.pool = pool
        self.tracker = HealthTracker(check)
        self._probe = probe
        self._wake = anyio.Event()
        self._running = False
        self.rounds = 0
        self.probed = anyio.Event()
        """Set once a round has probed at least one member: with ``start_unhealthy``, the first
        requests wait for it rather than find every Pod not yet admitted."""

    def wake(self) -> None:
        """Probe now (new endpoints appeared); never blocks."""
        self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The loop; like the refresher it logs and carries on rather than die."""
        self._running = True
        task_status.started()
        limiter = anyio.CapacityLimiter(self.check.concurrency)
        try:
            while True:
                try:
                    await self._round(limiter)
                except Exception:
                    log.exception("health-check round failed; retrying next interval")
                self.rounds += 1
                with anyio.move_on_after(self.check.interval):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            self._running = False

    @property
    def running(self) -> bool:
        """Whether the probe loop is running."""
        return self._running

    async def _round(self, limiter: anyio.CapacityLimiter) -> None:
        snapshot = self.pool.snapshot
        self.tracker.forget_except({m.key for m in snapshot.members})
        members = snapshot.watched  # with subsetting, only the Pods this client uses

        async def probe(endpoint: Endpoint) -> None:
            async with limiter:
                try:
                    with anyio.fail_after(self.check.timeout):
                        passed = bool(await self._probe(endpoint))
                except TimeoutError:
                    passed = False
                except Exception as exc:
                    # Whatever broke (TLS, a protocol error, a bug in the probe), it is this
                    # endpoint's failed probe: it must not end the round or cancel the others.
                    log.debug("health probe of %s failed: %r", endpoint, exc, exc_info=True)
                    passed = False
            verdict = self.tracker.observe(endpoint.key, passed)
            # The pool reports both changes as events (the log observer logs them).
            if verdict is not None:
                self.pool.set_health(endpoint.key, verdict)
            if passed and self.check.uneject_on_pass:
                self.pool.end_ejection(endpoint.key)

        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(probe, member.endpoint)
        if members:
            self.probed.set()
