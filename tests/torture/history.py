"""What a torture run did: every client operation with its outcome, every fault.

Plain data, no I/O: the checker (checker.py) reads a History, the runner
(runner.py) writes one, and the unit tests build them by hand.

An operation's outcome is one of:

- ``ok``: the node answered; a write was acknowledged with ``version``, a read
  returned ``value`` (None: absent) at ``version``.
- ``failed``: the node answered with a definite refusal (INVALID_ARGUMENT,
  FAILED_PRECONDITION, ...): the write was not applied anywhere.
- ``unknown``: no answer that says (a deadline, a dropped connection, a node
  killed mid-call, UNAVAILABLE from a forward): the write may or may not have
  been applied, with a version nobody told us.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgekv.errors import (
    EdgeKVError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
)

OK, FAILED, UNKNOWN = "ok", "failed", "unknown"
PUT, DELETE, GET = "put", "delete", "get"
LOCAL, SESSION = "local", "session"  # a read's consistency level (Op.level)
Version = tuple[int, str]  # (hlc timestamp, origin node id): the LWW order

# Answers that say the write was refused before anything was stored. Every
# other error (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, CANCELLED, ...) may
# have come after the write was applied: its outcome is unknown.
_DEFINITE_REFUSALS: tuple[type[EdgeKVError], ...] = (
    InvalidArgument,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    NotFound,
    Unimplemented,
)


def outcome_of(exc: BaseException) -> str:
    """``failed`` for a definite refusal, ``unknown`` for anything else."""
    return FAILED if isinstance(exc, _DEFINITE_REFUSALS) else UNKNOWN


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation and what came of it.

    ``value``: for a put the value written (unique in a run, so it names its
    write); for an ok get the value read (None: absent). ``version``: an ok
    write's acknowledged version, an ok get's version of the value read.
    ``start_s``/``end_s``: monotonic seconds since the run began.
    ``session``: the session the client carries its token in ("": none), on
    every operation of that client. ``level``: a get's consistency level.
    """

    index: int
    client: str
    node: str
    kind: str
    key: bytes
    value: bytes | None
    outcome: str
    version: Version | None = None
    start_s: float = 0.0
    end_s: float = 0.0
    error: str = ""
    session: str = ""
    level: str = ""

    def describe(self) -> str:
        val = "-" if self.value is None else self.value.decode("utf-8", "replace")
        ver = f" v={self.version[0]}/{self.version[1]}" if self.version else ""
        err = f" ({self.error[:80]})" if self.error else ""
        kind = f"{self.kind}/{self.level}" if self.level and self.level != LOCAL else self.kind
        return (
            f"#{self.index:<5} {self.start_s:8.3f}-{self.end_s:8.3f}s"
            f" {self.client:>8}@{self.node:<5}"
            f" {kind:<11} {self.key.decode('utf-8', 'replace'):<8} {val:<12}"
            f" {self.outcome}{ver}{err}"
        )


@dataclass(slots=True)
class Fault:
    """One fault the nemesis injected: ``kind`` on ``nodes``, from ``start_s`` to ``heal_s``.

    ``converge_s``: seconds from the heal until a write at every live node was
    visible at every other one (None: not measured, or not within the bound).
    """

    kind: str
    nodes: tuple[str, ...]
    start_s: float
    heal_s: float | None = None
    converge_s: float | None = None
    detail: str = ""

    def describe(self) -> str:
        heal = f"{self.heal_s:8.3f}" if self.heal_s is not None else "   never"
        conv = f", converged {self.converge_s:.2f}s after" if self.converge_s is not None else ""
        detail = f" {self.detail}" if self.detail else ""
        return (
            f"fault {self.kind:<9} {','.join(self.nodes):<12} {self.start_s:8.3f}-{heal}s"
            f"{detail}{conv}"
        )


@dataclass
class History:
    """Every operation and fault of one run, in the order they were recorded."""

    ops: list[Op] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def add(self, **fields: object) -> Op:
        op = Op(index=len(self.ops), **fields)  # type: ignore[arg-type]
        self.ops.append(op)
        return op

    def counts(self) -> Counter[tuple[str, str]]:
        """(kind, outcome) -> how many."""
        return Counter((op.kind, op.outcome) for op in self.ops)

    def fault_counts(self) -> Counter[str]:
        return Counter(f.kind for f in self.faults)

    def around(self, key: bytes | None, at: Sequence[int] = (), *, limit: int = 30) -> str:
        """The operations on ``key`` and the faults meanwhile, as lines in time order.

        ``at``: indices of the operations of interest; the lines span from
        ``limit // 2`` operations on the key before the first of them to as many
        after the last. Without ``at``, the last ``limit`` operations on the key.
        """
        ops: Sequence[Op] = [op for op in self.ops if key is None or op.key == key]
        if at:
            where = [i for i, op in enumerate(ops) if op.index in set(at)] or [len(ops)]
            ops = ops[max(0, min(where) - limit // 2) : max(where) + limit // 2 + 1]
        else:
            ops = ops[-limit:]
        lines: list[tuple[float, str]] = [(op.start_s, op.describe()) for op in ops]
        if ops:
            first, last = ops[0].start_s, max(op.end_s for op in ops)
            lines += [
                (f.start_s, f.describe())
                for f in self.faults
                if f.start_s <= last and (f.heal_s is None or f.heal_s >= first)
            ]
        marked = {f"#{i}" for i in at}
        return "\n".join(
            ("> " if line.split(" ", 1)[0] in marked else "  ") + line
            for _, line in sorted(lines, key=lambda t: t[0])
        )

    def save(self, path: Path) -> None:
        """Every operation and fault as JSON lines, for a closer look at a failed run."""
        with open(path, "w", encoding="utf-8") as fh:
            for op in self.ops:
                row = {**asdict(op), "key": op.key.decode("utf-8", "replace")}
                row["value"] = None if op.value is None else op.value.decode("utf-8", "replace")
                fh.write(json.dumps(row) + "\n")
            for fault in self.faults:
                fh.write(json.dumps({"fault": asdict(fault)}) + "\n")


def writes_of(ops: Iterable[Op], key: bytes) -> list[Op]:
    return [op for op in ops if op.key == key and op.kind in (PUT, DELETE)]


def values_unique(ops: Iterable[Op]) -> bool:
    """Whether every put wrote a value of its own (the checker needs it to name writes)."""
    seen: set[bytes] = set()
    for op in ops:
        if op.kind == PUT and op.value is not None:
            if op.value in seen:
                return False
            seen.add(op.value)
    return True
