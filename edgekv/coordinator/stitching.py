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
from edgekv.keyrange import prefix_range
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


def split_range(
    lo: bytes, hi: bytes, placement: PlacementRules, region: str
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes, bytes]]]:
    """[lo, hi) cut into the parts ``region`` may hold and the parts it may not.

    Returns ``(local, remote)``: local parts as (start, end), remote parts as
    (start, end, placement) where placement is the rule prefix that governs the
    part (its routing key). Nested rules are honoured: with ``eu/`` pinned to the
    EU and ``eu/us/`` to the US, a US node's remote part of ``eu/`` is
    [eu/, eu/us/) + [eu/us0, eu0), never the US-held middle. Adjacent parts with
    the same owner are merged; an end of b"" means unbounded.
    """
    # Between two consecutive rule edges every key matches the same rules, so
    # the first key of each elementary interval names its placement.
    cuts = {lo}
    for rule in placement.rules:
        for edge in prefix_range(rule.prefix):
            if edge > lo and (not hi or edge < hi):
                cuts.add(edge)
    points = sorted(cuts)
    local: list[tuple[bytes, bytes]] = []
    remote: list[tuple[bytes, bytes, bytes]] = []
    for i, start in enumerate(points):
        end = points[i + 1] if i + 1 < len(points) else hi
        if region in placement.regions_for(start):
            if local and local[-1][1] == start:
                local[-1] = (local[-1][0], end)
            else:
                local.append((start, end))
        else:
            owner = placement.placement_of(start)
            if remote and remote[-1][1] == start and remote[-1][2] == owner:
                remote[-1] = (remote[-1][0], end, owner)
            else:
                remote.append((start, end, owner))
    return local, remote


def remote_ranges(
    lo: bytes, hi: bytes, placement: PlacementRules, region: str
) -> list[tuple[bytes, bytes, bytes]]:
    """(start, end, placement) of each part of [lo, hi) that ``region`` may not hold."""
    return split_range(lo, hi, placement, region)[1]


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
    """One source's page of a stitched scan: its items, where it would resume, and
    which node served each item (one id for the page, or one per item)."""

    __slots__ = ("items", "resume", "served_by")

    def __init__(self, items: list[Any], resume: bytes, served_by: str | list[str] = "") -> None:
        self.items = items  # objects with a ``key`` attribute, in key order
        self.resume = resume  # b"" when the source has nothing more in its range
        self.served_by = served_by

    def holders(self) -> list[str]:
        """The node that served each item, in item order."""
        if isinstance(self.served_by, str):
            return [self.served_by] * len(self.items)
        return self.served_by


def merge_scan_pages(
    sources: Sequence[ScanSource], limit: int
) -> tuple[list[Any], bytes, list[str]]:
    """Merge pages of several sources into one page of at most ``limit`` items.

    Returns the items, the token that resumes after them, and the node that
    served each item. Items are deduplicated by key (nested placement rules can
    make two sources hold one key; any holder's copy converges to the same
    value; the first source listed wins). Nothing is emitted past the lowest
    point where a source still has more, so no key is skipped; the returned
    token resumes exactly there.
    """
    cut = min((s.resume for s in sources if s.resume), default=b"")
    merged: dict[bytes, tuple[Any, str]] = {}
    for source in sources:
        for item, holder in zip(source.items, source.holders(), strict=True):
            if (not cut or item.key < cut) and item.key not in merged:
                merged[item.key] = (item, holder)
    ordered = [merged[k] for k in sorted(merged)]
    if len(ordered) > limit:
        ordered = ordered[:limit]
        cut = ordered[-1][0].key + b"\x00"
    return [item for item, _ in ordered], cut, [holder for _, holder in ordered]
