"""Backups: consistent RocksDB checkpoints of a live node, and restoring from one.

A checkpoint is a point-in-time copy of every column family (hard links where
the filesystem allows, so it is cheap), taken without stopping writes. A node
restored from one starts with the data as of the checkpoint; log shipping and
anti-entropy then bring it up to date with the cluster — including to a node
id other than the one backed up (replacing a dead PoP).

A backup is as old as the data it is complete up to, not as the moment it was
taken: a node holds every write of the cluster made before the start of its
last complete anti-entropy sync with every peer (``complete_as_of_ms`` in the
marker), and may lack deletes made after that, however late it was backed up.
A backup whose completeness is older than the tombstone grace period is
refused: the cluster may have collected tombstones of deletes it lacks, and
the restored node would hand the deleted values back (storage/tombstones.py).
Start such a node empty instead; anti-entropy fills it.

A backup carries where it was taken (node, region, placement fingerprint); a
restore into a node of another region, or under other placement rules, is
refused (``check_placement``): it could put keys on a node whose region may
not hold them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rocksdict import Checkpoint, Options, Rdict, WriteBatch

from edgekv.errors import FailedPrecondition, InvalidArgument, StorageError
from edgekv.storage.clock import wall_ms
from edgekv.storage.database import COLUMN_FAMILIES, META_CF, META_NODE_ID
from edgekv.storage.engine import Engine
from edgekv.storage.feed import META_FEED_EPOCH
from edgekv.storage.replog import META_CURSOR_PREFIX

MARKER = "EDGEKV_BACKUP.json"  # written into each checkpoint: who and when


def create_checkpoint(
    engine: Engine,
    dest: str | os.PathLike[str],
    *,
    region: str | None = None,
    complete_as_of_ms: int | None = None,
) -> Path:
    """Write a consistent checkpoint of ``engine`` to ``dest`` (must not exist).

    The marker records the node, its ``region`` and placement fingerprint, when
    it was taken, and ``complete_as_of_ms``: the start of the node's oldest last
    complete anti-entropy sync over every peer (0: some peer never synced since
    the node started; None: no peers, the checkpoint time itself).
    """
    path = Path(dest)
    if not path.is_absolute():
        raise InvalidArgument(f"backup destination {path} must be an absolute path")
    if path.exists():
        raise FailedPrecondition(f"backup destination {path} already exists; pick a new path")
    path.parent.mkdir(parents=True, exist_ok=True)
    engine.flush()  # the WAL is in the checkpoint either way; this keeps it short
    db, _, _ = engine.column_families()
    taken_at_ms = wall_ms()
    try:
        Checkpoint(db).create_checkpoint(str(path))
    except Exception as exc:
        raise StorageError(f"checkpoint to {path} failed: {exc}") from exc
    marker: dict[str, Any] = {
        "node_id": engine.node_id,
        "taken_at_ms": taken_at_ms,
        "placement_fingerprint": engine.settings.placement_fingerprint.hex(),
    }
    if region is not None:
        marker["region"] = region
    if complete_as_of_ms is not None:
        marker["complete_as_of_ms"] = min(complete_as_of_ms, taken_at_ms)
    (path / MARKER).write_text(json.dumps(marker), encoding="utf-8")
    return path


def read_marker(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's marker ({} for a checkpoint without one, e.g. a copied directory)."""
    src = Path(checkpoint)
    try:
        marker = json.loads((src / MARKER).read_text(encoding="utf-8"))
        int(marker["taken_at_ms"])
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"{src / MARKER} is damaged: {exc}") from None
    return dict(marker)


def backup_taken_at_ms(checkpoint: str | os.PathLike[str]) -> int:
    """When a checkpoint was taken: its marker, else the CURRENT file's mtime."""
    marker = read_marker(checkpoint)
    if not marker:
        return int((Path(checkpoint) / "CURRENT").stat().st_mtime * 1000)
    return int(marker["taken_at_ms"])


def backup_complete_as_of_ms(checkpoint: str | os.PathLike[str]) -> int:
    """Up to when a checkpoint's data is complete: what the age check measures.

    Not when it was taken: a node misses the writes (deletes included) its
    peers made after the start of its last complete anti-entropy sync with
    each of them, until log shipping or the next sync delivers them; a backup
    taken a minute ago on a node cut off for a week is a week old. So this is
    the marker's ``complete_as_of_ms`` (the oldest last complete sync with any
    peer, taken when the backup was; 0 when a peer had not synced since the
    node started, which no grace period accepts), or the checkpoint time for a
    node without peers or a checkpoint from before this was recorded.
    """
    marker = read_marker(checkpoint)
    taken = backup_taken_at_ms(checkpoint)
    complete = marker.get("complete_as_of_ms")
    return taken if complete is None else min(int(complete), taken)


def check_placement(
    checkpoint: str | os.PathLike[str],
    region: str,
    fingerprint: bytes,
    *,
    violations: Callable[[], int],
    allow_other: bool,
) -> None:
    """Refuse a checkpoint taken in another region or under other placement rules.

    ``violations()`` counts the checkpoint's entries a node of ``region`` may
    not hold (an audit of the checkpoint). A checkpoint of the same region and
    rules passes; one from another region or rules passes only with
    ``allow_other`` (the operator's ``--force-placement``) and no violation; one
    that does not say where it was taken passes only with no violation.
    """
    src = Path(checkpoint)
    marker = read_marker(src)
    theirs_region = marker.get("region")
    theirs_rules = marker.get("placement_fingerprint")
    same = theirs_region == region and theirs_rules == fingerprint.hex()
    if same:
        return
    known = theirs_region is not None
    if known and not allow_other:
        raise FailedPrecondition(
            f"backup {src} was taken on node {marker.get('node_id')!r} in region "
            f"{theirs_region!r} under placement rules {str(theirs_rules)[:8]}; this node is in "
            f"region {region!r} under rules {fingerprint.hex()[:8]}, and the backup may hold "
            "keys this region may not hold (data residency). Restore a backup of a node of "
            "this region under these rules, or pass --force-placement to restore it if it "
            "holds no key this node may not hold (it is audited first)"
        )
    found = violations()
    if found:
        raise FailedPrecondition(
            f"backup {src} holds {found} entries (data, log or digest) that a node in region "
            f"{region!r} may not hold under its placement rules; it cannot be restored here"
        )


def restore(
    checkpoint: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    node_id: str,
    *,
    max_age_s: float | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Make ``data_dir`` a copy of ``checkpoint``, owned by ``node_id``.

    ``data_dir`` must not exist or be empty (a restore never merges into live
    data). Replication cursors are dropped, so the restored node re-ships its
    log from the start; peers' apply is idempotent. A checkpoint complete only
    up to longer ago than ``max_age_s`` (the tombstone grace period; None: no
    check; see ``backup_complete_as_of_ms``) is refused. ``check`` (e.g.
    ``check_placement``) runs once the cheap checks passed, before any copy.
    """
    src, dst = Path(checkpoint), Path(data_dir)
    if not (src / "CURRENT").exists():
        raise InvalidArgument(f"{src} is not a RocksDB checkpoint (no CURRENT file)")
    if max_age_s is not None:
        complete_ms = backup_complete_as_of_ms(src)
        age_s = (wall_ms() - complete_ms) / 1000.0
        if complete_ms == 0:
            raise FailedPrecondition(
                f"backup {src} was taken before its node had completed an anti-entropy sync "
                "with every peer since it started, so it may lack deletes of any age; restore "
                "a later backup, start the node with an empty data_dir (anti-entropy fills "
                "it), or pass --force if no key was deleted since the backup"
            )
        if age_s > max_age_s:
            raise FailedPrecondition(
                f"backup {src} is complete only up to {age_s / 3600:.1f} h ago (its node's "
                "oldest last complete anti-entropy sync with a peer), older than "
                f"replication.tombstone_grace_s ({max_age_s / 3600:.1f} h): the cluster may "
                "have collected tombstones of later deletes, and their values would come back. "
                "Start the node with an empty data_dir instead (anti-entropy fills it), or pass "
                "--force if no key was deleted since the backup"
            )
    if dst.exists() and any(dst.iterdir()):
        raise FailedPrecondition(
            f"data directory {dst} is not empty; move it away before restoring into it"
        )
    if check is not None:
        check()
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.rmdir()
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(MARKER))
    cfs = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}
    opts = Options(raw_mode=True)
    opts.create_missing_column_families(True)  # a backup taken before the change feed existed
    db = Rdict(str(dst), opts, column_families=cfs)
    meta = db.get_column_family(META_CF)
    try:
        handle = db.get_column_family_handle(META_CF)
        wb = WriteBatch(raw_mode=True)
        wb.put(META_NODE_ID, node_id.encode("ascii"), handle)
        # A new feed epoch: the copy's feed seqs will diverge from the backed-up node's,
        # so a Watch token from either is resumed by version vector, not by seq.
        wb.delete(META_FEED_EPOCH, handle)
        it = meta.iter()
        it.seek(META_CURSOR_PREFIX)
        while it.valid() and it.key().startswith(META_CURSOR_PREFIX):
            wb.delete(it.key(), handle)
            it.next()
        db.write(wb)
        del handle
    finally:
        meta.close()
        db.close()
