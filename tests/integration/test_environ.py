"""An app run as a separate process (a REAL ``uvicorn``) reaches a LocalCluster through
``cluster.environ()`` alone: its client gets no nameservers, namespace or cluster domain.

uvicorn serves ``tests/integration/apps/env_app.py`` on a socket this test binds to 127.0.0.1
(port 0) and hands over as ``--fd N``, so no port is guessed.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from headlesslb.testing import LocalCluster

from .test_gunicorn import Gunicorn as Server
from .test_gunicorn import _stop, _wait_until_serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.apps.env_app:app"
PODS = ["web-0", "web-1", "web-2"]


@contextlib.contextmanager
def uvicorn(cluster: LocalCluster) -> Iterator[Server]:
    """``uvicorn`` serving the app with ``cluster.environ()`` in its environment; always stopped
    (as ``test_gunicorn`` stops gunicorn: SIGTERM, then its process group killed)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **cluster.environ(), "PYTHONPATH": path}
    env.pop("POD_NAMESPACE", None)  # the variables alone say where the cluster is
    fd = listener.fileno()
    command = [sys.executable, "-m", "uvicorn", APP, "--fd", str(fd), "--log-level", "warning"]
    with tempfile.TemporaryFile() as log:
        try:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, pass_fds=(fd,), start_new_session=True,
            )  # fmt: skip
        finally:
            listener.close()  # uvicorn has its own copy
        try:
            yield Server(process, url, log)
        finally:
            _stop(process)


def test_a_separately_run_app_balances_over_the_cluster_from_its_environ(
    cluster: LocalCluster,
) -> None:
    with uvicorn(cluster) as server:
        _wait_until_serving(server)
        response = httpx.get(server.url + "/call", params={"n": 30}, timeout=20.0)
        assert response.status_code == 200, (response.text, server.output())
        pods = collections.Counter(response.json()["pods"])
        # round robin over all three Pods: 10 each
        assert pods == dict.fromkeys(PODS, 10), pods
        assert {pod: cluster.requests_served(pod) for pod in PODS} == dict.fromkeys(PODS, 10)
