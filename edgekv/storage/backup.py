"""Backups: consistent RocksDB checkpoints of a live node, and restoring from one.

A checkpoint is a point-in-time copy of every column family (hard links where
the filesystem allows, so it is cheap), taken without stopping writes. A node
restored from one starts with the data as of the checkpoint; log shipping and
anti-entropy then bring it up to date with the cluster — including to a node
id other than the one backed up (replacing a dead PoP).

A backup older than the tombstone grace period is refused: the cluster may
have collected tombstones of deletes made since, and the restored node would
hand the deleted values back (storage/tombstones.py). Start such a node empty
instead; anti-entropy fills it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rocksdict import Checkpoint, Options, Rdict, WriteBatch

from edgekv.errors import FailedPrecondition, InvalidArgument, StorageError
from edgekv.storage.clock import wall_ms
from edgekv.storage.database import COLUMN_FAMILIES, META_CF, META_NODE_ID
from edgekv.storage.engine import Engine
from edgekv.storage.replog import META_CURSOR_PREFIX

MARKER = "EDGEKV_BACKUP.json"  # written into each checkpoint: who and when


def create_checkpoint(engine: Engine, dest: str | os.PathLike[str]) -> Path:
    """Write a consistent checkpoint of ``engine`` to ``dest`` (must not exist)."""
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
    marker = {"node_id": engine.node_id, "taken_at_ms": taken_at_ms}
    (path / MARKER).write_text(json.dumps(marker), encoding="utf-8")
    return path


def backup_taken_at_ms(checkpoint: str | os.PathLike[str]) -> int:
    """When a checkpoint was taken: its marker, else the CURRENT file's mtime."""
    src = Path(checkpoint)
    try:
        return int(json.loads((src / MARKER).read_text(encoding="utf-8"))["taken_at_ms"])
    except FileNotFoundError:
        return int((src / "CURRENT").stat().st_mtime * 1000)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"{src / MARKER} is damaged: {exc}") from None


def restore(
    checkpoint: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    node_id: str,
    *,
    max_age_s: float | None = None,
) -> None:
    """Make ``data_dir`` a copy of ``checkpoint``, owned by ``node_id``.

    ``data_dir`` must not exist or be empty (a restore never merges into live
    data). Replication cursors are dropped, so the restored node re-ships its
    log from the start; peers' apply is idempotent. A checkpoint older than
    ``max_age_s`` (the tombstone grace period; None: no check) is refused.
    """
    src, dst = Path(checkpoint), Path(data_dir)
    if not (src / "CURRENT").exists():
        raise InvalidArgument(f"{src} is not a RocksDB checkpoint (no CURRENT file)")
    if max_age_s is not None:
        age_s = (wall_ms() - backup_taken_at_ms(src)) / 1000.0
        if age_s > max_age_s:
            raise FailedPrecondition(
                f"backup {src} is {age_s / 3600:.1f} h old, older than "
                f"replication.tombstone_grace_s ({max_age_s / 3600:.1f} h): the cluster may "
                "have collected tombstones of later deletes, and their values would come back. "
                "Start the node with an empty data_dir instead (anti-entropy fills it), or pass "
                "--force if no key was deleted since the backup"
            )
    if dst.exists() and any(dst.iterdir()):
        raise FailedPrecondition(
            f"data directory {dst} is not empty; move it away before restoring into it"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.rmdir()
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(MARKER))
    cfs = {name: Options(raw_mode=True) for name in COLUMN_FAMILIES}
    db = Rdict(str(dst), Options(raw_mode=True), column_families=cfs)
    meta = db.get_column_family(META_CF)
    try:
        handle = db.get_column_family_handle(META_CF)
        wb = WriteBatch(raw_mode=True)
        wb.put(META_NODE_ID, node_id.encode("ascii"), handle)
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
