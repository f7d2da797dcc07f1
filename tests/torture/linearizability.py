"""A linearizability checker for per-key registers with compare-and-set (Wing & Gong / Lowe).

No maintained Python checker exists (Knossos is Clojure, Porcupine Go), so this
is the same search, small: for each key, find an order of the operations that
(1) respects real time -- an operation that returned before another was invoked
comes first -- and (2) is legal for a sequential register. The search is the
WGL algorithm with Lowe's memoization of (operations linearized, register
state): depth-first over the entries of the history, linearizing a pending
call when the model allows it, backtracking at a return whose call is not
linearized yet. Keys are independent (P-compositionality), so each is checked
on its own.

The register holds a value (``ABSENT`` when deleted or never written). Every
write in a history must write a distinct value, so a value names the write
that stored it (the runner maps versions to values for the same reason).

Operations (:class:`Operation`):

- ``read`` returned ``value``;
- ``write`` stored ``value`` (a blind put; a ``value`` of ABSENT is a delete);
- ``cas`` with ``ok=True`` found ``expected`` and stored ``value``
  (``expected`` ABSENT: ``if_absent``); with ``ok=False`` it found something
  else -- ``current`` when the failure named it, UNKNOWN_CURRENT when it did not.

An operation with no answer (``ret`` None: a timeout, a lost connection) may
have taken effect at any point after its call, or never: it is linearized only
if that helps. Definite refusals that changed nothing (other than a failed
condition, which observed the state) are left out of the history by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

ABSENT: object = None  # the register's state when the key has no live value
UNKNOWN_CURRENT = object()  # a failed CAS whose current value could not be named
READ, WRITE, CAS = "read", "write", "cas"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key: invoked at ``call``, answered at ``ret`` (None: never)."""

    key: bytes
    kind: str
    call: float
    ret: float | None
    value: object = ABSENT
    expected: object = ABSENT
    ok: bool = True
    current: object = UNKNOWN_CURRENT
    client: int = 0

    def describe(self) -> str:
        end = "?" if self.ret is None else f"{self.ret:.4f}"
        if self.kind == READ:
            what = f"read -> {self.value!r}"
        elif self.kind == WRITE:
            what = f"write {self.value!r}"
        elif self.ok:
            what = f"cas {self.expected!r} -> {self.value!r}"
        else:
            shown = "?" if self.current is UNKNOWN_CURRENT else repr(self.current)
            what = f"cas {self.expected!r} -> {self.value!r} FAILED (current {shown})"
        return f"[{self.call:.4f}, {end}] client {self.client}: {what}"


def step(state: object, op: Operation) -> tuple[bool, object]:
    """The sequential register: is ``op`` legal in ``state``, and the state after it."""
    if op.kind == READ:
        return state == op.value, state
    if op.kind == WRITE:
        return True, op.value
    if op.ok:
        return (True, op.value) if state == op.expected else (False, state)
    if state == op.expected:
        return False, state
    return op.current is UNKNOWN_CURRENT or state == op.current, state


@dataclass(slots=True)
class _Entry:
    """A call or return event in the doubly linked list the search walks."""

    op_index: int
    is_call: bool
    time: float
    match: _Entry | None = None  # a call's return entry (and back)
    prev: _Entry | None = None
    next: _Entry | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """Whether one key's history is linearizable; ``explanation`` says why not."""

    key: bytes
    ok: bool
    operations: int
    explanation: str = ""
    states_explored: int = 0


@dataclass
class _Search:
    ops: Sequence[Operation]
    initial: object
    explored: int = 0
    deepest: list[int] = field(default_factory=list)


DEFAULT_MAX_STATES = 2_000_000


def prune_unobserved(ops: Sequence[Operation]) -> list[Operation]:
    """``ops`` without the unanswered writes whose value nobody observed.

    Such a write changes nothing any linearization depends on: after it, until
    the next write, only ops that never mention its value could be legal (no
    read returned it, no CAS expected it, no failed CAS named it), and none of
    those needs it. Not so when a failed CAS could not name the value it found
    (UNKNOWN_CURRENT: that value may be an unanswered write's), so then nothing
    is pruned. Unanswered writes are what makes the search explode.
    """
    if any(op.kind == CAS and not op.ok and op.current is UNKNOWN_CURRENT for op in ops):
        return list(ops)
    observed = {op.value for op in ops if op.kind == READ}
    observed |= {op.expected for op in ops if op.kind == CAS}
    observed |= {op.current for op in ops if op.kind == CAS and not op.ok}
    return [
        op
        for op in ops
        if op.ret is not None or op.kind == READ or op.value in observed or op.value is ABSENT
    ]


def check_key(
    ops: Sequence[Operation], initial: object = ABSENT, *, max_states: int = DEFAULT_MAX_STATES
) -> Result:
    """Is this one key's history linearizable from ``initial``?

    Gives up (not ok, saying so) after ``max_states`` steps of the search
    rather than running for ever on a pathological history.
    """
    key = ops[0].key if ops else b""
    ops = prune_unobserved(ops)
    if not ops:
        return Result(key, True, 0)
    events: list[_Entry] = []
    for i, op in enumerate(ops):
        call = _Entry(i, True, op.call)
        ret = _Entry(i, False, math.inf if op.ret is None else op.ret)
        call.match, ret.match = ret, call
        events += (call, ret)
    # Calls before returns at equal times: touching intervals may be concurrent.
    events.sort(key=lambda e: (e.time, not e.is_call, e.op_index))
    head = _Entry(-1, True, -math.inf)
    prev = head
    for event in events:
        prev.next, event.prev = event, prev
        prev = event
    must = sum(op.ret is not None for op in ops)  # answered ops that must be linearized
    linearized = 0
    state = initial
    cache: set[tuple[int, object]] = set()
    stack: list[tuple[_Entry, object]] = []
    deepest: list[int] = []
    explored = 0
    entry: _Entry | None = head.next
    while must:
        assert entry is not None
        if entry.is_call:
            op = ops[entry.op_index]
            legal, after = step(state, op)
            if legal:
                bit = linearized | (1 << entry.op_index)
                explored += 1
                if explored > max_states:
                    why = f"search gave up after {max_states} states: inconclusive"
                    return Result(key, False, len(ops), why, explored)
                if (bit, after) not in cache:
                    cache.add((bit, after))
                    stack.append((entry, state))
                    state, linearized = after, bit
                    must -= op.ret is not None
                    _lift(entry)
                    if len(stack) > len(deepest):
                        deepest = [e.op_index for e, _ in stack]
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:  # this return's op fits nowhere before it
                return Result(key, False, len(ops), _explain(ops, deepest), explored)
            entry, state = stack.pop()
            op = ops[entry.op_index]
            linearized &= ~(1 << entry.op_index)
            must += op.ret is not None
            _unlift(entry)
            entry = entry.next
    return Result(key, True, len(ops), "", explored)


def _lift(entry: _Entry) -> None:
    for e in (entry, entry.match):
        assert e is not None and e.prev is not None
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev


def _unlift(entry: _Entry) -> None:
    for e in (entry.match, entry):
        assert e is not None and e.prev is not None
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e


def _explain(ops: Sequence[Operation], deepest: list[int]) -> str:
    done = set(deepest)
    lines = ["longest linearizable prefix found:"]
    lines += [f"  {ops[i].describe()}" for i in deepest[-10:]]
    left = sorted((op for i, op in enumerate(ops) if i not in done), key=lambda o: o.call)
    lines.append("then none of these fits (in call order):")
    lines += [f"  {op.describe()}" for op in left[:10]]
    return "\n".join(lines)


def check(ops: Iterable[Operation], initial: object = ABSENT) -> list[Result]:
    """``check_key`` for every key of a history; the failing results first."""
    by_key: dict[bytes, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    results = [check_key(key_ops, initial) for key_ops in by_key.values()]
    return sorted(results, key=lambda r: (r.ok, r.key))
