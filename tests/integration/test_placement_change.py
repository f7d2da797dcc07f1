"""Placement rule changes and restores converge to the rules, down to the bytes on disk.

Real `edgekv serve` processes: a us-east node that held `eu/` keys under the old
rules hands them to the EU node once `eu/` becomes EU-only, erases them from
data, log and digests, and compacts them out of every file of its data
directory; until an EU node confirms it holds them it keeps them, unserved.
A backup taken in one region is not restored into another.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml

from edgekv.cluster.placement import PlacementRules
from edgekv.config.loader import load_config
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import scrape_metrics, wait_until
from edgekv.storage.backup import create_checkpoint
from edgekv.storage.clock import wall_ms
from edgekv.storage.engine import Engine, EngineSettings
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc

pytestmark = pytest.mark.integration

SECRET = b"eu-resident-secret-7b3e9a"
KEYS = [b"eu/user/%03d" % i for i in range(40)]
FAST = {"replication": {"heartbeat_interval_s": 0.2, "antientropy_interval_s": 0.5}}


def edgekv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def two_region_cluster(tmp_path: Path) -> Path:
    return write_cluster_file(
        tmp_path,
        regions=(("eu-west", 50.1, 8.7), ("us-east", 39.0, -77.5)),
        nodes=(("fra-1", "eu-west"), ("iad-1", "us-east")),
        placement=(("eu/", ("eu-west", "us-east")),),
        extra=FAST,
        metrics=True,
    )


def make_eu_only(path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["placement"] = [{"prefix": "eu/", "regions": ["eu-west"]}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def files_with(directory: Path, needle: bytes) -> list[str]:
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


def forwarded_get(kv: kv_pb2_grpc.KVStub, key: bytes) -> bool:
    try:
        return kv.Get(kv_pb2.GetRequest(key=key), timeout=5).found
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return False


def audit_violations(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        stub = cluster_pb2_grpc.ClusterStub(channel)
        return int(stub.Audit(cluster_pb2.AuditRequest(), timeout=10).violations)


def test_rule_change_erases_replicated_keys_after_the_owner_confirms(tmp_path: Path) -> None:
    path = two_region_cluster(tmp_path)
    with LocalCluster(path) as cluster:
        cluster.start()
        with grpc.insecure_channel(cluster.endpoint("iad-1")) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            for i, key in enumerate(KEYS):
                ack = kv.Put(kv_pb2.PutRequest(key=key, value=SECRET + b"%03d" % i), timeout=10)
                assert ack.served_by == "iad-1"  # the old rule lets us-east hold eu/
        with grpc.insecure_channel(cluster.endpoint("fra-1")) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            wait_until(
                lambda: all(kv.Get(kv_pb2.GetRequest(key=k), timeout=5).found for k in KEYS),
                timeout_s=30,
                what="the eu/ keys replicated to fra-1",
            )
    iad_dir = tmp_path / "data" / "iad-1"
    assert files_with(iad_dir, SECRET), "the old rule should have left the values at iad-1"

    make_eu_only(path)  # eu/ is EU-only now
    with LocalCluster(path) as cluster:
        # The owner is down: iad-1 keeps the keys, but serves none of them.
        cluster.start(["iad-1"])
        iad = cluster.nodes["iad-1"]
        wait_until(
            lambda: "kept until a node allowed to hold them confirms" in iad.log_path.read_text(),
            timeout_s=30,
            what="iad-1 keeping the keys no owner confirmed",
        )
        assert audit_violations(iad.endpoint) > 0
        port = iad.info["metrics_port"]
        assert scrape_metrics(port)["edgekv_purge_pending_records"][0][1] == len(KEYS)
        with grpc.insecure_channel(iad.endpoint) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                kv.Get(kv_pb2.GetRequest(key=KEYS[0]), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # forwarded, not served
            with pytest.raises(grpc.RpcError) as err:
                kv.Scan(kv_pb2.ScanRequest(prefix=b"eu/"), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        # The owner comes back: iad-1 hands the keys over, erases and compacts them.
        cluster.start(["fra-1"])
        wait_until(
            lambda: "removed 40 records this node may no longer hold" in iad.log_path.read_text(),
            timeout_s=60,
            what="iad-1 erasing the keys once fra-1 confirmed it holds them",
        )
        assert audit_violations(iad.endpoint) == 0
        metrics = scrape_metrics(port)
        assert metrics["edgekv_purged_records_total"][0][1] == len(KEYS)
        assert metrics["edgekv_purge_pending_records"][0][1] == 0
        assert files_with(iad_dir, SECRET) == []  # no SST, WAL, MANIFEST or log holds them
        with grpc.insecure_channel(iad.endpoint) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            # iad-1's channel to fra-1 may still be in its reconnect backoff.
            wait_until(lambda: forwarded_get(kv, KEYS[3]), timeout_s=30, what="a forwarded Get")
            got = kv.Get(kv_pb2.GetRequest(key=KEYS[3]), timeout=10)
            assert got.served_by == "fra-1" and got.value == SECRET + b"003"
            page = kv.Scan(kv_pb2.ScanRequest(prefix=b"eu/", limit=100), timeout=10)
            assert [item.key for item in page.items] == KEYS
            assert page.items[5].value == SECRET + b"005"
        cluster.stop("iad-1")
    assert files_with(iad_dir, SECRET) == []
    out = edgekv("audit", "--config", str(path), "--node", "iad-1", "--offline")
    assert out.returncode == 0, out.stdout + out.stderr


def test_restore_refuses_a_backup_from_another_region(tmp_path: Path) -> None:
    path = two_region_cluster(tmp_path)
    make_eu_only(path)
    dest = tmp_path / "backups" / "fra-1"
    with LocalCluster(path) as cluster:
        cluster.start()
        with grpc.insecure_channel(cluster.endpoint("fra-1")) as channel:
            kv = kv_pb2_grpc.KVStub(channel)
            kv.Put(kv_pb2.PutRequest(key=b"eu/alice", value=SECRET), timeout=10)
            kv.Put(kv_pb2.PutRequest(key=b"g/1", value=b"public"), timeout=10)
        wait_until(
            lambda: synced_with_every_peer(cluster.nodes["fra-1"].info["metrics_port"]),
            timeout_s=30,
            what="fra-1 completing an anti-entropy sync",
        )
        out = edgekv("backup", "--dest", str(dest), "--endpoint", cluster.endpoint("fra-1"))
        assert out.returncode == 0, out.stderr
    iad_dir = tmp_path / "data" / "iad-1"
    shutil.rmtree(iad_dir)
    args = ("restore", "--from", str(dest), "--config", str(path), "--node", "iad-1")
    out = edgekv(*args)
    assert out.returncode == 1, out.stdout
    assert "region 'eu-west'" in out.stderr and "--force-placement" in out.stderr
    assert not iad_dir.exists()
    out = edgekv(*args, "--force-placement")  # the audit finds eu/alice: still refused
    assert out.returncode == 1, out.stdout
    assert "may not hold" in out.stderr and not iad_dir.exists()
    # The same backup restores into its own region's node.
    shutil.rmtree(tmp_path / "data" / "fra-1")
    out = edgekv("restore", "--from", str(dest), "--config", str(path), "--node", "fra-1")
    assert out.returncode == 0, out.stderr


def synced_with_every_peer(metrics_port: int) -> bool:
    synced = scrape_metrics(metrics_port)["edgekv_antientropy_synced_from_timestamp_seconds"]
    return all(value > 0 for _, value in synced)


@pytest.mark.parametrize(
    ("complete_days_ago", "message"),
    [(4, "complete only up to 96.0 h ago"), (None, "before its node had completed")],
)
def test_restore_age_counts_from_how_complete_the_backup_is(
    tmp_path: Path, complete_days_ago: int | None, message: str
) -> None:
    path = write_cluster_file(tmp_path)  # grace is 3 days by default
    rules = PlacementRules.from_config(load_config(path))
    settings = EngineSettings(placement_fingerprint=rules.fingerprint())
    with Engine(tmp_path / "source", "node-1", settings) as engine:
        engine.put(b"k", b"v")
        complete = 0 if complete_days_ago is None else wall_ms() - complete_days_ago * 86_400_000
        checkpoint = create_checkpoint(
            engine, tmp_path / "cp", region="local", complete_as_of_ms=complete
        )  # taken just now, but complete only up to days ago (or unknown)
    args = ("restore", "--from", str(checkpoint), "--config", str(path), "--node", "node-1")
    out = edgekv(*args)
    assert out.returncode == 1 and message in out.stderr, out.stderr
    out = edgekv(*args, "--force")
    assert out.returncode == 0, out.stderr
