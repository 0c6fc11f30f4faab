"""Fixtures for integration tests: a LocalCluster with StatefulSet ``web`` (3 Pods)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from headlesslb.testing import LocalCluster


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """StatefulSet ``web`` ×3 behind headless ``web-hl`` and LB ``web-lb``; DNS TTL 1 s."""
    with LocalCluster(ttl=1) as c:
        c.add_statefulset("web", replicas=3, headless="web-hl", lb="web-lb")
        yield c
