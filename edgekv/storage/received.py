"""Sorting records received from peers before the engine applies them (``Engine.apply_many``).

Last-writer-wins by version (timestamp, origin): of the records for one key,
in the batch and in the store, only the greatest may be written. Records too
far ahead of this node's clock are sorted out first when the caller asks for
it (quarantine.py keeps them), so they neither win now nor block the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from edgekv import native
from edgekv.storage.quarantine import Skewed


@dataclass(slots=True)
class Sorted:
    """What ``sort_received`` found; owned by one ``apply_many`` call."""

    winners: dict[bytes, tuple[tuple[int, str], bytes]] = field(default_factory=dict)
    stored_of: dict[bytes, bytes | None] = field(default_factory=dict)  # key -> stored record
    skewed: list[Skewed] = field(default_factory=list)
    max_ts: int = 0  # greatest timestamp among the records not set aside (0: none)

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, record) of each winner."""
        return ((key, record) for key, (_, record) in self.winners.items())


def sort_received(
    entries: Iterable[tuple[bytes, bytes]],
    *,
    check_key: Callable[[bytes], None],
    get_stored: Callable[[bytes], bytes | None],
    skew_limit: int,
) -> Sorted:
    """Validate every (key, record) and keep, per key, the one that beats the stored version.

    Raises (InvalidArgument, CorruptRecord) on the first bad key or record.
    With ``skew_limit`` > 0 (``HybridClock.skew_limit``), records with a
    timestamp at or above it go to ``skewed`` instead. The caller holds the
    engine's write lock.
    """
    record_version = native.record_version
    out = Sorted()
    winners, stored_of = out.winners, out.stored_of
    for key, record in entries:
        check_key(key)
        version = record_version(record)  # raises CorruptRecord on junk
        if skew_limit and version[0] >= skew_limit:
            out.skewed.append((key, record, version))
            continue
        out.max_ts = max(out.max_ts, version[0])
        current = winners.get(key)
        if current is None:
            stored = stored_of[key] = get_stored(key)
            if stored is not None and record_version(stored) >= version:
                continue
        elif current[0] >= version:
            continue
        winners[key] = (version, record)
    return out
