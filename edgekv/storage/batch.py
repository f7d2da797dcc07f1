"""The operations of one local write (``Engine.write``) and their validation.

A batch is validated whole before the engine takes its write lock, so an
invalid batch writes nothing and costs the writers behind it nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from edgekv.errors import InvalidArgument
from edgekv.limits import Limits
from edgekv.storage.conditions import Condition

MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000  # ten years: beyond that it is a bug, not a TTL


class PutOp(NamedTuple):
    """One put in a ``write`` batch. ``ttl_ms`` 0 means no expiry.

    ``condition`` (storage/conditions.py) must hold for the batch to be applied.
    """

    key: bytes
    value: bytes
    ttl_ms: int = 0
    condition: Condition | None = None


class DeleteOp(NamedTuple):
    """One delete in a ``write`` batch: it writes a tombstone (``condition`` as for PutOp)."""

    key: bytes
    condition: Condition | None = None


def conditions_of(ops: Sequence[PutOp | DeleteOp]) -> list[tuple[bytes, Condition]]:
    """(key, condition) of every op of a batch that carries one, in order."""
    return [(op.key, op.condition) for op in ops if op.condition is not None]


# A validated op: (key, tombstone, expires_at_ms, value), ready to encode.
StagedOp = tuple[bytes, bool, int, bytes]


def validate(
    ops: Sequence[PutOp | DeleteOp], now_ms: int, limits: Limits, *, conditional: bool = False
) -> list[StagedOp]:
    """Check a batch against ``limits``; return one StagedOp per op, in order.

    A key may appear once per batch (two writes with one version would
    replicate ambiguously). Ops may carry conditions only when ``conditional``
    (the caller checks them under the write lock: ``Engine.write``); a group
    commit would not. Raises InvalidArgument naming the op at fault.
    """
    limits.check_batch(len(ops))
    staged: list[StagedOp] = []
    seen: set[bytes] = set()
    for i, op in enumerate(ops):
        if not isinstance(op, PutOp | DeleteOp):
            raise InvalidArgument(f"ops[{i}] is {type(op).__name__}; expected PutOp or DeleteOp")
        key = op.key
        limits.check_key(key)
        if key in seen:
            raise InvalidArgument(f"ops[{i}]: key {key[:64]!r} appears twice in one batch")
        seen.add(key)
        if op.condition is not None and not conditional:
            raise InvalidArgument(f"ops[{i}] carries a condition; conditional batches go alone")
        if isinstance(op, PutOp):
            limits.check_value(op.value)
            staged.append((key, False, _expiry(op.ttl_ms, now_ms, i), op.value))
        else:
            staged.append((key, True, 0, b""))
    return staged


def _expiry(ttl_ms: int, now_ms: int, index: int) -> int:
    if not isinstance(ttl_ms, int) or isinstance(ttl_ms, bool):
        raise InvalidArgument(f"ops[{index}].ttl_ms must be an integer")
    if ttl_ms < 0 or ttl_ms > MAX_TTL_MS:
        raise InvalidArgument(
            f"ops[{index}].ttl_ms is {ttl_ms}; it must be 0 (no expiry) to {MAX_TTL_MS}"
        )
    return now_ms + ttl_ms if ttl_ms else 0
