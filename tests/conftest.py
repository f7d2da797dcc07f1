"""Settings for every test directory."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from edgekv.local import launcher

# Examples are judged by what they find, not by how fast this machine makes
# them: on 2 shared cores (parallel workers, node processes) generation and
# single examples can be slow without anything being wrong.
settings.register_profile("edgekv", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("edgekv")


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist each worker starts clusters of its own: give each its
    # own share of the port range so two workers never pick the same port.
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker:
        launcher.share_ports(int(worker[2:]), int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
