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


# The test files that take longest (worker seconds, summed from --durations=0 of a
# whole `make test` run on 2 loaded cores), scheduled first: pytest-xdist (--dist
# loadfile --no-loadscope-reorder, as `make test` runs it) hands files to workers in
# collection order, so a long file collected last keeps one worker busy while the
# other idles at the end of the run. The many short files left (unit, parity,
# property) fill the end. Hypothesis-driven files vary from run to run
# (test_convergence_property 11-33 s, test_collection_property 5-19 s): placed by
# their longer runs.
_LONGEST_FIRST = (
    "tests/integration/test_sdk.py",
    "tests/integration/test_cli.py",
    "tests/integration/test_replication.py",
    "tests/integration/test_js_clients.py",
    "tests/integration/test_kv_stream_node.py",
    "tests/integration/test_watch_resume.py",
    "tests/integration/test_security.py",
    "tests/integration/test_readme.py",
    "tests/integration/test_bounds.py",
    "tests/integration/test_peer_auth.py",
    "tests/integration/test_residency.py",
    "tests/integration/test_node_grpc.py",
    "tests/integration/test_convergence_property.py",
    "tests/parity/test_reader_parity.py",
    "tests/torture/test_torture.py",
    "tests/integration/test_demo.py",
    "tests/integration/test_http_door.py",
    "tests/inprocess/test_session.py",
    "tests/integration/test_collection.py",
    "tests/property/test_collection_property.py",
    "tests/integration/test_embedded.py",
    "tests/integration/test_clock_fence.py",
    "tests/torture/test_home_torture.py",
    "tests/parity/test_record_parity.py",
    "tests/property/test_lww.py",
    "tests/integration/test_placement_change.py",
    "tests/integration/test_bench_compare.py",
    "tests/inprocess/test_home_mode.py",
    "tests/torture/test_wire_fuzz.py",
    "tests/integration/test_sdk_http.py",
    "tests/torture/test_netns.py",
    "tests/integration/test_http_direct_paths.py",
    "tests/integration/test_backup.py",
    "tests/inprocess/test_http_h2c_server.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(_LONGEST_FIRST)}
    last = len(rank)
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], last))  # stable
