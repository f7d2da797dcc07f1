"""Backups: consistent RocksDB checkpoints of a live node, and restoring from one.

A checkpoint is a point-in-time copy of every column family (hard links where
the filesystem allows, so it is cheap), taken without stopping writes. A node
restored from one starts with the data as of the checkpoint; log shipping and
anti-entropy then bring it up to date with the cluster — including to a node
id other than the one backed up (replacing a dead PoP).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rocksdict import Checkpoint, Options, Rdict, WriteBatch

from edgekv.errors import FailedPrecondition, InvalidArgument, StorageError
from edgekv.storage.engine import DIGEST_CF, LOG_CF, META_CF, Engine

_META_NODE_ID = b"node_id"
_META_CURSOR = b"cursor/"


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
    try:
        Checkpoint(db).create_checkpoint(str(path))
    except Exception as exc:
        raise StorageError(f"checkpoint to {path} failed: {exc}") from exc
    return path


def restore(
    checkpoint: str | os.PathLike[str], data_dir: str | os.PathLike[str], node_id: str
) -> None:
    """Make ``data_dir`` a copy of ``checkpoint``, owned by ``node_id``.

    ``data_dir`` must not exist or be empty (a restore never merges into live
    data). Replication cursors are dropped, so the restored node re-ships its
    log from the start; peers' apply is idempotent.
    """
    src, dst = Path(checkpoint), Path(data_dir)
    if not (src / "CURRENT").exists():
        raise InvalidArgument(f"{src} is not a RocksDB checkpoint (no CURRENT file)")
    if dst.exists() and any(dst.iterdir()):
        raise FailedPrecondition(
            f"data directory {dst} is not empty; move it away before restoring into it"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.rmdir()
    shutil.copytree(src, dst)
    cfs = {name: Options(raw_mode=True) for name in (LOG_CF, META_CF, DIGEST_CF)}
    db = Rdict(str(dst), Options(raw_mode=True), column_families=cfs)
    meta = db.get_column_family(META_CF)
    try:
        handle = db.get_column_family_handle(META_CF)
        wb = WriteBatch(raw_mode=True)
        wb.put(_META_NODE_ID, node_id.encode("ascii"), handle)
        it = meta.iter()
        it.seek(_META_CURSOR)
        while it.valid() and it.key().startswith(_META_CURSOR):
            wb.delete(it.key(), handle)
            it.next()
        db.write(wb)
        del handle
    finally:
        meta.close()
        db.close()
