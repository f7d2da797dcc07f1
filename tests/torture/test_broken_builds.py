"""The torture checker catches deliberately broken builds.

An in-process cluster (edgekv.local.inprocess) runs a seeded history of puts,
deletes, reads, partitions and heals, recorded exactly as the torture run
records it (runner._op), and the checker judges the outcome. Two builds are
broken here, by monkeypatching this process only:

- ``older-wins``: a node applying a peer's record keeps the OLDER version
  (last-writer-wins inverted in ``sort_received``);
- ``forgetful``: a node acknowledges a write and then forgets it (its
  WriteBatch is dropped, the version is still returned);
- ``session-local``: a node serves SESSION reads as LOCAL ones, without
  waiting for the token's writes (``SessionReads.get`` reads at once).

The unbroken build runs the same history as the control: it must pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgekv import native
from edgekv.coordinator import session as session_module
from edgekv.coordinator.call import Call
from edgekv.coordinator.results import GetResult
from edgekv.local.inprocess import InProcessCluster
from edgekv.storage import engine as engine_module
from edgekv.storage.engine import Engine
from edgekv.storage.received import Sorted

from .checker import Violation, check_convergence, check_history, check_sessions
from .history import DELETE, GET, PUT, SESSION, History
from .nemesis import monotonic_since
from .runner import _op, carry_token

FORGOTTEN = b"forgotten"
KEYS = [b"g/%d" % i for i in range(4)]


def older_wins(
    entries: Iterable[tuple[bytes, bytes]],
    *,
    check_key: Callable[[bytes], None],
    get_stored: Callable[[bytes], bytes | None],
    skew_limit: int,
) -> Sorted:
    """``received.sort_received`` with last-writer-wins inverted: the older version is kept."""
    out = Sorted()
    for key, record in entries:
        check_key(key)
        version = native.record_version(record)
        out.max_ts = max(out.max_ts, version[0])
        current = out.winners.get(key)
        if current is None:
            stored = out.stored_of[key] = get_stored(key)
            if stored is not None and native.record_version(stored) <= version:  # BROKEN
                continue
        elif current[0] <= version:  # BROKEN
            continue
        out.winners[key] = (version, record)
    return out


def break_build(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "older-wins":
        monkeypatch.setattr(engine_module, "sort_received", older_wins)
    elif how == "forgetful":
        commit, write_batch = Engine._commit, Engine._write_batch
        forgetting: list[bool] = []

        def forgetful_commit(self: Engine, groups: list[list[Any]], *args: Any) -> Any:
            forget = any(op[3] == FORGOTTEN for staged in groups for op in staged)
            forgetting.append(forget)
            try:
                return commit(self, groups, *args)
            finally:
                forgetting.pop()

        def forgetful_write_batch(self: Engine, wb: Any) -> None:
            if forgetting and forgetting[-1]:
                return  # BROKEN: acknowledged, never written
            write_batch(self, wb)

        monkeypatch.setattr(Engine, "_commit", forgetful_commit)
        monkeypatch.setattr(Engine, "_write_batch", forgetful_write_batch)
    elif how == "session-local":

        async def get_at_once(
            self: session_module.SessionReads,
            key: bytes,
            call: Call,
            read: Callable[[bytes, Call], Any],
        ) -> GetResult:
            seen = self._seen(call)
            result: GetResult = await read(key, call)  # BROKEN: the token is not waited for
            return result._replace(session_token=session_module._token(seen, (result.found,)))

        monkeypatch.setattr(session_module.SessionReads, "get", get_at_once)


def plan(seed: int, nodes: list[str]) -> Iterator[tuple[str, ...]]:
    """A seeded history that always contains the conflicts the broken builds get wrong."""
    rng = random.Random(seed)
    for i in range(30):
        roll = rng.random()
        node = rng.choice(nodes)
        if roll < 0.1:
            yield ("isolate", node)
        elif roll < 0.2:
            yield ("heal",)
        else:
            kind = PUT if roll < 0.7 else DELETE if roll < 0.8 else GET
            yield (kind, node, rng.choice(KEYS).decode(), f"r{i}")
    # Two writes of one key on both sides of a partition, then the heal.
    yield ("isolate", nodes[0])
    yield (PUT, nodes[0], "g/c", "first")
    yield (PUT, nodes[1], "g/c", "second")
    yield ("heal",)
    # A write acknowledged after the key already holds a value on every node.
    yield (PUT, nodes[2], "g/f", "base")
    yield ("wait",)
    yield (PUT, nodes[2], "g/f", FORGOTTEN.decode())


async def run_history(directory: Path, seed: int, settle_s: float = 20.0) -> list[Violation]:
    history = History()
    now = monotonic_since(time.monotonic())
    async with InProcessCluster(directory) as cluster:
        nodes = cluster.node_ids
        clients = {n: cluster.client(n, timeout_s=5.0) for n in nodes}
        for step in plan(seed, nodes):
            if step[0] == "isolate":
                cluster.partition([step[1]], [n for n in nodes if n != step[1]])
            elif step[0] == "heal":
                cluster.heal()
            elif step[0] == "wait":
                await cluster.assert_converged(b"g/f", timeout_s=20)
            else:
                kind, node, key, value = step
                val = value.encode() if kind == PUT else None
                await _op(history, clients[node], "c", node, kind, key.encode(), val, now)
        cluster.heal()
        with contextlib.suppress(AssertionError):  # a broken build may never agree
            await cluster.assert_converged(b"g/", timeout_s=settle_s)
        dumps = {n: cluster.dump(n, b"g/") for n in nodes}
    final: dict[bytes, tuple[bytes, int, str]] = {}
    for node in sorted(dumps):
        for key, record in dumps[node].items():
            final.setdefault(key, record)
    return [*check_convergence(dumps, lambda n, k: True), *check_history(history.ops, final)]


async def run_session_history(directory: Path) -> list[Violation]:
    """A session writes, deletes and reads at one PoP, then reads at a PoP cut off from it.

    Every key first holds an older value everywhere. A PoP that serves the
    session without the token's writes returns those older values; an unbroken
    one waits, cannot forward, and answers UNAVAILABLE (not a violation).
    """
    history = History()
    now = monotonic_since(time.monotonic())
    async with InProcessCluster(directory) as cluster:
        near, far, _ = cluster.node_ids
        plain = {n: cluster.client(n, timeout_s=5.0) for n in cluster.node_ids}
        sdk = {n: cluster.client(n, timeout_s=5.0, consistency=SESSION) for n in cluster.node_ids}

        async def op(client: str, node: str, kind: str, key: bytes, value: bytes | None) -> None:
            clients = sdk if client == "s" else plain
            await _op(history, clients[node], client, node, kind, key, value, now,
                      session="s" if client == "s" else "")  # fmt: skip
            if client == "s":
                carry_token(sdk, clients[node])

        for key in (b"g/ryw", b"g/mono", b"g/del"):
            await op("c", near, PUT, key, key + b"-old")
        await cluster.assert_converged(b"g/", timeout_s=20)
        cluster.partition([n for n in cluster.node_ids if n != far], [far])
        await op("s", near, PUT, b"g/ryw", b"g/ryw-new")  # read-your-writes
        await op("s", far, GET, b"g/ryw", None)
        await op("c", near, PUT, b"g/mono", b"g/mono-new")  # monotonic reads
        await op("s", near, GET, b"g/mono", None)
        await op("s", far, GET, b"g/mono", None)
        await op("s", near, DELETE, b"g/del", None)  # a tombstone is a write too
        await op("s", far, GET, b"g/del", None)
        cluster.heal()
    return check_sessions(history.ops)


def test_unbroken_build_passes_the_same_history(tmp_path: Path) -> None:
    assert asyncio.run(run_history(tmp_path, seed=7)) == []


def test_unbroken_build_keeps_sessions_in_time(tmp_path: Path) -> None:
    assert asyncio.run(run_session_history(tmp_path)) == []


def test_checker_catches_a_node_serving_session_reads_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_build(monkeypatch, "session-local")
    violations = asyncio.run(run_session_history(tmp_path))
    found = {(v.check, v.key) for v in violations}
    assert found == {
        ("session-read-your-writes", b"g/ryw"),
        ("session-monotonic-reads", b"g/mono"),
        ("session-read-your-writes", b"g/del"),
    }, violations


@pytest.mark.parametrize("how", ["older-wins", "forgetful"])
def test_checker_catches_a_broken_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    break_build(monkeypatch, how)
    violations = asyncio.run(run_history(tmp_path, seed=7, settle_s=3.0))
    found = {v.check for v in violations}
    assert "lost-write" in found, violations
    if how == "forgetful":
        assert any(v.key == b"g/f" for v in violations), violations
