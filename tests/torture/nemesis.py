"""The nemesis: breaks a LocalCluster of node processes on purpose, and heals it.

Each fault has a kind, is injected on nodes chosen by the run's seeded random
generator, held for a while, then healed, and recorded in the History:

- ``kill``: SIGKILL (a crash: no drain, no flush), restarted at the heal.
- ``pause``: SIGSTOP (a frozen process: open connections stall, nothing
  answers), SIGCONT at the heal.
- ``partition``: the nodes split in two groups; every peer link and forwarded
  call between them is cut on the wire (the fault proxies), restored at the heal.
- ``skew``: the node restarts with its wall clock ``skew_ms`` ahead or behind
  (the test-only EDGEKV_TEST_CLOCK_OFFSET_MS, storage/clock.py): ahead, its
  peers fence it and quarantine its records; behind, it loses every conflict.
  The heal restarts it with a true clock.
- ``disk`` (as root, where tmpfs can be mounted): each node's data directory is
  a small tmpfs (``mount_quotas``); the fault fills the node's to the last byte,
  so its RocksDB writes fail with ENOSPC: the node refuses writes (DiskFull) and
  says NOT_SERVING. The heal only frees the space: the node must take writes
  again by itself, without a restart (storage/recovery.py reopens RocksDB in
  place); the probe after the heal measures how long that takes.

Blocking work (starting a process, waiting for its ready file) runs on a
worker thread, so the clients keep running on the event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgekv.local.cluster import LocalCluster
from edgekv.local.diskquota import QuotaUnavailable, fill, mount_tmpfs, unfill, unmount

from .history import Fault, History

FAULT_KINDS = ("kill", "pause", "partition", "skew")
ROOT_FAULT_KINDS = ("disk",)
QUOTA_MB = 96
CLOCK_OFFSET_ENV = "EDGEKV_TEST_CLOCK_OFFSET_MS"


@dataclass
class Nemesis:
    """Injects and heals faults on ``cluster``; ``clock()`` is the run's time in seconds.

    Keeps which nodes are down, paused or skewed, so ``heal_all`` can undo
    everything at the end, whatever was in progress. Used from one event loop.
    """

    cluster: LocalCluster
    history: History
    rng: random.Random
    clock: Callable[[], float]
    skew_ms: int = 1500
    start_timeout_s: float = 60.0
    down: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    skewed: set[str] = field(default_factory=set)
    filled: set[str] = field(default_factory=set)
    partitioned: bool = False
    _busy: set[str] = field(default_factory=set)  # nodes a fault is being injected on

    def active(self) -> bool:
        """Whether any fault is in effect now."""
        return bool(self.down or self.paused or self.skewed or self.filled or self.partitioned)

    async def inject(self, kind: str) -> Fault | None:
        """Break something of ``kind``; the fault is recorded (its heal_s still None).

        With faults already in effect (concurrent nemeses), a node fault picks a
        node no other fault holds, and only one partition is in effect at a time;
        None when nothing is left to break that way.
        """
        nodes = self.cluster.node_ids
        held = self.down | self.paused | self.skewed | self.filled | self._busy
        free = [n for n in nodes if n not in held]
        if (kind == "partition" and self.partitioned) or (kind != "partition" and not free):
            return None
        node = self.rng.choice(free or nodes)
        self._busy.add(node)
        try:
            return await self._inject(kind, node)
        finally:
            self._busy.discard(node)

    async def _inject(self, kind: str, node: str) -> Fault:
        nodes = self.cluster.node_ids
        detail = ""
        if kind == "kill":
            await asyncio.to_thread(self.cluster.kill, node)
            self.down.add(node)
            group: tuple[str, ...] = (node,)
        elif kind == "pause":
            os.kill(self.cluster.nodes[node].pid, signal.SIGSTOP)
            self.paused.add(node)
            group = (node,)
        elif kind == "partition":
            shuffled = self.rng.sample(nodes, len(nodes))
            cut = self.rng.randint(1, len(nodes) - 1)
            group = tuple(sorted(shuffled[:cut]))
            other = sorted(shuffled[cut:])
            await asyncio.to_thread(self.cluster.partition, list(group), other)
            self.partitioned = True
            detail = f"from {','.join(other)}"
        elif kind == "skew":
            offset = self.rng.choice((self.skew_ms, -self.skew_ms))
            await self._restart(node, offset)
            self.skewed.add(node)
            group = (node,)
            detail = f"clock {offset:+d} ms"
        elif kind == "disk":
            filled = await asyncio.to_thread(fill, self._data_dir(node))
            self.filled.add(node)
            group = (node,)
            detail = f"{filled // 2**20} MiB filler"
        else:
            known = ", ".join(FAULT_KINDS + ROOT_FAULT_KINDS)
            raise ValueError(f"unknown fault kind {kind!r}; known: {known}")
        fault = Fault(kind, group, self.clock(), detail=detail)
        self.history.faults.append(fault)
        return fault

    async def heal(self, fault: Fault) -> None:
        """Undo ``fault`` (restart, SIGCONT, restore links, true clock); sets its heal_s."""
        for node in fault.nodes:
            if fault.kind == "kill" and node in self.down:
                await self._start(node)
            elif fault.kind == "pause" and node in self.paused:
                self._resume(node)
            elif fault.kind == "skew" and node in self.skewed:
                await self._restart(node, 0)
                self.skewed.discard(node)
            elif fault.kind == "disk" and node in self.filled:
                await self._unfill(node)
        if fault.kind == "partition" and self.partitioned:
            await asyncio.to_thread(self.cluster.heal)
            self.partitioned = False
        fault.heal_s = self.clock()

    async def heal_all(self) -> None:
        """Undo every fault still in effect (the end of a run, or a failure)."""
        for node in sorted(self.paused):
            self._resume(node)
        if self.partitioned:
            await asyncio.to_thread(self.cluster.heal)
            self.partitioned = False
        for node in sorted(self.skewed):
            await self._restart(node, 0)
        self.skewed.clear()
        for node in sorted(self.filled):
            await self._unfill(node)
        for node in sorted(self.down):
            await self._start(node)
        now = self.clock()
        for fault in self.history.faults:
            if fault.heal_s is None:
                fault.heal_s = now

    def resume_all_now(self) -> None:
        """SIGCONT every paused node at once (before a cluster is closed: a stopped
        process would not answer SIGTERM)."""
        for node in sorted(self.paused):
            self._resume(node)

    def _data_dir(self, node: str) -> Path:
        return self.cluster.data_dirs()[node]

    async def _unfill(self, node: str) -> None:
        unfill(self._data_dir(node))  # the node reopens its RocksDB by itself, no restart
        self.filled.discard(node)

    def _resume(self, node: str) -> None:
        proc = self.cluster.nodes[node]
        if proc.alive():
            os.kill(proc.pid, signal.SIGCONT)
        self.paused.discard(node)

    async def _start(self, node: str, env: dict[str, str] | None = None) -> None:
        await asyncio.to_thread(self.cluster.start, [node], timeout_s=self.start_timeout_s, env=env)
        self.down.discard(node)

    async def _restart(self, node: str, offset_ms: int) -> None:
        if node in self.paused:
            self._resume(node)
        await asyncio.to_thread(self.cluster.kill, node)
        self.down.add(node)
        await self._start(node, {CLOCK_OFFSET_ENV: str(offset_ms) if offset_ms else ""})


def quotas_available() -> bool:
    """Whether small tmpfs quotas can be mounted here (root, and the sandbox allows it):
    tried once on a scratch directory."""
    global _quotas_available
    if _quotas_available is None:
        scratch = Path(tempfile.mkdtemp(prefix="edgekv-quota-probe-"))
        try:
            mount_tmpfs(scratch, 1)
            unmount([scratch])
            _quotas_available = True
        except QuotaUnavailable:
            _quotas_available = False
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _quotas_available


_quotas_available: bool | None = None


def mount_quotas(directories: Iterable[Path], size_mb: int = QUOTA_MB) -> list[Path]:
    """Mount a ``size_mb`` tmpfs on each directory (created); the ones mounted."""
    mounted: list[Path] = []
    try:
        for directory in directories:
            mounted.append(mount_tmpfs(directory, size_mb))
    except QuotaUnavailable:
        unmount(mounted)
        raise
    return mounted


def monotonic_since(t0: float) -> Callable[[], float]:
    """Seconds since ``t0`` (a time.monotonic() reading)."""
    return lambda: time.monotonic() - t0
