"""EndpointSlice discovery against the real API machinery of the kubeapi bed.

Each test drives the bed with real writes (create, patch, relabel, delete, compact, restart,
rotate, deny) and checks that the discovery's endpoints equal the union of the Service's
slices afterwards, and that what the API cannot give (a list, a watch) keeps the last good
state and is said once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from headlesslb import DiscoveryError, Endpoint, EndpointSlices, KubeAPIConfig
from headlesslb.core.names import expand_service_name
from headlesslb.io.kube import EndpointSliceDiscovery
from headlesslb.testing._kubeapi import Json, KubeAPI, endpoint, endpoint_port

pytestmark = [pytest.mark.kubeapi, pytest.mark.anyio]
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

SERVICE = "web"


def config(bed: KubeAPI, *, token: str | None = None, token_file: Path | None = None) -> Any:
    if token_file is not None:
        return KubeAPIConfig(bed.base_url, token_file=str(token_file), ca_file=str(bed.ca_file))
    return KubeAPIConfig(bed.base_url, token=token or bed.token, ca_file=str(bed.ca_file))


def discovery(
    api: KubeAPIConfig,
    namespace: str,
    *,
    port: int | str = "http",
    include_not_ready: bool = False,
    watch_timeout: float = 290.0,
    cls: type[EndpointSliceDiscovery] = EndpointSliceDiscovery,
) -> EndpointSliceDiscovery:
    name = expand_service_name(SERVICE, namespace=namespace, cluster_domain="cluster.local")
    settings = EndpointSlices(
        api=api, include_not_ready=include_not_ready, watch_timeout=watch_timeout
    )
    return cls(name, settings, port=port)


class Follower:
    """A discovery's watch running as a task; ``until`` waits (with a deadline) for its
    endpoints to satisfy a predicate, woken by the watch's changes and polling its state."""

    def __init__(self, source: EndpointSliceDiscovery) -> None:
        self.source = source
        self.changes = 0
        self._event = anyio.Event()

    def changed(self) -> None:
        self.changes += 1
        self._event.set()

    async def endpoints(self) -> tuple[Endpoint, ...] | None:
        try:
            return (await self.source.resolve()).endpoints
        except DiscoveryError:
            return None

    async def until(
        self, predicate: Callable[[tuple[Endpoint, ...] | None], bool], timeout: float = 15.0
    ) -> tuple[Endpoint, ...] | None:
        with anyio.fail_after(timeout):
            while True:
                self._event = anyio.Event()
                found = await self.endpoints()
                if predicate(found):
                    return found
                with anyio.move_on_after(0.05):  # some states (errors) change without a push
                    await self._event.wait()

    async def until_state(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.02)


@asynccontextmanager
async def following(source: EndpointSliceDiscovery) -> AsyncIterator[Follower]:
    follower = Follower(source)
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.watch, follower.changed)
        yield follower
        tg.cancel_scope.cancel()


async def bed_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking harness call off the event loop (the watch reads meanwhile)."""
    return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


def addresses(prefix: str, count: int) -> list[str]:
    return [f"{prefix}.{i // 250}.{i % 250 + 1}" for i in range(count)]


def make_slice(
    bed: KubeAPI, namespace: str, name: str, ips: Sequence[str], *, port: int = 8080, **kw: Any
) -> Json:
    return bed.create_slice(
        namespace,
        name,
        service=SERVICE,
        endpoints=[endpoint(ip, **kw) for ip in ips],
        ports=[endpoint_port(port, name="http")],
    )


def keys(found: tuple[Endpoint, ...] | None) -> set[tuple[str, int]]:
    return {e.key for e in found or ()}


def union(ips: Sequence[str], port: int = 8080) -> set[tuple[str, int]]:
    return {(ip, port) for ip in ips}


async def test_three_slices_are_one_service(kubeapi: KubeAPI, namespace: str) -> None:
    a, b, c = addresses("10.1", 100), addresses("10.2", 100), addresses("10.3", 50)
    for name, ips in (("web-a", a), ("web-b", b), ("web-c", c)):
        await bed_call(make_slice, kubeapi, namespace, name, ips)
    # Another Service's slice in the namespace is not ours.
    await bed_call(
        kubeapi.create_slice,
        namespace,
        "other-a",
        service="other",
        endpoints=[endpoint("10.9.0.1")],
        ports=[endpoint_port(8080, name="http")],
    )
    source = discovery(config(kubeapi), namespace)
    async with following(source) as follow:
        found = await follow.until(lambda f: f is not None)
        assert keys(found) == union(a + b + c) and len(union(a + b + c)) == 250
        await bed_call(kubeapi.delete_slice, namespace, "web-c")
        await follow.until(lambda f: keys(f) == union(a + b))
        await bed_call(kubeapi.set_endpoints, namespace, "web-b", [endpoint(ip) for ip in b[:10]])
        await follow.until(lambda f: keys(f) == union(a + b[:10]))
        await bed_call(
            kubeapi.relabel_slice, namespace, "web-a", {"kubernetes.io/service-name": "x"}
        )
        await follow.until(lambda f: keys(f) == union(b[:10]))
        await bed_call(make_slice, kubeapi, namespace, "web-d", c)
        await follow.until(lambda f: keys(f) == union(b[:10] + c))
    assert source.lists == 1 and source.relists_gone == 0


@asyncio_only
async def test_conditions_ordinals_zones_and_named_port(kubeapi: KubeAPI, namespace: str) -> None:
    pods = [
        endpoint("10.4.0.1", hostname="db-0", zone="a", for_zones=["a"]),
        endpoint("10.4.0.2", target_ref={"kind": "Pod", "name": "db-1"}, zone="b"),
        endpoint("10.4.0.3", hostname="db-2", ready=False, serving=True, terminating=True),
        endpoint("10.4.0.4", hostname="db-3", ready=False, serving=False, terminating=True),
        endpoint("10.4.0.5", hostname="db-4", ready=False, serving=False),
    ]
    await bed_call(
        kubeapi.create_slice,
        namespace,
        "web-x",
        service=SERVICE,
        endpoints=pods,
        ports=[endpoint_port(9000, name="metrics"), endpoint_port(8443, name="http")],
    )
    async with following(discovery(config(kubeapi), namespace)) as follow:
        found = await follow.until(lambda f: f is not None)
    assert found is not None
    got = {e.ip: e for e in found}
    assert sorted(got) == ["10.4.0.1", "10.4.0.2", "10.4.0.3"]
    assert {e.port for e in found} == {8443}
    assert [got[ip].ordinal for ip in sorted(got)] == [0, 1, 2]
    assert [got[ip].terminating for ip in sorted(got)] == [False, False, True]
    assert (got["10.4.0.1"].zone, got["10.4.0.1"].for_zones) == ("a", ("a",))
    assert got["10.4.0.2"].zone == "b"

    # publishNotReadyAddresses: not-ready Pods included when asked, terminating ones still drain.
    async with following(discovery(config(kubeapi), namespace, include_not_ready=True)) as follow:
        found = await follow.until(lambda f: f is not None)
    assert sorted(e.ip for e in found or ()) == ["10.4.0.1", "10.4.0.2", "10.4.0.3", "10.4.0.5"]


@asyncio_only
async def test_values_no_pod_can_have_are_skipped_once(
    kubeapi: KubeAPI, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = ["0.0.0.0", "224.0.0.1", "169.254.1.1", "255.255.255.255"]
    await bed_call(make_slice, kubeapi, namespace, "web-bad", [*bad, "10.5.0.1"])
    await bed_call(
        kubeapi.create_slice,
        namespace,
        "web-fqdn",
        service=SERVICE,
        address_type="FQDN",
        endpoints=[endpoint("pod.example.com")],
        ports=[endpoint_port(8080, name="http")],
    )
    await bed_call(
        kubeapi.create_slice,
        namespace,
        "web-noport",
        service=SERVICE,
        endpoints=[endpoint("10.5.0.9")],
        ports=[endpoint_port(8080, name="grpc")],
    )
    caplog.set_level(logging.WARNING, "headlesslb.kube")
    async with following(discovery(config(kubeapi), namespace)) as follow:
        found = await follow.until(lambda f: f is not None)
        assert keys(found) == {("10.5.0.1", 8080)}
        # The same slice again (a new resourceVersion, the same endpoints): not logged again.
        await bed_call(kubeapi.relabel_slice, namespace, "web-bad", {"touched": "yes"})
        await bed_call(make_slice, kubeapi, namespace, "web-good", ["10.5.0.2"])
        await follow.until(lambda f: keys(f) == {("10.5.0.1", 8080), ("10.5.0.2", 8080)})
    lines = [r.getMessage() for r in caplog.records]
    assert len([m for m in lines if "web-bad" in m]) == 1, lines
    assert all(ip in next(m for m in lines if "web-bad" in m) for ip in bad[:3])
    assert len([m for m in lines if "web-noport" in m]) == 1, lines


@asyncio_only
async def test_watch_410_error_event_relists(
    new_kubeapi: Callable[..., KubeAPI], namespace: str
) -> None:
    bed = new_kubeapi(watch_cache=False)
    first = addresses("10.6", 120)
    await bed_call(make_slice, bed, namespace, "web-a", first)
    source = discovery(config(bed), namespace)
    async with following(source) as follow:
        await follow.until(lambda f: keys(f) == union(first))
    # While nobody watches, the Service changes and etcd compacts past the version we hold:
    # the watch resumed from it gets an ERROR event with code 410, and lists again.
    later = addresses("10.7", 30)
    await bed_call(make_slice, bed, namespace, "web-b", later)
    await bed_call(bed.delete_slice, namespace, "web-a")
    await bed_call(bed.compact)
    async with following(source) as follow:
        await follow.until(lambda f: keys(f) == union(later))
    assert source.relists_gone == 1 and source.lists == 2


@asyncio_only
async def test_list_410_on_a_stale_continue_token_relists(
    new_kubeapi: Callable[..., KubeAPI], namespace: str
) -> None:
    bed = new_kubeapi(watch_cache=False)
    slices = {f"web-{i}": addresses(f"10.{80 + i}", 3) for i in range(3)}
    for name, ips in slices.items():
        await bed_call(make_slice, bed, namespace, name, ips)

    class CompactingBetweenPages(EndpointSliceDiscovery):
        """Pages of one slice, and a compaction after the first page of the first list: its
        continue token is from before the compaction (HTTP 410)."""

        requests = 0

        def _headers(self) -> dict[str, str]:
            self.requests += 1
            if self.requests == 2:
                # etcd keeps the revision it compacts at: write once more, then compact.
                bed.create_slice(namespace, "other-a", service="other")
                bed.compact()
            return super()._headers()

    source = discovery(config(bed), namespace, cls=CompactingBetweenPages)
    source.page_limit = 1
    async with following(source):
        # The first resolve() waits through the 410 for the list that follows it: no error.
        with anyio.fail_after(15):
            found = (await source.resolve()).endpoints
    assert keys(found) == union([ip for ips in slices.values() for ip in ips])
    assert source.relists_gone == 1 and source.lists == 1


@asyncio_only
async def test_apiserver_restart_and_outage_keep_the_last_state(
    new_kubeapi: Callable[..., KubeAPI], namespace: str
) -> None:
    bed = new_kubeapi()
    first = addresses("10.10", 5)
    await bed_call(make_slice, bed, namespace, "web-a", first)
    source = discovery(config(bed), namespace)
    async with following(source) as follow:
        await follow.until(lambda f: keys(f) == union(first))
        await bed_call(bed.restart_apiserver)
        more = addresses("10.11", 5)
        await bed_call(make_slice, bed, namespace, "web-b", more)
        await follow.until(lambda f: keys(f) == union(first + more))
        # Unreachable: the last state stays, and the failure is known.
        await bed_call(bed.stop_apiserver)
        await follow.until_state(lambda: source.last_error is not None)
        assert keys(await follow.endpoints()) == union(first + more)
        await bed_call(bed.start_apiserver)
        await bed_call(bed.delete_slice, namespace, "web-a")
        await follow.until(lambda f: keys(f) == union(more), timeout=30)
        assert source.last_error is None


@asyncio_only
async def test_rotated_token_file_is_read_again(
    new_kubeapi: Callable[..., KubeAPI], namespace: str, tmp_path: Path
) -> None:
    bed = new_kubeapi()
    token_file = tmp_path / "token"
    token_file.write_text(bed.token + "\n")
    first = addresses("10.12", 4)
    await bed_call(make_slice, bed, namespace, "web-a", first)
    source = discovery(config(bed, token_file=token_file), namespace)
    async with following(source) as follow:
        await follow.until(lambda f: keys(f) == union(first))
        # The old token is refused from now on; the restart makes the watch reconnect with it.
        new = await bed_call(bed.rotate_token)
        await bed_call(bed.restart_apiserver)
        await follow.until_state(lambda: "401" in (source.last_error or ""))
        assert keys(await follow.endpoints()) == union(first)
        # The kubelet writes the new token in place: the next try reads it.
        (tmp_path / "token.new").write_text(new)
        (tmp_path / "token.new").replace(token_file)
        more = addresses("10.13", 4)
        await bed_call(make_slice, bed, namespace, "web-b", more)
        await follow.until(lambda f: keys(f) == union(first + more), timeout=30)
        assert source.last_error is None


@asyncio_only
async def test_forbidden_then_allowed(kubeapi: KubeAPI, namespace: str) -> None:
    user = f"viewer-{namespace}"
    token = await bed_call(kubeapi.add_user, user, "get,list,watch")
    await bed_call(kubeapi.deny, user)
    ips = addresses("10.14", 3)
    await bed_call(make_slice, kubeapi, namespace, "web-a", ips)
    source = discovery(config(kubeapi, token=token), namespace)
    async with following(source) as follow:
        await follow.until_state(lambda: "403" in (source.last_error or ""))
        with pytest.raises(DiscoveryError, match="403 Forbidden"):
            await source.resolve()
        await bed_call(kubeapi.allow, user, "get,list,watch")
        await follow.until(lambda f: keys(f) == union(ips), timeout=30)
