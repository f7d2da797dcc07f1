"""Clients that read STRONG and compare-and-set homed keys, recording a history to check.

Used by the in-process fault test (tests/inprocess/test_home_linearizable.py)
and the process-level quick run (tests/torture/test_home_torture.py); the
history goes to tests/torture/linearizability.py. Each client keeps, per key,
the value and version of its last STRONG read or successful write, and
compare-and-sets on that version (``if_absent`` when it saw no value). Every
write writes a value no other write writes, so a value names its write.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from edgekv.client import AsyncClient, ConditionFailed, Version
from edgekv.coordinator.home import NOT_APPLIED
from edgekv.errors import FailedPrecondition, InvalidArgument, Unavailable, never_sent
from edgekv.v1 import common_pb2, kv_pb2, kv_pb2_grpc

from .linearizability import ABSENT, CAS, READ, UNKNOWN_CURRENT, WRITE, Operation


class Recorder:
    """Operations as they happened; versions are turned into values once the run is over."""

    def __init__(self) -> None:
        self.raw: list[dict[str, Any]] = []
        self.value_of: dict[tuple[int, str], object] = {}

    def seen(self, version: tuple[int, str], value: object) -> None:
        self.value_of[tuple(version)] = value  # type: ignore[index]

    def operations(self) -> list[Operation]:
        ops = []
        for r in self.raw:
            r = dict(r)
            current = r.pop("current_version", None)
            if r["kind"] == CAS and not r["ok"]:
                r["current"] = (
                    ABSENT
                    if current is None
                    else self.value_of.get(tuple(current), UNKNOWN_CURRENT)
                )
            ops.append(Operation(**r))
        return ops


async def run_client(
    n: int,
    client: AsyncClient,
    strong: kv_pb2_grpc.KVStub,
    keys: Sequence[bytes],
    rec: Recorder,
    stop: Callable[[], bool],
    *,
    max_ops: int = 400,
    timeout_s: float = 3.0,
) -> None:
    """Random STRONG reads (40%), CAS (45%), blind puts (10%) and deletes until ``stop()``.

    A definite refusal other than a failed condition is left out (nothing
    happened); a write with no answer is recorded as unanswered (``ret`` None).
    """
    rng = random.Random(n)
    last: dict[bytes, tuple[object, Version | None]] = {}
    for i in range(max_ops):
        if stop():
            return
        key = rng.choice(keys)
        value = b"%d-%d" % (n, i)
        choice = rng.random()
        entry: dict[str, Any] = {"key": key, "call": time.monotonic(), "client": n}
        try:
            if choice < 0.4:
                request = kv_pb2.GetRequest(key=key, consistency=common_pb2.CONSISTENCY_STRONG)
                got = await strong.Get(request, timeout=timeout_s)
                read = got.value if got.found else ABSENT
                version = Version(got.version.timestamp, got.version.origin) if got.found else None
                if version is not None:
                    rec.seen(version, read)
                last[key] = (read, version)
                entry.update(kind=READ, value=read)
            elif choice < 0.85:
                expected, version = last.get(key, (ABSENT, None))
                entry.update(kind=CAS, value=value, expected=expected)
                if version is None:
                    ack = await client.put(key, value, if_absent=True, timeout_s=timeout_s)
                else:
                    ack = await client.put(key, value, if_version=version, timeout_s=timeout_s)
                rec.seen(ack.version, value)
                last[key] = (value, ack.version)
            elif choice < 0.95:
                entry.update(kind=WRITE, value=value)
                rec.seen((await client.put(key, value, timeout_s=timeout_s)).version, value)
            else:
                entry.update(kind=WRITE, value=ABSENT)
                await client.delete(key, timeout_s=timeout_s)
            entry.update(ret=time.monotonic(), ok=True)
        except ConditionFailed as exc:
            entry.update(ret=time.monotonic(), ok=False, current_version=exc.current_version)
            last.pop(key, None)
        except (FailedPrecondition, InvalidArgument):
            continue  # refused before anything happened (a fenced clock, a misroute)
        except Unavailable as exc:
            if NOT_APPLIED in str(exc) or never_sent(grpc.StatusCode.UNAVAILABLE, str(exc)):
                continue  # the home (or the PoP) was never reached: nothing happened
            if entry.get("kind") == READ:
                continue
            entry.update(ret=None, ok=True)
        except grpc.aio.AioRpcError:
            continue  # a STRONG read with no answer observed nothing
        except Exception:
            if entry.get("kind") == READ:
                continue
            entry.update(ret=None, ok=True)  # no answer: it may or may not have happened
        rec.raw.append(entry)
        await asyncio.sleep(rng.random() * 0.01)
