"""Conditions on a write (compare-and-set), checked atomically with it.

A :class:`Condition` rides on a ``PutOp`` or ``DeleteOp`` (storage/batch.py).
``Engine.write`` checks every condition of its batch under the engine's write
lock, against the stored records, immediately before staging the batch: no
other local write or apply can come between the check and the write, so a
batch whose conditions hold is applied as if at the instant they were checked.
Conditions mean something only where one node orders every write to the key
(its home: coordinator/home.py); the request layer refuses them elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from edgekv import native
from edgekv.errors import ConditionFailed
from edgekv.storage.clock import wall_ms
from edgekv.storage.record import Version


class Condition(NamedTuple):
    """Exactly one check: ``if_absent`` (no live value) or ``if_version`` (the live value's)."""

    if_absent: bool = False
    if_version: Version | None = None

    def describe(self) -> str:
        if self.if_version is not None:
            return f"if_version {self.if_version.timestamp}:{self.if_version.origin}"
        return "if_absent"


IF_ABSENT = Condition(if_absent=True)


def live_version(record: bytes | None, now_ms: int) -> Version | None:
    """The version of the live value a stored record holds; None if tombstone or expired."""
    if record is None:
        return None
    tombstone, timestamp, expires_at_ms, origin, _ = native.decode_record(record)
    if tombstone or (expires_at_ms and expires_at_ms <= now_ms):
        return None
    return Version(timestamp, origin)


def check_conditions(
    conditioned: Sequence[tuple[bytes, Condition]], get_record: Callable[[bytes], bytes | None]
) -> None:
    """Raise ConditionFailed for the first (key, condition) that does not hold.

    ``get_record`` returns a key's raw stored record (tombstones included). The
    caller holds the engine's write lock, so what it reads is what the write
    would replace. The message names the key, the condition and the current
    version, which the error also carries (``current_version``).
    """
    now = wall_ms()
    for key, condition in conditioned:
        current = live_version(get_record(key), now)
        if condition.if_version is not None:
            holds = current is not None and tuple(current) == tuple(condition.if_version)
        else:
            holds = current is None
        if not holds:
            shown = "no live value" if current is None else f"{current.timestamp}:{current.origin}"
            raise ConditionFailed(
                f"condition failed: key {key[:64]!r} {condition.describe()} does not hold; "
                f"its current version is {shown}",
                key,
                current,
            )
