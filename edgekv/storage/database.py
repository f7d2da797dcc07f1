"""A node's RocksDB directory: opening it with its column families, and whose it is.

``default`` holds the data; ``log`` (replog.py), ``meta`` and ``digest``
(digest.py) the rest. ``meta`` also records which node owns the directory and
the engine format it was written in, so a node never opens another's data.
"""

from __future__ import annotations

from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, ColumnFamily, Options, Rdict, WriteBatch

from edgekv.errors import FailedPrecondition, StorageError
from edgekv.storage.bgpriority import lower_background_priority
from edgekv.storage.digest import DIGEST_CF
from edgekv.storage.replog import LOG_CF

META_CF = "meta"
COLUMN_FAMILIES = (LOG_CF, META_CF, DIGEST_CF)  # besides the default (data)
ENGINE_FORMAT = b"1"
META_NODE_ID = b"node_id"
_META_FORMAT = b"engine_format"


def open_rocksdb(path: Path, block_cache_mb: int) -> Rdict:
    """Open (or create) the database at ``path`` with every column family, raw mode."""
    opts = Options(raw_mode=True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(Cache(block_cache_mb * 1024 * 1024))
    table.set_cache_index_and_filter_blocks(True)
    opts.set_block_based_table_factory(table)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_max_background_jobs(2)
    try:
        db = Rdict(
            str(path),
            opts,
            column_families={name: Options(raw_mode=True) for name in COLUMN_FAMILIES},
        )
    except Exception as exc:  # rocksdict raises plain Exception for I/O and lock errors
        raise StorageError(f"cannot open RocksDB at {path}: {exc}") from exc
    lower_background_priority()  # flushes and compactions yield to serving (bgpriority.py)
    return db


def claim(meta: Rdict, meta_handle: ColumnFamily, path: Path, node_id: str) -> WriteBatch | None:
    """Check that the directory is ``node_id``'s and in this build's format.

    Returns the WriteBatch that claims a new directory (the caller writes it),
    None for one already claimed; raises FailedPrecondition for another node's
    directory or an unknown format.
    """
    owner = meta.get(META_NODE_ID)
    origin = node_id.encode("ascii")
    if owner is not None and owner != origin:
        raise FailedPrecondition(
            f"data directory {path} belongs to node {owner.decode(errors='replace')!r}, "
            f"not {node_id!r}; point data_dir at the right node's directory"
        )
    fmt = meta.get(_META_FORMAT)
    if fmt not in (None, ENGINE_FORMAT):
        raise FailedPrecondition(
            f"data directory {path} has engine format {fmt!r}; this build reads {ENGINE_FORMAT!r}"
        )
    if owner is not None:
        return None
    wb = WriteBatch(raw_mode=True)
    wb.put(META_NODE_ID, origin, meta_handle)
    wb.put(_META_FORMAT, ENGINE_FORMAT, meta_handle)
    return wb
