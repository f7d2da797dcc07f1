"""RocksDB's background threads run at a lower CPU priority than the node's own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from edgekv.storage.bgpriority import NICE_BY_THREAD, lower_background_priority
from edgekv.storage.engine import Engine


def _rocksdb_threads() -> dict[int, str]:
    tasks = Path(f"/proc/{os.getpid()}/task")
    names = {int(t.name): (t / "comm").read_text().strip() for t in tasks.iterdir()}
    return {tid: name for tid, name in names.items() if name in NICE_BY_THREAD}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_opening_an_engine_lowers_rocksdb_flush_and_compaction_priority(tmp_path: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    engine = Engine(tmp_path / "db", "node-a")
    try:
        threads = _rocksdb_threads()
        assert {"rocksdb:low", "rocksdb:high"} <= set(threads.values())
        for tid, name in threads.items():
            assert os.getpriority(os.PRIO_PROCESS, tid) >= NICE_BY_THREAD[name], name
        # The node's own threads keep their priority.
        assert os.getpriority(os.PRIO_PROCESS, 0) == own
        assert lower_background_priority() == 0  # idempotent
    finally:
        engine.close()
