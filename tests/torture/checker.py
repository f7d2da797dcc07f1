"""The torture checker: pure functions from a history and the final state to violations.

After the nemesis has healed everything and the cluster has settled, the runner
reads each node's live data and its residency audit and hands them here:

- ``check_convergence``: every node that may hold a key holds the same record
  for it (value and version), and no node holds a key it may not.
- ``check_history``: against the operations and their outcomes, per key:
  no acknowledged write is lost to an older version; every surviving or read
  value was written by a write not refused, with exactly the version that
  write was acknowledged with; a deleted key stays deleted unless written
  again with a newer version; nothing appears that nobody wrote.
- ``check_audits``: every node's residency audit (all column families) is clean.
- ``check_sessions``: SESSION reads never go back in time within their session:
  a read sees at least the session's own last acknowledged write of the key
  (a delete's tombstone included) and never a version older than one the
  session already read or wrote there.

Versions compare as (timestamp, origin), the order last-writer-wins uses;
the checker never looks at wall-clock order, so clock skew cannot fool it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .history import DELETE, FAILED, GET, OK, PUT, SESSION, UNKNOWN, Op, Version

Record = tuple[bytes, int, str]  # (value, timestamp, origin): one live key on one node
Dump = Mapping[bytes, Record]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken promise: which check, which key (and node), and what was seen."""

    check: str
    detail: str
    key: bytes | None = None
    node: str | None = None
    ops: tuple[int, ...] = ()  # the operations it is about (indices in the history)

    def __str__(self) -> str:
        where = f" key {self.key!r}" if self.key is not None else ""
        where += f" on {self.node}" if self.node else ""
        return f"[{self.check}]{where}: {self.detail}"


def check_convergence(
    dumps: Mapping[str, Dump], may_hold: Callable[[str, bytes], bool]
) -> list[Violation]:
    """Every node's live data must agree with every other's on the keys both may hold.

    ``dumps``: node -> its live keys (read locally on that node). ``may_hold(node,
    key)``: the placement rules. A key on a node that may not hold it is a
    residency violation; a key one holder has and another lacks, or holds at
    another version, is a convergence violation.
    """
    out: list[Violation] = []
    keys = sorted({k for dump in dumps.values() for k in dump})
    for key in keys:
        seen: dict[str, Record | None] = {}
        for node, dump in sorted(dumps.items()):
            if not may_hold(node, key):
                if key in dump:
                    out.append(Violation("residency", "held outside its placement", key, node))
                continue
            seen[node] = dump.get(key)
        if len(set(seen.values())) > 1:
            shown = ", ".join(f"{n}={_show(r)}" for n, r in seen.items())
            out.append(Violation("convergence", f"holders disagree: {shown}", key))
    return out


def check_history(ops: Sequence[Op], final: Mapping[bytes, Record]) -> list[Violation]:
    """Check the final agreed state (key -> record; absent keys missing) against ``ops``.

    Needs every put to have written a unique value (history.values_unique).
    """
    out: list[Violation] = []
    by_value = {op.value: op for op in ops if op.kind == PUT and op.value is not None}
    keys = {op.key for op in ops if op.kind in (PUT, DELETE)}
    for key in sorted(keys | set(final)):
        out += _check_key(key, [op for op in ops if op.key == key], final.get(key), by_value)
    for op in ops:
        if op.kind == GET and op.outcome == OK and op.value is not None:
            assert op.version is not None
            out += _check_value_origin(
                op.key, (op.value, *op.version), by_value, f"read #{op.index}"
            )
    return out


def _check_key(
    key: bytes, ops: list[Op], record: Record | None, by_value: Mapping[bytes, Op]
) -> list[Violation]:
    writes = [op for op in ops if op.kind in (PUT, DELETE)]
    acked = [op for op in writes if op.outcome == OK and op.version is not None]
    newest = max(acked, key=lambda op: op.version or (0, "")) if acked else None
    if record is not None:
        out = _check_value_origin(key, record, by_value, "final state")
        if out:
            return out
        version: Version = (record[1], record[2])
        if newest is not None and newest.version is not None and version < newest.version:
            writer = by_value[record[0]]
            what = "deleted key came back" if newest.kind == DELETE else "acknowledged write lost"
            check = "resurrected" if newest.kind == DELETE else "lost-write"
            return [
                Violation(
                    check,
                    f"{what}: #{newest.index} {newest.kind} acknowledged at "
                    f"{_ver(newest.version)}, but the key holds #{writer.index}'s value at "
                    f"the older {_ver(version)}",
                    key,
                    ops=(writer.index, newest.index),
                )
            ]
        return []
    if newest is None or newest.kind == DELETE:
        return []
    assert newest.version is not None
    # Absent although a put was acknowledged: only a delete that beats it may explain it.
    deletes = [
        op
        for op in writes
        if op.kind == DELETE
        and (
            op.outcome == UNKNOWN or (op.outcome == OK and (op.version or (0, "")) > newest.version)
        )
    ]
    if deletes:
        return []
    return [
        Violation(
            "lost-write",
            f"acknowledged write lost: #{newest.index} put at {_ver(newest.version)} is absent, "
            f"and no delete that could beat it was sent",
            key,
            ops=(newest.index,),
        )
    ]


def _check_value_origin(
    key: bytes,
    record: Record,
    by_value: Mapping[bytes, Op],
    seen_in: str,
    reader: int | None = None,
) -> list[Violation]:
    value, ts, origin = record
    writer = by_value.get(value)
    seen = () if reader is None else (reader,)
    if writer is None or writer.key != key:
        what = f"{seen_in} holds {_show(record)}, which nobody wrote"
        return [Violation("phantom", what, key, ops=seen)]
    if writer.outcome == FAILED:
        return [
            Violation(
                "failed-write-visible",
                f"{seen_in} holds #{writer.index}'s value, a write refused with "
                f"{writer.error[:80]!r}",
                key,
                ops=(*seen, writer.index),
            )
        ]
    if writer.outcome == OK and writer.version != (ts, origin):
        return [
            Violation(
                "wrong-version",
                f"{seen_in} holds #{writer.index}'s value at {_ver((ts, origin))}, but that "
                f"write was acknowledged at {_ver(writer.version)}",
                key,
                ops=(*seen, writer.index),
            )
        ]
    return []


def check_sessions(ops: Sequence[Op]) -> list[Violation]:
    """Per session, in its order: SESSION reads read their writes and never go back in time.

    A session's floor for a key is the greatest version it wrote there
    (acknowledged puts and deletes; failed or unknown writes do not count) or
    read there with the SESSION level. An ok SESSION read must return a version
    at or above the floor. It may return absent only when the floor is a
    delete, or a delete of the key not refused (acknowledged above the floor,
    or of unknown outcome) may explain it. Other clients' newer values are fine.
    """
    deletes: dict[bytes, list[Op]] = {}
    for op in ops:
        if op.kind == DELETE and op.outcome != FAILED:
            deletes.setdefault(op.key, []).append(op)
    out: list[Violation] = []
    floors: dict[tuple[str, bytes], Op] = {}  # (session, key) -> the op that set the floor
    for op in ops:
        if not op.session or op.outcome != OK:
            continue
        floor = floors.get((op.session, op.key))
        if op.kind in (PUT, DELETE):
            if op.version is not None and (floor is None or op.version > _at(floor)):
                floors[op.session, op.key] = op
        elif op.kind == GET and op.level == SESSION:
            if floor is not None and not _reads_at_least(op, floor, deletes.get(op.key, ())):
                out.append(_went_back(op, floor))
            elif op.version is not None and (floor is None or op.version > _at(floor)):
                floors[op.session, op.key] = op
    return out


def _at(op: Op) -> Version:
    assert op.version is not None
    return op.version


def _reads_at_least(read: Op, floor: Op, deletes: Iterable[Op]) -> bool:
    if read.version is not None:
        return read.version >= _at(floor)
    if floor.kind == DELETE:
        return True
    return any(d.outcome == UNKNOWN or _at(d) > _at(floor) for d in deletes)


def _went_back(read: Op, floor: Op) -> Violation:
    own = floor.kind in (PUT, DELETE)
    check = "session-read-your-writes" if own else "session-monotonic-reads"
    what = (
        f"its own {floor.kind} #{floor.index} acknowledged at {_ver(floor.version)}"
        if own
        else f"its read #{floor.index} of {_show_op(floor)}"
    )
    return Violation(
        check,
        f"session {read.session}: SESSION read #{read.index} at {read.node} returned "
        f"{_show_op(read)}, older than {what}",
        read.key,
        read.node,
        ops=(floor.index, read.index),
    )


def _show_op(op: Op) -> str:
    if op.value is None or op.kind == DELETE:
        return "absent" if op.kind == GET else "a tombstone"
    return f"{op.value.decode('utf-8', 'replace')}@{_ver(op.version)}"


def check_audits(audits: Mapping[str, tuple[int, Iterable[tuple[str, bytes]]]]) -> list[Violation]:
    """node -> (violations, samples of (column family, key)) from Cluster.Audit: all clean."""
    out = []
    for node, (count, samples) in sorted(audits.items()):
        if count:
            shown = ", ".join(f"{cf}:{k!r}" for cf, k in list(samples)[:5])
            out.append(
                Violation(
                    "residency", f"audit found {count} keys out of place: {shown}", None, node
                )
            )
    return out


def _ver(version: Version | None) -> str:
    return "-" if version is None else f"{version[0]}/{version[1]}"


def _show(record: Record | None) -> str:
    if record is None:
        return "absent"
    return f"{record[0].decode('utf-8', 'replace')}@{record[1]}/{record[2]}"
