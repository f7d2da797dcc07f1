"""Fixtures that start whole clusters inside the test process (edgekv.local.inprocess).

Every node runs on the test's own event loop with real gRPC on loopback and a
fault proxy on each link; the fixture closes what it started, also when the
test fails, and fails the test if a node left a task running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekv.local.inprocess import ClusterFactory, InProcessCluster


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """``await make_cluster(**kwargs)``: a started InProcessCluster (kwargs as its constructor's).

    Each call gets its own directory under tmp_path; all are closed after the test.
    """
    started: list[InProcessCluster] = []

    async def make(**kwargs: Any) -> InProcessCluster:
        cluster = InProcessCluster(tmp_path / f"cluster-{len(started)}", **kwargs)
        started.append(cluster)
        await cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in reversed(started):
            await cluster.close()


@pytest.fixture
async def cluster(make_cluster: ClusterFactory) -> InProcessCluster:
    """Three nodes in three regions (fra-1, iad-1, nrt-1), no placement rules."""
    return await make_cluster()
