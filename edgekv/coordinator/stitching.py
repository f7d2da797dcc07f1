"""Splitting a multi-key or range request by placement, and merging the answers.

Pure functions over keys, ranges and placement rules: no I/O, no event loop, so
the rules of fan-out and merge are tested on their own. The coordinator asks
these where each part of a request is served, sends each part there, and merges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgekv.cluster.placement import PlacementRules
from edgekv.errors import InvalidArgument
from edgekv.keyrange import intersect, overlaps, prefix_range
from edgekv.storage.batch import DeleteOp, PutOp


def split_keys(
    keys: Sequence[bytes], is_local: Callable[[bytes], bool], placement_of: Callable[[bytes], bytes]
) -> tuple[list[int], dict[bytes, list[int]]]:
    """Positions of ``keys`` served here, and of the rest by placement.

    Linear in ``len(keys)``: one placement lookup per key.
    """
    local: list[int] = []
    remote: dict[bytes, list[int]] = {}
    for i, key in enumerate(keys):
        if is_local(key):
            local.append(i)
        else:
            remote.setdefault(placement_of(key), []).append(i)
    return local, remote


def remote_ranges(
    lo: bytes, hi: bytes, placement: PlacementRules, region: str
) -> list[tuple[bytes, bytes, bytes]]:
    """(start, end, rule prefix) of each part of [lo, hi) that ``region`` may not hold."""
    parts = []
    for rule in placement.rules:
        if region in rule.regions:
            continue
        r_lo, r_hi = prefix_range(rule.prefix)
        if overlaps(lo, hi, r_lo, r_hi):
            start, end = intersect(lo, hi, r_lo, r_hi)
            parts.append((start, end, rule.prefix))
    return parts


def local_ranges(
    lo: bytes, hi: bytes, refused: Sequence[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The parts of [lo, hi) outside every ``refused`` range, in key order.

    ``refused`` is sorted and disjoint (``PlacementRules.refused_ranges``): what
    this node may not hold. A stitched scan reads only these parts locally, so a
    stale local copy of a range owned elsewhere (left by a rule change) is never
    served ahead of the owner's.
    """
    parts: list[tuple[bytes, bytes]] = []
    cursor = lo
    for start, end in refused:
        if not overlaps(cursor, hi, start, end):
            if hi and start >= hi:
                break
            continue
        if cursor < start:
            parts.append((cursor, start))
        if not end:
            return parts
        cursor = max(cursor, end)
        if hi and cursor >= hi:
            return parts
    parts.append((cursor, hi))
    return parts


def write_target(
    ops: Sequence[PutOp | DeleteOp],
    is_local: Callable[[bytes], bool],
    placement_of: Callable[[bytes], bytes],
) -> bytes | None:
    """None to apply ``ops`` here, or a key whose placement serves the whole batch.

    A batch is atomic on one node only, so it must fall in one placement (or
    all in placements this node holds). A batch that spans placements held by
    different nodes is refused rather than applied half here, half there.
    """
    placements = {placement_of(op.key): op.key for op in ops}
    if all(is_local(key) for key in placements.values()):
        return None
    if len(placements) == 1:
        return next(iter(placements.values()))
    shown = ", ".join(repr(p.decode("utf-8", "replace") or "(global)") for p in sorted(placements))
    raise InvalidArgument(
        f"batch spans placement groups {shown} that are held by different regions; a Write "
        f"is atomic only within one placement, so split it into one Write per placement"
    )


class ScanSource:
    """One source's page of a stitched scan: its items and where it would resume."""

    __slots__ = ("items", "resume")

    def __init__(self, items: list[Any], resume: bytes) -> None:
        self.items = items  # objects with a ``key`` attribute, in key order
        self.resume = resume  # b"" when the source has nothing more in its range


def merge_scan_pages(sources: Sequence[ScanSource], limit: int) -> tuple[list[Any], bytes]:
    """Merge pages of several sources into one page of at most ``limit`` items.

    Items are deduplicated by key (nested placement rules can make two sources
    hold one key; any holder's copy converges to the same value). Nothing is
    emitted past the lowest point where a source still has more, so no key is
    skipped; the returned token resumes exactly there.
    """
    cut = min((s.resume for s in sources if s.resume), default=b"")
    merged: dict[bytes, Any] = {}
    for source in sources:
        for item in source.items:
            if (not cut or item.key < cut) and item.key not in merged:
                merged[item.key] = item
    items = [merged[k] for k in sorted(merged)]
    if len(items) > limit:
        items = items[:limit]
        return items, items[-1].key + b"\x00"
    return items, cut
