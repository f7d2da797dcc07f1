"""Trimming the replication log: what may be forgotten, and when.

The log keeps every entry some peer has not acknowledged, within two retention
bounds: at most ``retention_entries`` entries, none older than
``retention_s``. A peer that falls behind a bound is past what the log can
replay and is repaired by anti-entropy instead (its sender notices the gap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from edgekv import native
from edgekv.storage.clock import physical_ms, wall_ms
from edgekv.storage.engine import Engine

# Probe stride of the age search: coarse, so a trim reads a few entries, not the log.
_AGE_PROBE_STEP = 4096


class LogTrimmer:
    """Trims one engine's replication log below what every peer acknowledged.

    ``acked_seqs`` returns each peer's acknowledged seq (the senders' cursors);
    with no peers nothing holds the log back but the retention bounds. Runs on
    the node's event loop, alone: one trimmer per engine.
    """

    def __init__(
        self,
        engine: Engine,
        acked_seqs: Callable[[], Iterable[int]],
        *,
        interval_s: float,
        retention_entries: int,
        retention_s: float,
    ) -> None:
        self._engine = engine
        self._acked_seqs = acked_seqs
        self.interval_s = interval_s
        self.retention_entries = retention_entries
        self.retention_s = retention_s

    def floor(self) -> int:
        """The highest seq that may go: acknowledged by all, or past a retention bound."""
        engine = self._engine
        acked = min(self._acked_seqs(), default=engine.last_seq)
        floor = max(acked, engine.last_seq - self.retention_entries)
        return max(floor, self.seq_older_than(self.retention_s))

    def trim_once(self) -> None:
        """Drop the log entries up to and including :meth:`floor`, if any are left."""
        floor = self.floor()
        if floor >= self._engine.first_log_seq():
            self._engine.trim_log(floor + 1)

    async def run_log_trimmer(self) -> None:
        """Trim every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            self.trim_once()

    def seq_older_than(self, age_s: float) -> int:
        """The highest seq whose entry is older than ``age_s`` (0 if none); coarse."""
        engine = self._engine
        cutoff_ms = wall_ms() - int(age_s * 1000)
        found = 0
        seq = engine.first_log_seq()
        while seq <= engine.last_seq:
            entries = engine.read_log(seq, 1)
            if not entries or physical_ms(native.record_version(entries[0].record)[0]) > cutoff_ms:
                break
            found = entries[0].seq
            seq = found + _AGE_PROBE_STEP
        return found
