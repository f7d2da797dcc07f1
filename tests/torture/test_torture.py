"""The quick torture run: a real 3-region cluster, clients, a nemesis, then the checker.

Every fault kind (kill -9, SIGSTOP, partition, clock skew, and a full disk where
tmpfs quotas can be mounted) is injected once, in an order drawn from the seed,
while four clients write, delete and read pinned and global keys through random
PoPs. Partitions are real (nftables between network namespaces, netns.py) where
the machine allows it, else through the fault proxies. ``TORTURE_SEED`` picks
the seed (the default is fixed, so CI always runs the same schedule); ``make
torture`` runs the same code longer over several seeds (run.py).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from .nemesis import FAULT_KINDS, ROOT_FAULT_KINDS, quotas_available
from .netns import unavailable
from .report import failure, report
from .runner import Settings, run

pytestmark = pytest.mark.integration

QUICK_SEED = 15


def test_quick_torture_history_passes_every_check(tmp_path: Path) -> None:
    seed = int(os.environ.get("TORTURE_SEED") or QUICK_SEED)
    faults = FAULT_KINDS + (ROOT_FAULT_KINDS if quotas_available() else ())
    network = "proxy" if unavailable() else "netns"
    quick = Settings(seed=seed, duration_s=5.0, hold_s=(0.5, 1.2), gap_s=(0.2, 0.6), quick=True,
                     faults=faults, network=network)  # fmt: skip
    result = asyncio.run(run(quick, tmp_path))
    print(report([result]))
    assert result.ok, failure(result)
    assert result.final_converge_s is not None
    assert {f.kind for f in result.history.faults} >= set(faults)
