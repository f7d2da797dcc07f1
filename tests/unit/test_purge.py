"""Erasing keys a node may no longer hold (storage/purge.py) and the hand-off answer
(replication/handoff.held_keys), on a real RocksDB."""

from __future__ import annotations

from pathlib import Path

import grpc

from edgekv import native
from edgekv.cluster.audit import AuditReport, audit_column_families
from edgekv.cluster.placement import PlacementRule, PlacementRules
from edgekv.cluster.routing import Router
from edgekv.config.loader import parse_config
from edgekv.config.model import ClusterConfig
from edgekv.local.launcher import free_port
from edgekv.replication.handoff import Handoff, held_keys
from edgekv.storage.engine import Engine, EngineSettings
from edgekv.storage.purge import in_ranges
from edgekv.v1.replication_pb2_grpc import ReplicationStub

REGIONS = ("eu", "us")
SHARED = PlacementRules([PlacementRule(b"eu/", ("eu", "us"))], REGIONS)
EU_ONLY = PlacementRules([PlacementRule(b"eu/", ("eu",))], REGIONS)
SECRET = b"residency-secret-4f1c"


def open_engine(path: Path, rules: PlacementRules) -> Engine:
    settings = EngineSettings(
        placement_of=rules.placement_of, placement_fingerprint=rules.fingerprint()
    )
    return Engine(path, "iad-1", settings)


def audit(engine: Engine, rules: PlacementRules) -> AuditReport:
    return audit_column_families(
        AuditReport("iad-1", "us"),
        *engine.column_families(),
        lambda key: rules.allows(key, "us"),
        feed=engine.feed.column_family,
    )


def files_containing(directory: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_in_ranges_sorted_disjoint_and_unbounded() -> None:
    ranges = [(b"b", b"c"), (b"e", b"f"), (b"\xff", b"")]
    assert [in_ranges(k, ranges) for k in (b"a", b"b", b"bz", b"c", b"e", b"f")] == [
        False, True, True, False, True, False,
    ]  # fmt: skip
    assert in_ranges(b"\xff\xff", ranges) and not in_ranges(b"x", [])


def test_rule_change_purge_removes_data_log_digests_and_every_byte(tmp_path: Path) -> None:
    with open_engine(tmp_path, SHARED) as engine:
        for i in range(50):
            engine.put(b"eu/%02d" % i, SECRET + b"%02d" % i)
            engine.put(b"g/%02d" % i, b"public")
        engine.delete(b"eu/07")
    with open_engine(tmp_path, EU_ONLY) as engine:  # the rule changed: us may not hold eu/
        refused = EU_ONLY.refused_ranges("us")
        violations = {"data": 50, "log": 51, "digest": 50, "feed": 51}
        assert audit(engine, EU_ONLY).violations == violations
        assert engine.purge.pending(refused)
        records, resume = engine.purge.records_in(refused, limit=20)
        assert len(records) == 20 and resume == b"eu/20"
        records, resume = engine.purge.records_in(refused, limit=1000)
        assert len(records) == 50 and resume is None
        log_seqs = engine.purge.log_entries_in(refused)
        assert sum(map(len, log_seqs.values())) == 51
        assert engine.purge.remove(records, log_seqs) == 50
        assert engine.purge.remove_orphan_log_entries(log_seqs) == 0
        assert engine.purge.drop_feed_entries(refused) == 51
        engine.purge.compact()
        assert audit(engine, EU_ONLY).total_violations == 0
        assert not engine.purge.pending(refused)
        assert files_containing(tmp_path, SECRET) == []
        # What the node may hold is untouched, and its digests still match its data.
        assert engine.scan(b"g/", b"g0", limit=100).items[49].value == b"public"
        global_digests = engine.digests.segment_digests(b"")
        engine.digests.rebuild()
        assert engine.digests.segment_digests(b"") == global_digests
        assert not any(engine.digests.segment_digests(b"eu/"))


def test_purge_keeps_a_version_newer_than_the_confirmed_one(tmp_path: Path) -> None:
    with open_engine(tmp_path, SHARED) as engine:
        engine.put(b"eu/a", b"old")
    with open_engine(tmp_path, EU_ONLY) as engine:
        refused = EU_ONLY.refused_ranges("us")
        confirmed, _ = engine.purge.records_in(refused)
        newer = native.encode_record(False, engine.clock.now() + 1, 0, b"fra-1", b"new")
        engine.apply(b"eu/a", newer)  # arrived after the owner confirmed the old one
        assert engine.purge.remove(confirmed, engine.purge.log_entries_in(refused)) == 0
        assert engine.get_record(b"eu/a") == newer


def test_orphan_log_entries_of_keys_already_gone_are_removed(tmp_path: Path) -> None:
    with open_engine(tmp_path, SHARED) as engine:
        engine.put(b"eu/a", SECRET)
    with open_engine(tmp_path, EU_ONLY) as engine:
        refused = EU_ONLY.refused_ranges("us")
        records, _ = engine.purge.records_in(refused)
        assert engine.purge.remove(records, {}) == 1  # data and digests only
        log_seqs = engine.purge.log_entries_in(refused)
        assert engine.purge.remove_orphan_log_entries(log_seqs) == 1
        assert engine.read_log(0) == [] and engine.purge.pending(refused)  # the feed's copy
        assert engine.purge.drop_feed_entries(refused) == 1
        assert not engine.purge.pending(refused)


def test_held_keys_equal_or_newer_versions_only(tmp_path: Path) -> None:
    with open_engine(tmp_path, EU_ONLY) as engine:
        engine.put(b"eu/same", b"v")
        engine.put(b"eu/newer", b"v")
        same = engine.get_record(b"eu/same")
        assert same is not None
        old = native.encode_record(False, 1 << 20, 0, b"iad-1", b"old")
        ahead = native.encode_record(False, engine.clock.now() + 1, 0, b"iad-1", b"x")
        dead = native.encode_record(True, 1 << 20, 0, b"iad-1", b"")
        records = [
            (b"eu/same", same),
            (b"eu/newer", old),
            (b"eu/missing", old),
            (b"eu/behind", ahead),
            (b"eu/dead", dead),
            (b"us-only", old),
        ]
        engine.apply(b"eu/behind", old)
        may_hold = lambda key: key.startswith(b"eu/")  # noqa: E731
        assert held_keys(engine, records, may_hold) == [b"eu/same", b"eu/newer"]
        engine.collection.horizon_ms = 1 << 40  # the dead record is past the horizon
        assert held_keys(engine, records, may_hold) == [b"eu/same", b"eu/newer", b"eu/dead"]


def two_node_config(tmp_path: Path) -> ClusterConfig:
    doc = {
        "cluster": "unit",
        "regions": [{"name": "eu", "location": [50.1, 8.7]}, {"name": "us", "location": [39, -77]}],
        "nodes": [
            {"id": "iad-1", "region": "us", "listen": "127.0.0.1:7101", "data_dir": "d/iad-1"},
            {"id": "fra-1", "region": "eu", "listen": "127.0.0.1:7102", "data_dir": "d/fra-1"},
        ],
        "placement": [{"prefix": "eu/", "regions": ["eu"]}],
        "security": {"auth": {"mode": "disabled"}},
    }
    return parse_config(doc, tmp_path)


async def test_handoff_with_the_owner_down_keeps_keys_unless_the_operator_says(
    tmp_path: Path,
) -> None:
    config = two_node_config(tmp_path)
    rules = PlacementRules.from_config(config)
    assert rules.fingerprint() == EU_ONLY.fingerprint()
    with open_engine(tmp_path / "db", SHARED) as engine:
        engine.put(b"eu/a", SECRET)
    with open_engine(tmp_path / "db", EU_ONLY) as engine:
        router = Router(config, config.node("iad-1"), rules, membership=None)

        channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")  # fra-1 is down
        try:
            handoff = Handoff(engine, router, lambda peer: ReplicationStub(channel))
            assert not await handoff.handoff_once()  # no owner confirmed: kept
            assert handoff.kept == 1 and engine.get_record(b"eu/a") is not None
        finally:
            await channel.close()

        def no_stub(peer: str) -> ReplicationStub:
            raise AssertionError(f"{peer} was asked to confirm")

        handoff = Handoff(engine, router, no_stub, confirm=False)  # --purge-disallowed
        assert await handoff.handoff_once()
        assert handoff.removed_total == 1 and handoff.kept == 0
        assert engine.get_record(b"eu/a") is None and engine.read_log(0) == []
    assert files_containing(tmp_path / "db", SECRET) == []
