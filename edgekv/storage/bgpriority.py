"""RocksDB's flushes and compactions yield the CPU to the node's serving threads.

RocksDB runs them on threads of its own, which never take the GIL but share
the node's cores with the event loop: a compaction is a burst of hundreds of
milliseconds of CPU, and a read that arrives during it waits for the
scheduler's slice (1.5-3 ms) before the loop runs again. While anti-entropy
writes 16 MiB/s into a node, that was most of the read p99 left at a node
pinned to one CPU (bench/e2e/repair.py). So, as RocksDB's own
``Env::LowerThreadPoolCPUPriority`` does (rocksdict does not expose it), the
threads of its pools get a lower CPU priority: compactions (``rocksdb:low``,
``rocksdb:bottom``) nice 19, flushes (``rocksdb:high``) nice 10. They still
use every idle cycle; on a saturated core they fall behind, and RocksDB
slows writes down (write stalls) rather than reads.

Linux only (a thread's nice value is its own there); elsewhere nothing changes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# nice values by RocksDB thread name (its pools: LOW compactions, HIGH flushes,
# BOTTOM bottommost compactions).
NICE_BY_THREAD = {"rocksdb:low": 19, "rocksdb:bottom": 19, "rocksdb:high": 10}


def lower_background_priority() -> int:
    """Lower the CPU priority of this process's RocksDB threads; returns how many changed.

    Idempotent (a thread already at or below its nice value is left alone);
    threads RocksDB starts later inherit the priority of the thread that
    starts them.
    """
    tasks = Path(f"/proc/{os.getpid()}/task")
    if not tasks.is_dir() or not hasattr(os, "setpriority"):
        return 0
    changed = 0
    for task in tasks.iterdir():
        with contextlib.suppress(OSError, ValueError):  # the thread ended meanwhile
            nice = NICE_BY_THREAD.get((task / "comm").read_text().strip())
            tid = int(task.name)
            if nice is not None and os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
    return changed
