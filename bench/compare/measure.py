"""The workloads, run the same way against every adapter, interleaved in rounds.

Every workload is cut into ``rounds`` blocks; in each round the systems run
their block in a fresh random order, so that noise from the rest of the machine
(the benchmark's own 2 cores are often shared) hits all of them alike and the
ratios taken in one run hold. Around each block the server's CPU time (all
threads, from /proc/<pid>/stat) and this process's CPU time (the clients) are
read, and divided by the operations done.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.compare.adapter import Adapter
from bench.compare.servers import cpu_seconds

CLIENTS = 8  # concurrent callers in the concurrent workloads
BATCH = 100  # keys per batch get
WRITE_SHARE = 0.05  # the 95/5 read/write mix


@dataclass(frozen=True)
class Workload:
    key: str  # short name: get, put, get_many, get_x8, mix_x8
    title: str
    op: str  # get, put, get_many, or mix (95% get, 5% put)
    concurrent: bool


WORKLOADS = (
    Workload("get", "get, 1 client", "get", False),
    Workload("put", "put, 1 client", "put", False),
    Workload("get_many", f"batch get of {BATCH} keys, 1 client", "get_many", False),
    Workload("get_x8", f"get, {CLIENTS} concurrent clients", "get", True),
    Workload("mix_x8", f"95/5 get/put mix, {CLIENTS} concurrent clients", "mix", True),
)


@dataclass
class Figures:
    """What one system did in one workload, summed over its blocks."""

    samples_us: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the blocks
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def ops(self) -> int:
        return len(self.samples_us)

    def percentile(self, q: float) -> float:
        s = sorted(self.samples_us)
        return s[min(len(s) - 1, int(len(s) * q))]

    def summary(self) -> dict[str, float]:
        n = max(1, self.ops)
        return {
            "ops": self.ops,
            "p50_us": self.percentile(0.5),
            "p99_us": self.percentile(0.99),
            "p999_us": self.percentile(0.999),
            "ops_per_s": self.ops / self.seconds if self.seconds else 0.0,
            "server_cpu_us_per_op": self.server_cpu_s * 1e6 / n,
            "client_cpu_us_per_op": self.client_cpu_s * 1e6 / n,
        }


@dataclass
class Plan:
    """The dataset and every operation's arguments: the same for every system."""

    keys: list[bytes]
    value: bytes
    args: dict[str, list[Any]]
    rounds: int
    seconds: float  # per concurrent workload and system, over all rounds

    @classmethod
    def make(cls, n_keys: int, samples: int, rounds: int, seconds: float, seed: int = 7) -> Plan:
        rnd = random.Random(seed)
        keys = [b"k%08d" % i for i in range(n_keys)]
        value = rnd.randbytes(100)
        batches = max(rounds, samples // 20)
        pool = max(samples, 20_000)  # the concurrent callers cycle through this many
        args: dict[str, list[Any]] = {
            "get": [rnd.choice(keys) for _ in range(samples)],
            "put": [rnd.choice(keys) for _ in range(samples // 2)],
            "get_many": [rnd.sample(keys, min(BATCH, n_keys)) for _ in range(batches)],
            "get_x8": [rnd.choice(keys) for _ in range(pool)],
            "mix_x8": [(rnd.random() < WRITE_SHARE, rnd.choice(keys)) for _ in range(pool)],
        }
        return cls(keys, value, args, rounds, seconds)

    def block(self, workload: Workload, round_no: int) -> list[Any]:
        """The arguments of one round's block (sequential workloads)."""
        items = self.args[workload.key]
        size = len(items) // self.rounds
        return items[round_no * size : (round_no + 1) * size]


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _concurrent(
    adapter: Adapter, workload: Workload, args: Sequence[Any], seconds: float
) -> list[float]:
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    clock = time.perf_counter_ns

    async def caller(start: int) -> None:
        i = start
        while time.perf_counter() < deadline:
            arg = args[i % len(args)]
            t0 = clock()
            if workload.op == "mix":
                is_put, key = arg
                await (adapter.aput(key) if is_put else adapter.aget(key))
            else:
                await adapter.aget(arg)
            samples.append((clock() - t0) / 1000.0)
            i += CLIENTS

    await asyncio.gather(*(caller(c * 997) for c in range(CLIENTS)))
    return samples


def run_block(
    adapter: Adapter, workload: Workload, plan: Plan, round_no: int, into: Figures
) -> None:
    """One block of ``workload`` on ``adapter``, added to ``into``."""
    pids = adapter.server_pids
    server0, client0, wall0 = cpu_seconds(pids), _client_cpu_s(), time.perf_counter()
    if workload.concurrent:
        samples = adapter.run(
            _concurrent(adapter, workload, plan.args[workload.key], plan.seconds / plan.rounds)
        )
    else:
        samples = adapter.sequential(workload.op, plan.block(workload, round_no))
    into.seconds += time.perf_counter() - wall0
    into.server_cpu_s += cpu_seconds(pids) - server0
    into.client_cpu_s += _client_cpu_s() - client0
    into.samples_us.extend(samples)


def warm_up(adapter: Adapter, plan: Plan) -> None:
    """Check the dataset is there, then touch every code path once before anything is timed."""
    for key in (plan.keys[0], plan.keys[-1], plan.args["get"][0]):
        found = adapter.read_value(key)
        if found != plan.value:
            raise AssertionError(
                f"{adapter.name}: {key!r} reads back {found!r}, not the value loaded"
            )
    adapter.sequential("get", plan.args["get"][:200])
    adapter.sequential("put", plan.args["put"][:50])
    adapter.sequential("get_many", plan.args["get_many"][:5])
    if adapter.async_unavailable() is None:
        adapter.run(adapter.aopen())
        adapter.run(_concurrent(adapter, WORKLOADS[4], plan.args["mix_x8"], 0.2))
