"""HTTPS to Pod IPs, verified against the Service name (SNI), with a throwaway CA."""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from headlesslb.testing import LocalCluster

from .helpers import library, make_client

pytestmark = [pytest.mark.anyio, pytest.mark.both_clients]

SERVICE_HOST = "web-hl.default.svc.cluster.local"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_cluster(ca: trustme.CA, tmp_path: Path, *names: str) -> LocalCluster:
    cert = ca.issue_cert(*names)
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    cluster = LocalCluster(ttl=1)
    cluster.add_statefulset(
        "web", replicas=3, headless="web-hl", lb="web-lb", tls=(str(certfile), str(keyfile))
    )
    return cluster


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def tls_cluster(ca: trustme.CA, tmp_path: Path) -> Iterator[LocalCluster]:
    with _tls_cluster(ca, tmp_path, SERVICE_HOST, "web-lb.default.svc.cluster.local") as cluster:
        yield cluster


async def test_https_verifies_the_service_name_not_the_pod_ip(
    tls_cluster: LocalCluster, client_context: ssl.SSLContext
) -> None:
    async with make_client(tls_cluster, scheme="https", verify=client_context) as client:
        pods = set()
        for _ in range(6):
            response = await client.get("/secure")
            assert response.status_code == 200
            pods.add(response.json()["pod"])
            assert response.json()["host"] == SERVICE_HOST
    assert pods == {"web-0", "web-1", "web-2"}
    assert str(response.url).startswith(f"https://{SERVICE_HOST}/")


async def test_https_fallback_verifies_the_fallback_name(
    tls_cluster: LocalCluster, client_context: ssl.SSLContext
) -> None:
    tls_cluster.delete_service("web-hl")
    async with make_client(
        tls_cluster, scheme="https", verify=client_context, fallback="web-lb"
    ) as client:
        response = await client.get("/secure")
    assert response.extensions["headlesslb"]["fallback"] is True
    assert response.json()["host"] == "web-lb.default.svc.cluster.local"


async def test_certificate_for_another_name_is_rejected(
    ca: trustme.CA, tmp_path: Path, client_context: ssl.SSLContext
) -> None:
    with _tls_cluster(ca, tmp_path, "other.default.svc.cluster.local") as cluster:
        async with make_client(cluster, scheme="https", verify=client_context) as client:
            with pytest.raises(library().ConnectError) as caught:
                await client.get("/secure")
    cause: BaseException | None = caught.value
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    assert isinstance(cause, ssl.SSLCertVerificationError), caught.value


async def test_a_ca_bundle_path_verifies_without_httpx_deprecation_warnings(
    tls_cluster: LocalCluster, ca: trustme.CA, tmp_path: Path
) -> None:
    # verify="/path" is headlesslb's argument, as it was httpx's: httpx 0.28 deprecated that
    # form in its own context factory, and every context a client made warned once (twice per
    # client: its Pods' connections and its probes').
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        async with make_client(tls_cluster, scheme="https", verify=str(bundle)) as client:
            response = await client.get("/secure")
    assert response.status_code == 200
