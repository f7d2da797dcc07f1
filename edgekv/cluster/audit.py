"""Residency audit: prove that a node stores nothing its placement does not allow.

Checks every user key in every column family that can hold one: the data,
the replication log and the anti-entropy index. Works on a stopped node's
directory (opened read-only) or on a live node's engine (Cluster.Audit).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict

from edgekv.errors import StorageError
from edgekv.storage.digest import key_of_index_entry
from edgekv.storage.replog import decode_entry

MAX_SAMPLES = 100


@dataclass
class AuditReport:
    """What an audit found. ``violations`` counts keys per column family.

    ``checked`` counts every entry that holds a user key, in all column
    families: data records (live keys, tombstones and expired records not yet
    collected), log entries and digest index entries; ``checked_by`` splits it
    per column family ("data", "log", "digest").
    """

    node_id: str
    region: str
    checked: int = 0
    violations: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[str, bytes]] = field(default_factory=list)  # (column family, key)
    checked_by: dict[str, int] = field(default_factory=dict)  # column family -> entries

    @property
    def total_violations(self) -> int:
        return sum(self.violations.values())

    def _flag(self, column_family: str, key: bytes) -> None:
        self.violations[column_family] = self.violations.get(column_family, 0) + 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append((column_family, key))


def _iterate(cf: Rdict) -> Iterator[tuple[bytes, bytes]]:
    it = cf.iter()
    it.seek_to_first()
    while it.valid():
        yield it.key(), it.value()
        it.next()


def audit_column_families(
    report: AuditReport, data: Rdict, log: Rdict, index: Rdict, allows: Callable[[bytes], bool]
) -> AuditReport:
    """Flag every user key in the three column families that ``allows`` refuses."""
    sources: list[tuple[str, Rdict, Callable[[bytes, bytes], bytes]]] = [
        ("data", data, lambda k, v: k),
        ("log", log, lambda k, v: decode_entry(v)[0]),
        ("digest", index, lambda k, v: key_of_index_entry(k)),
    ]
    for name, cf, user_key in sources:
        before = report.checked
        for key, value in _iterate(cf):
            report.checked += 1
            user = user_key(key, value)
            if not allows(user):
                report._flag(name, user)
        report.checked_by[name] = report.checked_by.get(name, 0) + report.checked - before
    return report


def audit_directory(
    data_dir: str | os.PathLike[str], node_id: str, region: str, allows: Callable[[bytes], bool]
) -> AuditReport:
    """Audit a stopped node's RocksDB directory, opened read-only."""
    path = Path(data_dir)
    if not (path / "CURRENT").exists():
        raise StorageError(f"{path} is not a RocksDB directory (no CURRENT file)")
    opts = Options(raw_mode=True)
    cfs: dict[str, Any] = {name: Options(raw_mode=True) for name in ("log", "meta", "digest")}
    try:
        db = Rdict(str(path), opts, column_families=cfs, access_type=AccessType.read_only())
    except Exception as exc:
        raise StorageError(f"cannot open {path} read-only: {exc}") from exc
    log = db.get_column_family("log")
    index = db.get_column_family("digest")
    try:
        return audit_column_families(AuditReport(node_id, region), db, log, index, allows)
    finally:
        log.close()
        index.close()
        db.close()
