"""The edge-function example (examples/edge-function/) in workerd against a real 2-region cluster.

The Worker is the esbuild bundle of worker.ts, run by workerd (Cloudflare's
Workers runtime, from npm) with examples/edge-function/config.capnp as `make
example` runs it: it reaches a us-east PoP over fetch() with the Connect
protocol, reads an EU-pinned key (forwarded to eu-west) and a global key, and
writes a key with a TTL; the test reads that write back with the Python SDK in
the other region.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from jsnode import REPO, http_url, needs_node, npm_setup

from edgekv import Client
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.local.workerd import WorkerdProcess, start_workerd, workerd_binary
from edgekv.server.auth import hash_token

pytestmark = [pytest.mark.integration, needs_node]

TOKEN = "edge-function-secret"
EU, US = "fra-1", "iad-1"
EXAMPLE = REPO / "examples" / "edge-function"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    npm_setup()
    security = {
        "auth": {
            "mode": "tokens",
            "tokens": [{"name": "edge", "sha256": hash_token(TOKEN).hex(), "scope": "write"}],
        },
        "insecure_peer_plane": True,  # loopback only
    }
    path = write_cluster_file(
        tmp_path_factory.mktemp("edge-function"),
        regions=(("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45)),
        nodes=((EU, "eu-west"), (US, "us-east")),
        placement=(("eu/", ["eu-west"]),),
        extra={"security": security, "replication": {"heartbeat_interval_s": 0.2}},
        http=True,
    )
    with LocalCluster(path) as local:
        local.start()
        yield local


@pytest.fixture(scope="module")
def worker(cluster: LocalCluster) -> Iterator[WorkerdProcess]:
    proc = start_workerd(
        workerd_binary(REPO),
        EXAMPLE / "config.capnp",
        env={"EDGEKV_URL": http_url(cluster.nodes[US]), "EDGEKV_TOKEN": TOKEN},
        log_path=cluster.run_dir / "workerd.log",
    )
    try:
        yield proc
    finally:
        proc.stop()


def call(worker: WorkerdProcess, **params: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    url = f"{worker.url}/?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, lower(resp.headers.items()), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, lower(err.headers.items()), json.loads(err.read())


def lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def test_worker_reads_pinned_and_global_keys_and_writes_with_ttl(
    cluster: LocalCluster, worker: WorkerdProcess
) -> None:
    run = uuid.uuid4().hex[:8]
    pinned, global_, session = f"eu/profile/{run}", f"config/greeting-{run}", f"sessions/{run}"
    with Client(cluster.endpoint(EU), discover=False, token=TOKEN) as eu:
        eu.put(pinned, "Ada, Berlin")
        eu.put(global_, "hello from edgekv")
    with Client(cluster.endpoint(US), discover=False, token=TOKEN) as us:
        wait_until(lambda: us.get(global_), timeout_s=15, what="the global key at iad-1")

    before_ms = time.time() * 1000
    status, headers, body = call(
        worker, pinned=pinned, **{"global": global_}, write=session, ttl_ms="60000"
    )
    assert status == 200, body
    # The pinned key lives only in eu-west: the us-east PoP forwarded the read.
    assert body["pinned"]["value"] == "Ada, Berlin"
    assert body["pinned"]["served_by"] == EU
    assert body["global"]["value"] == "hello from edgekv"
    assert body["global"]["served_by"] == US
    assert body["wrote"]["key"] == session and body["wrote"]["served_by"] == US
    timing = headers["server-timing"]
    for name in ("edgekv-get-pinned", "edgekv-get-global", "edgekv-put", "total"):
        assert f"{name};dur=" in timing, timing
    assert f'desc="served by {EU}"' in timing
    # The node's own Server-Timing, kept per call: iad-1 forwarded the pinned read.
    for name in ("edgekv-get-pinned.forward", "edgekv-get-global.kv", "edgekv-put.kv",
                 "edgekv-get-pinned.total"):  # fmt: skip
        assert f"{name};dur=" in timing, timing

    # What the Worker wrote, read back over gRPC in the other region, with its TTL.
    with Client(cluster.endpoint(EU), discover=False, token=TOKEN) as eu:
        entry = wait_until(lambda: eu.get(session), timeout_s=15, what="the Worker's write")
    assert json.loads(entry.value)["pinned_found"] is True
    assert entry.version.origin == US
    assert entry.version.timestamp == int(body["wrote"]["version"]["timestamp"])
    assert before_ms + 60_000 <= entry.expires_at_ms <= time.time() * 1000 + 60_000


def test_worker_reports_the_nodes_error_code(worker: WorkerdProcess) -> None:
    status, _, body = call(worker, write="")  # an empty key: the node refuses the put
    assert status == 502
    assert body["error"]["code"] == "invalid_argument"
    assert "key is empty" in body["error"]["message"]
