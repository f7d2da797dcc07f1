"""Embedded replica reads against real `edgekv serve` processes.

A client with ``embedded=DATA_DIR`` reads the node's files in-process; a plain
client asks the same node over gRPC. Both must answer alike, keys pinned to
another region must never come from the files, and the reader must survive
the node restarting, crashing (SIGKILL) and compacting.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgekv
from edgekv.client._types import Entry, Version
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import wait_until
from edgekv.storage.engine import Engine

pytestmark = pytest.mark.integration

REGIONS = (("us-east", 38.95, -77.45), ("eu-west", 50.11, 8.68))
NODES = (("iad-1", "us-east"), ("fra-1", "eu-west"))
PLACEMENT = (("eu/", ["eu-west"]),)
FAST = {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 1.0}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    path = write_cluster_file(
        tmp_path, regions=REGIONS, nodes=NODES, placement=PLACEMENT, extra={"replication": FAST}
    )
    with LocalCluster(path) as c:
        c.start()
        yield c


def _same(entry: Entry | None) -> tuple[bytes, bytes, Version, int] | None:
    if entry is None:
        return None
    return (entry.key, entry.value, entry.version, entry.expires_at_ms)


def test_embedded_reads_equal_the_node_and_never_serve_pinned_keys_from_files(
    cluster: LocalCluster,
) -> None:
    endpoint = cluster.endpoint("iad-1")
    data_dir = cluster.data_dirs()["iad-1"]
    rng = random.Random(1414)
    keys = [f"g/{i:02d}".encode() for i in range(40)] + [f"eu/{i:02d}".encode() for i in range(10)]
    with (
        edgekv.Client(endpoint, discover=False) as net,
        edgekv.Client(endpoint, discover=False, embedded=data_dir) as emb,
    ):
        assert emb.embedded, emb.embedded_error
        for _ in range(300):
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.55:
                net.put(key, rng.randbytes(rng.randint(0, 80)))
            elif roll < 0.75:
                net.put(key, b"ttl", ttl_ms=rng.choice([1, 60_000]))
            else:
                net.delete(key)
        time.sleep(0.05)  # 1 ms TTLs are over: both sides must read them as absent
        for key in keys:
            from_files, from_node = emb.get(key), net.get(key)
            assert _same(from_files) == _same(from_node), key
            if key.startswith(b"eu/"):
                # Pinned to eu-west: forwarded by iad-1, never read from iad-1's files.
                assert from_files is None or (
                    from_files.staleness is None and from_files.served_by == "fra-1"
                )
            elif from_files is not None:
                assert from_files.staleness is not None and from_files.served_by == "iad-1"
        assert [_same(e) for e in emb.get_many(keys)] == [_same(e) for e in net.get_many(keys)]
        global_keys = keys[:40]
        local = emb.get_many(global_keys)
        assert all(e is None or e.staleness is not None for e in local)
        assert [_same(e) for e in emb.scan("g/", page_size=7)] == [
            _same(e) for e in net.scan("g/", page_size=7)
        ]
        # A scan over both placements is stitched by the node, not read from the files.
        assert [_same(e) for e in emb.scan("")] == [_same(e) for e in net.scan("")]
        assert any(e.served_by == "fra-1" for e in emb.scan("eu/"))
        assert emb.embedded_staleness() is not None

        # Writes applied from a peer (replication), not only local ones, reach the reader.
        with edgekv.Client(cluster.endpoint("fra-1"), discover=False) as far:
            far.put("g/from-fra", b"replicated")
            far.delete("g/00")
        wait_until(
            lambda: _same(net.get("g/from-fra")) is not None and net.get("g/00") is None,
            timeout_s=30,
            what="iad-1 applied fra-1's writes",
        )
        entry = emb.get("g/from-fra")
        assert entry is not None and entry.value == b"replicated" and entry.staleness is not None
        assert emb.get("g/00") is None


def test_embedded_reader_survives_restart_kill_and_compaction(tmp_path: Path) -> None:
    path = write_cluster_file(tmp_path)
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        data_dir = cluster.data_dirs()["node-1"]
        with edgekv.Client(cluster.endpoint("node-1"), discover=False, embedded=data_dir) as client:
            assert client.embedded, client.embedded_error
            client.put("r/1", b"before")
            assert _value(client.get("r/1")) == b"before"

            cluster.restart("node-1")  # graceful: new manifest epoch, new WAL (same port)
            client.put("r/2", b"after-restart")
            assert _value(client.get("r/2")) == b"after-restart"
            assert _value(client.get("r/1")) == b"before"

            cluster.kill("node-1")  # a crash: no flush, no clean close
            assert _value(client.get("r/2")) == b"after-restart"  # files still answer
            cluster.start(["node-1"])
            client.put("r/3", b"after-kill")
            assert _value(client.get("r/3")) == b"after-kill"

            cluster.stop("node-1")
            with Engine(data_dir, "node-1") as engine:  # files rewritten under the reader
                for i in range(3000):
                    engine.put(f"c/{i:04d}".encode(), b"x" * 200)
                data = engine.column_families()[0]
                data.flush()
                data.compact_range(None, None)
            cluster.start(["node-1"])
            client.delete("r/1")
            assert client.get("r/1") is None
            assert _value(client.get("c/2999")) == b"x" * 200
            assert _value(client.get("r/3")) == b"after-kill"
            assert sum(1 for _ in client.scan("c/", page_size=500)) == 3000
            stale = client.embedded_staleness()
            assert stale is not None and stale.lag_seq == 0


def _value(entry: Entry | None) -> bytes | None:
    assert entry is None or entry.staleness is not None  # read from the files
    return None if entry is None else entry.value


def test_discovering_client_writes_to_the_node_it_reads_in_process(cluster: LocalCluster) -> None:
    # Seeded with the other node: discovery must still put the co-located node first, or a
    # put would land on fra-1 and the next in-process read of iad-1's files would miss it.
    with edgekv.Client(cluster.endpoint("fra-1"), embedded=cluster.data_dirs()["iad-1"]) as client:
        assert client.topology.nearest()[0].node_id == "iad-1"
        for i in range(20):
            written = client.put(f"ryw/{i}", b"mine")
            assert written.served_by == "iad-1"
            entry = client.get(f"ryw/{i}")
            assert entry is not None and entry.value == b"mine" and entry.staleness is not None
