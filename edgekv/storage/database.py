"""A node's RocksDB directory: opening it with its column families, and whose it is.

``default`` holds the data; ``log`` (replog.py), ``meta``, ``digest``
(digest.py) and ``feed`` (feed.py) the rest. ``meta`` also records which node owns the directory and
the engine format it was written in, so a node never opens another's data.
"""

from __future__ import annotations

from pathlib import Path

from rocksdict import AccessType, BlockBasedOptions, Cache, ColumnFamily, Options, Rdict, WriteBatch

from edgekv.errors import FailedPrecondition, StorageError
from edgekv.storage.bgpriority import lower_background_priority
from edgekv.storage.digest import DIGEST_CF
from edgekv.storage.feed import FEED_CF
from edgekv.storage.replog import LOG_CF

META_CF = "meta"
COLUMN_FAMILIES = (LOG_CF, META_CF, DIGEST_CF, FEED_CF)  # besides the default (data)
ENGINE_FORMAT = b"1"
META_NODE_ID = b"node_id"
_META_FORMAT = b"engine_format"


def _options(block_cache_mb: int) -> Options:
    """Raw-mode options with the node's table format (bloom filters, block cache)."""
    opts = Options(raw_mode=True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(Cache(block_cache_mb * 1024 * 1024))
    table.set_cache_index_and_filter_blocks(True)
    opts.set_block_based_table_factory(table)
    return opts


def open_rocksdb(path: Path, block_cache_mb: int) -> Rdict:
    """Open (or create) the database at ``path`` with every column family, raw mode."""
    opts = _options(block_cache_mb)
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


def open_secondary(path: Path, secondary_path: Path, block_cache_mb: int) -> Rdict:
    """Open a node's database read-only as a RocksDB secondary (the embedded reader).

    Only the data and meta column families: the log and digests are the node's
    business, and a secondary replays the WAL only for the families it opened.
    ``try_catch_up_with_primary`` brings it up to date. RocksDB writes nothing
    under ``path`` (the secondary's LOG goes to ``secondary_path``), but rocksdict
    rewrites ``rocksdict-config.json`` there on every open (the same content the
    node wrote: raw mode, no prefix extractors), so ``path`` must be writable by
    the reader: a read-only mount fails with a StorageError that says so.
    """
    opts = _options(block_cache_mb)
    # Keep every table open: the node may delete compacted files at any moment.
    opts.set_max_open_files(-1)
    # With -1, every catch-up loads table handlers on max_file_opening_threads new
    # threads (16 by default, per family): 1.3 ms per catch-up instead of ~25 µs.
    opts.set_max_file_opening_threads(1)
    opts.set_max_log_file_size(1 << 20)
    opts.set_keep_log_file_num(2)
    try:
        return Rdict(
            str(path),
            opts,
            column_families={META_CF: Options(raw_mode=True)},
            access_type=AccessType.secondary(str(secondary_path)),
        )
    except Exception as exc:
        hint = ""
        if "Read-only file system" in str(exc) or "Permission denied" in str(exc):
            hint = (
                "; rocksdict rewrites rocksdict-config.json in the directory on open, so "
                "mount it writable for this user (nothing else in it is written)"
            )
        raise StorageError(f"cannot open RocksDB at {path} as a secondary: {exc}{hint}") from exc


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
