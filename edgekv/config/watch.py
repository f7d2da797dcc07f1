"""The ``watch:`` section of the cluster file: the change feed's retention and Watch pacing.

Every PoP keeps a durable change feed (storage/feed.py) that resumable Watches
replay from. It is trimmed, oldest first, past any of the bounds below; a
resume token that needs a trimmed entry is OUT_OF_RANGE (rescan and resume).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from edgekv.config.values import as_int, as_mapping, check_keys


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Feed retention (entries, bytes, age) and how a Watch paces progress and failover."""

    feed_max_entries: int = 1_000_000
    feed_max_bytes: int = 256 * 1024 * 1024
    feed_max_age_s: int = 24 * 3600
    # An idle Watch (nothing delivered for this long) gets a progress event
    # carrying a fresh resume token, so a resume replays little.
    progress_interval_ms: int = 5_000
    # A token from another PoP waits up to this long for this PoP to apply what
    # the token has seen before replaying (failover).
    failover_wait_ms: int = 2_000
    trim_interval_ms: int = 1_000


def parse_watch(value: object) -> WatchSettings:
    if value is None:
        return WatchSettings()
    entry = as_mapping(value, "watch")
    names = tuple(f.name for f in fields(WatchSettings))
    check_keys(entry, "watch", required=(), optional=names)
    return WatchSettings(**{k: as_int(v, f"watch.{k}", minimum=1) for k, v in entry.items()})
