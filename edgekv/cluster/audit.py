"""Residency audit: prove that a node stores nothing its placement does not allow.

Checks every user key in every column family that can hold one: the data,
the replication log, the anti-entropy index, and the entries of the meta
column family that name a user key (records set aside for clock skew, the
arrival times of dead records). Works on a stopped node's
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
from edgekv.storage.collection import ARRIVED_PREFIX
from edgekv.storage.digest import key_of_index_entry
from edgekv.storage.feed import FEED_CF
from edgekv.storage.feed import decode_entry as decode_feed_entry
from edgekv.storage.quarantine import QUARANTINE_PREFIX
from edgekv.storage.replog import decode_entry

# Meta-column-family entries whose key is a prefix followed by a user key.
META_USER_KEY_PREFIXES = (QUARANTINE_PREFIX, ARRIVED_PREFIX)

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


def _under(cf: Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    it = cf.iter()
    it.seek(prefix)
    while it.valid() and it.key().startswith(prefix):
        yield it.key(), it.value()
        it.next()


def _meta_user_entries(meta: Rdict) -> Iterator[tuple[bytes, bytes]]:
    for prefix in META_USER_KEY_PREFIXES:
        for key, value in _under(meta, prefix):
            yield key[len(prefix) :], value


def audit_column_families(
    report: AuditReport,
    data: Rdict,
    log: Rdict,
    index: Rdict,
    allows: Callable[[bytes], bool],
    meta: Rdict | None = None,
    feed: Rdict | None = None,
) -> AuditReport:
    """Flag every user key in the column families that ``allows`` refuses.

    ``meta`` (optional, for callers that have it) adds the meta entries that
    name user keys (``META_USER_KEY_PREFIXES``), reported as "meta"; ``feed``
    the change feed (storage/feed.py), reported as "feed".
    """
    sources: list[tuple[str, Rdict, Callable[[bytes, bytes], bytes]]] = [
        ("data", data, lambda k, v: k),
        ("log", log, lambda k, v: decode_entry(v)[0]),
        ("digest", index, lambda k, v: key_of_index_entry(k)),
    ]
    walks: list[tuple[str, Iterator[tuple[bytes, bytes]], Callable[[bytes, bytes], bytes]]] = [
        (name, _iterate(cf), user_key) for name, cf, user_key in sources
    ]
    if meta is not None:
        walks.append(("meta", _meta_user_entries(meta), lambda k, v: k))
    if feed is not None:
        walks.append(("feed", _iterate(feed), lambda k, v: decode_feed_entry(0, v).key))
    for name, entries, user_key in walks:
        before = report.checked
        for key, value in entries:
            report.checked += 1
            user = user_key(key, value)
            if not allows(user):
                report._flag(name, user)
        if name != "meta" or report.checked > before:  # "meta" only when it names keys
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
    try:  # a directory last written before the change feed existed has no feed family
        has_feed = FEED_CF in Rdict.list_cf(str(path))
    except Exception as exc:
        raise StorageError(f"cannot read the column families of {path}: {exc}") from exc
    names = ("log", "meta", "digest", FEED_CF) if has_feed else ("log", "meta", "digest")
    cfs: dict[str, Any] = {name: Options(raw_mode=True) for name in names}
    try:
        db = Rdict(str(path), opts, column_families=cfs, access_type=AccessType.read_only())
    except Exception as exc:
        raise StorageError(f"cannot open {path} read-only: {exc}") from exc
    log = db.get_column_family("log")
    index = db.get_column_family("digest")
    meta = db.get_column_family("meta")
    feed = db.get_column_family(FEED_CF) if has_feed else None
    try:
        report = AuditReport(node_id, region)
        return audit_column_families(report, db, log, index, allows, meta, feed)
    finally:
        if feed is not None:
            feed.close()
        log.close()
        index.close()
        meta.close()
        db.close()
