"""One torture run: clients and a nemesis against a real 3-region cluster, then the checker.

Four node processes (a-1 and a-2 in r1, b-1 in r2, c-1 in r3). With
``network="netns"`` each runs in its own network namespace and a partition is
nftables dropping packets between them (netns.py); with ``"proxy"`` every peer
link and forwarded call goes through a fault proxy that a partition cuts. Keys live under three
placements: ``g/`` and ``probe/`` (global), ``p1/`` (pinned to r1) and
``p12/`` (pinned to r1 and r2). Clients put, delete and get random keys
through random PoPs with the SDK (a PoP outside a pinned key's regions
forwards it), and now and then write 2-3 keys in one atomic Write, while the
nemesis (nemesis.py) injects faults and heals them, then measures how long a
write at every node takes to be seen at every other. At the end everything is
healed, the nodes must converge, and the checker (checker.py) judges the whole
history, the final data and every node's residency audit. A seeded share of
the clients read with the SESSION level, each in a session of its own whose
token it carries from PoP to PoP; the checker holds their reads to it.

Everything random comes from one seed: the clients' operations, the faults,
the nodes they hit. Timing is not replayed, so a run is reproducible in what
it does, not in how its operations interleave.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from edgekv.client import Delete, Put
from edgekv.client.aio import AsyncClient
from edgekv.client.retry import RetryPolicy
from edgekv.cluster.placement import PlacementRules
from edgekv.errors import EdgeKVError
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import Dump, dump_node
from edgekv.v1 import cluster_pb2, cluster_pb2_grpc

from .checker import Violation, check_audits, check_convergence, check_history, check_sessions
from .history import DELETE, GET, OK, PUT, SESSION, History, outcome_of
from .nemesis import FAULT_KINDS, Nemesis, monotonic_since, mount_quotas, unmount
from .netns import NetnsCluster

REGIONS = (("r1", 50.11, 8.68), ("r2", 38.95, -77.45), ("r3", 35.68, 139.69))
NODES = (("a-1", "r1"), ("a-2", "r1"), ("b-1", "r2"), ("c-1", "r3"))
PLACEMENT = (("p1/", ("r1",)), ("p12/", ("r1", "r2")))
PREFIXES = (b"g/", b"p1/", b"p12/")
PROBE = b"probe/"
# What a run spends besides its clients' time: starting four nodes, healing, checking
# (``make torture`` gives each seed DURATION / SEEDS less this to its clients).
OVERHEAD_S = 25.0
REPLICATION = {
    "heartbeat_interval_s": 0.2,
    "antientropy_interval_s": 0.5,
    "log_trim_interval_s": 0.5,
    "gc_interval_s": 1.0,
}


@dataclass(frozen=True)
class Settings:
    """What one run does. ``duration_s``: how long clients run at least; a quick run
    also runs until every fault kind was injected once."""

    seed: int
    duration_s: float = 20.0
    clients: int = 4
    session_share: float = 0.5  # of the clients, how many read SESSION (at least one)
    keys: int = 5
    op_timeout_s: float = 2.0
    hold_s: tuple[float, float] = (0.8, 2.0)
    gap_s: tuple[float, float] = (0.3, 1.0)
    skew_ms: int = 1500
    faults: tuple[str, ...] = FAULT_KINDS
    probe_timeout_s: float = 30.0
    nemeses: int = 1  # faults in effect at once (each nemesis injects, holds, heals)
    quick: bool = False  # the quick run of tests/torture/test_torture.py (its replay differs)
    converge_timeout_s: float = 90.0
    network: str = "proxy"  # how partitions are made: "proxy" (fault proxies) or "netns"


@dataclass
class Result:
    """A finished run: its history, what the checker found, and how long things took."""

    settings: Settings
    history: History
    directory: Path
    violations: list[Violation] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)
    final_converge_s: float | None = None
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations


async def run(settings: Settings, directory: Path) -> Result:
    """Run one torture history in ``directory`` (cluster file, data, node logs)."""
    started = time.monotonic()
    path = write_cluster_file(
        directory,
        regions=REGIONS,
        nodes=NODES,
        placement=PLACEMENT,
        extra={"replication": REPLICATION},
        cluster="torture",
    )
    history = History()
    result = Result(settings, history, directory)
    cluster = (
        NetnsCluster(path, log_level="warning")
        if settings.network == "netns"
        else LocalCluster(path, log_level="warning")
    )
    quotas: list[Path] = []
    clock = monotonic_since(time.monotonic())
    nemesis = Nemesis(cluster, history, random.Random(f"{settings.seed}/nemesis"), clock,
                      skew_ms=settings.skew_ms)  # fmt: skip
    try:
        if "disk" in settings.faults:
            quotas = mount_quotas(cluster.data_dirs().values())
        await asyncio.gather(
            *(asyncio.to_thread(cluster.start, [n], timeout_s=60.0) for n in cluster.node_ids)
        )
        await _torture(cluster, nemesis, history, settings)
        await nemesis.heal_all()
        await _settle_and_check(cluster, result, clock)
    finally:
        nemesis.resume_all_now()
        await asyncio.to_thread(cluster.close)
        unmount(quotas)
    result.wall_s = time.monotonic() - started
    return result


async def _torture(cluster: LocalCluster, nemesis: Nemesis, history: History, s: Settings) -> None:
    stop = asyncio.Event()
    sdk = _clients(cluster, s)
    # A session client has a client per PoP of its own, all carrying its one token.
    in_session = random.Random(f"{s.seed}/sessions").sample(
        range(s.clients), max(1, round(s.clients * s.session_share))
    )
    sessions = {i: _clients(cluster, s, SESSION) for i in in_session}
    now = nemesis.clock
    try:
        rngs = [random.Random(f"{s.seed}/client/{i}") for i in range(s.clients)]
        clients = [
            asyncio.create_task(
                _client(f"c{i}", rngs[i], sessions.get(i, sdk), history, stop, s, now)
            )
            for i in range(s.clients)
        ]
        deadline = now() + s.duration_s
        plan = nemesis.rng.sample(s.faults, len(s.faults))  # each kind once first
        await asyncio.gather(
            *(_nemesis(nemesis, plan, deadline, sdk, history, s) for _ in range(s.nemeses))
        )
        stop.set()
        await asyncio.gather(*clients)
    finally:
        stop.set()
        for client in [*sdk.values(), *(c for cs in sessions.values() for c in cs.values())]:
            await client.close()


def _clients(
    cluster: LocalCluster, s: Settings, level: str | None = None
) -> dict[str, AsyncClient]:
    """One SDK client per PoP, reading at ``level`` (None: LOCAL)."""
    return {
        n: AsyncClient(cluster.endpoint(n), discover=False, timeout_s=s.op_timeout_s,
                       retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.05),
                       consistency=level)
        for n in cluster.node_ids
    }  # fmt: skip


def carry_token(sdk: Mapping[str, AsyncClient], used: AsyncClient) -> None:
    """After a session's call through ``used``: every other PoP's client takes its token."""
    token = used.session_token
    for client in sdk.values():
        if client is not used:
            client.observe_token(token)


async def _nemesis(
    nemesis: Nemesis,
    plan: list[str],
    deadline: float,
    sdk: Mapping[str, AsyncClient],
    history: History,
    s: Settings,
) -> None:
    """Inject, hold and heal faults until ``plan`` is done and ``deadline`` passed.

    After a heal that left the cluster whole, measure how long a write at every
    node takes to be read at every other (with other faults in effect, it cannot).
    """
    now = nemesis.clock
    while plan or now() < deadline:
        kind = plan.pop(0) if plan else nemesis.rng.choice(s.faults)
        await asyncio.sleep(nemesis.rng.uniform(*s.gap_s))
        fault = await nemesis.inject(kind)
        if fault is None:
            continue
        await asyncio.sleep(nemesis.rng.uniform(*s.hold_s))
        await nemesis.heal(fault)
        if nemesis.active():
            fault.detail += " (convergence not measured: other faults in effect)"
            continue
        fault.converge_s = await _probe(sdk, history, len(history.faults), s, now)
        if fault.converge_s is None:
            fault.detail += f" (probes not everywhere within {s.probe_timeout_s:g} s)"


async def _client(
    name: str,
    rng: random.Random,
    sdk: Mapping[str, AsyncClient],
    history: History,
    stop: asyncio.Event,
    s: Settings,
    now: Callable[[], float],
) -> None:
    nodes = sorted(sdk)
    session = name if next(iter(sdk.values())).consistency == SESSION else ""
    n = 0
    while not stop.is_set():
        node = rng.choice(nodes)
        prefix = rng.choice(PREFIXES)
        key = prefix + b"%d" % rng.randrange(s.keys)
        roll = rng.random()
        if roll < 0.1:  # an atomic Write of 2-3 keys of one placement, under one version
            keys = [prefix + b"%d" % i for i in rng.sample(range(s.keys), rng.randint(2, 3))]
            batch = [
                (DELETE, k, None) if rng.random() < 0.3 else (PUT, k, f"{name}-{n}-{j}".encode())
                for j, k in enumerate(keys)
            ]
            n += 1
            await _write(history, sdk[node], name, node, batch, now, session)
            if session:
                carry_token(sdk, sdk[node])
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            continue
        kind = PUT if roll < 0.45 else DELETE if roll < 0.6 else GET
        value = f"{name}-{n}".encode() if kind == PUT else None
        n += 1
        await _op(history, sdk[node], name, node, kind, key, value, now, session=session)
        if session:
            carry_token(sdk, sdk[node])
        await asyncio.sleep(rng.uniform(0.0, 0.02))


async def _op(
    history: History,
    client: AsyncClient,
    name: str,
    node: str,
    kind: str,
    key: bytes,
    value: bytes | None,
    now: Callable[[], float],
    *,
    session: str = "",
) -> bool:
    """One put, delete or get, recorded; ``session``: the session ``client`` carries."""
    start = now()
    version = None
    read = value
    tags = {"session": session, "level": client.consistency if kind == GET else ""}
    try:
        if kind == PUT:
            assert value is not None
            res = await client.put(key, value)
            version = (res.version.timestamp, res.version.origin)
        elif kind == DELETE:
            res = await client.delete(key)
            version = (res.version.timestamp, res.version.origin)
        else:
            entry = await client.get(key)
            read = entry.value if entry is not None else None
            if entry is not None:
                version = (entry.version.timestamp, entry.version.origin)
    except EdgeKVError as exc:
        history.add(client=name, node=node, kind=kind, key=key, value=value,
                    outcome=outcome_of(exc), start_s=start, end_s=now(),
                    error=f"{type(exc).__name__}: {exc}", **tags)  # fmt: skip
        return False
    history.add(client=name, node=node, kind=kind, key=key, value=read, outcome=OK,
                version=version, start_s=start, end_s=now(), **tags)  # fmt: skip
    return True


async def _write(
    history: History,
    client: AsyncClient,
    name: str,
    node: str,
    batch: Sequence[tuple[str, bytes, bytes | None]],
    now: Callable[[], float],
    session: str = "",
) -> None:
    """One atomic Write, recorded as one put or delete per key, all with its outcome."""
    start = now()
    ops = [Put(k, v) if kind == PUT and v is not None else Delete(k) for kind, k, v in batch]
    version = None
    outcome, error = OK, ""
    try:
        res = await client.write(ops)
        version = (res.version.timestamp, res.version.origin)
    except EdgeKVError as exc:
        outcome, error = outcome_of(exc), f"{type(exc).__name__}: {exc}"
    end = now()
    for kind, key, value in batch:
        history.add(client=f"{name}/w", node=node, kind=kind, key=key, value=value,
                    outcome=outcome, version=version, start_s=start, end_s=end,
                    error=error, session=session)  # fmt: skip


async def _probe(
    sdk: Mapping[str, AsyncClient],
    history: History,
    n: int,
    s: Settings,
    clock: Callable[[], float],
) -> float | None:
    """After a heal: write ``probe/<n>/<node>`` at every node until each is acknowledged,
    then wait until every node reads every probe. Seconds from the heal, or None."""
    start = clock()
    deadline = start + s.probe_timeout_s
    nodes = sorted(sdk)
    pending = {node: PROBE + f"{n}/{node}".encode() for node in nodes}
    while pending and clock() < deadline:
        for node, key in list(pending.items()):
            value = f"nemesis-{n}-{node}".encode()
            if await _op(history, sdk[node], "nemesis", node, PUT, key, value, clock):
                pending.pop(node)
        if pending:
            await asyncio.sleep(0.1)
    keys = [PROBE + f"{n}/{node}".encode() for node in nodes]
    while clock() < deadline:
        try:
            found = [await sdk[node].get(k) for node in nodes for k in keys]
        except EdgeKVError:
            found = [None]
        if all(e is not None for e in found):
            return float(clock() - start)
        await asyncio.sleep(0.05)
    return None


def _rules(cluster: LocalCluster) -> PlacementRules:
    return PlacementRules.from_config(cluster.config)


async def _settle_and_check(
    cluster: LocalCluster, result: Result, now: Callable[[], float]
) -> None:
    """Wait (bounded) until every holder agrees, then run every check on the final state."""
    rules = _rules(cluster)
    region = {n.id: n.region for n in cluster.config.nodes}

    def may_hold(node: str, key: bytes) -> bool:
        return rules.allows(key, region[node])

    start = now()
    deadline = start + result.settings.converge_timeout_s
    while True:
        dumps = await asyncio.to_thread(_dumps, cluster, rules, region)
        diverged = check_convergence(dumps, may_hold)
        if not diverged:
            result.final_converge_s = now() - start
            break
        if now() > deadline:
            break
        await asyncio.sleep(0.25)
    result.checks["convergence: keys compared"] = len({k for d in dumps.values() for k in d})
    final: dict[bytes, tuple[bytes, int, str]] = {}
    for node in sorted(dumps):  # after convergence every holder has the same; first wins
        for key, record in dumps[node].items():
            final.setdefault(key, record)
    ops = result.history.ops
    result.checks["history: operations checked"] = len(ops)
    result.checks["history: keys checked"] = len({op.key for op in ops} | set(final))
    result.checks["history: reads checked"] = sum(
        1 for op in ops if op.kind == GET and op.outcome == OK and op.value is not None
    )
    session_reads = [op for op in ops if op.kind == GET and op.level == SESSION]
    result.checks["sessions: SESSION reads checked"] = sum(op.outcome == OK for op in session_reads)
    result.checks["sessions: SESSION reads refused"] = sum(op.outcome != OK for op in session_reads)
    audits = await asyncio.to_thread(_audits, cluster)
    result.checks["audit: nodes"] = len(audits)
    result.checks["audit: entries checked"] = sum(a[2] for a in audits.values())
    result.violations = [
        *diverged,
        *check_history(ops, final),
        *check_sessions(ops),
        *check_audits({n: (a[0], a[1]) for n, a in audits.items()}),
    ]


def _dumps(
    cluster: LocalCluster, rules: PlacementRules, region: Mapping[str, str]
) -> dict[str, Dump]:
    """Each node's live data under every prefix it may hold, read on that node."""
    out: dict[str, Dump] = {}
    for node in cluster.node_ids:
        data: dict[bytes, tuple[bytes, int, str]] = {}
        for prefix in (*PREFIXES, PROBE):
            if rules.allows(prefix, region[node]):
                data.update(dump_node(cluster.endpoint(node), prefix))
        out[node] = data
    return out


def _audits(cluster: LocalCluster) -> dict[str, tuple[int, list[tuple[str, bytes]], int]]:
    """node -> (violations, samples, entries checked) from its Cluster.Audit."""
    out = {}
    for node in cluster.node_ids:
        with grpc.insecure_channel(cluster.endpoint(node)) as channel:
            resp = cluster_pb2_grpc.ClusterStub(channel).Audit(
                cluster_pb2.AuditRequest(), timeout=60
            )
        samples = [(s.column_family, s.key) for s in resp.samples]
        out[node] = (int(resp.violations), samples, int(resp.checked))
    return out
