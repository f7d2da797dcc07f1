"""Erasing keys a node may no longer hold (storage/purge.py) and the hand-off answer
(replication/handoff.held_keys), on a real RocksDB."""

from __future__ import annotations

from pathlib import Path

from edgekv import native
from edgekv.cluster.audit import AuditReport, audit_column_families
from edgekv.cluster.placement import PlacementRule, PlacementRules
from edgekv.replication.handoff import held_keys
from edgekv.storage.engine import Engine, EngineSettings
from edgekv.storage.purge import in_ranges

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
        assert audit(engine, EU_ONLY).violations == {"data": 50, "log": 51, "digest": 50}
        assert engine.purge.pending(refused)
        records, resume = engine.purge.records_in(refused, limit=20)
        assert len(records) == 20 and resume == b"eu/20"
        records, resume = engine.purge.records_in(refused, limit=1000)
        assert len(records) == 50 and resume is None
        log_seqs = engine.purge.log_entries_in(refused)
        assert sum(map(len, log_seqs.values())) == 51
        assert engine.purge.remove(records, log_seqs) == 50
        assert engine.purge.remove_orphan_log_entries(log_seqs) == 0
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
        assert engine.read_log(0) == [] and not engine.purge.pending(refused)


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
