"""Paging a scan stitched from several sources returns every key exactly once, in order."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv.cluster.placement import PlacementRule, PlacementRules
from edgekv.coordinator.stitching import ScanSource, merge_scan_pages, split_range


class _Item:
    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key


def _page(keys: list[bytes], start: bytes, limit: int) -> ScanSource:
    """One source's page from ``start``, as a node's scan returns it."""
    rest = [k for k in keys if k >= start]
    page = rest[:limit]
    resume = page[-1] + b"\x00" if len(rest) > limit else b""
    return ScanSource([_Item(k) for k in page], resume)


@settings(max_examples=300, deadline=None)
@given(
    sources=st.lists(
        st.lists(st.binary(min_size=1, max_size=3), max_size=30).map(lambda ks: sorted(set(ks))),
        min_size=1,
        max_size=4,
    ),
    limit=st.integers(min_value=1, max_value=8),
)
def test_stitched_paging_returns_every_key_once_in_order(
    sources: list[list[bytes]], limit: int
) -> None:
    expected = sorted({k for keys in sources for k in keys})
    seen: list[bytes] = []
    token = b""
    for _ in range(len(expected) + 2):
        page, token, _ = merge_scan_pages([_page(keys, token, limit) for keys in sources], limit)
        assert len(page) <= limit
        seen += [item.key for item in page]
        if not token:
            break
    assert seen == expected


_REGIONS = ("a", "b", "c")
_BYTES = st.sampled_from([0x00, 0x01, ord("a"), ord("b"), 0xFF])
_keys = st.lists(_BYTES, max_size=4).map(bytes)


@settings(max_examples=300, deadline=None)
@given(
    rules=st.dictionaries(
        st.lists(st.sampled_from([ord("a"), ord("b"), 0xFF]), min_size=1, max_size=3).map(bytes),
        st.sets(st.sampled_from(_REGIONS), min_size=1).map(tuple),
        max_size=5,
    ),
    region=st.sampled_from(_REGIONS),
    bounds=st.tuples(_keys, _keys),
    probes=st.lists(_keys, max_size=30),
)
def test_split_range_parts_tile_the_range_and_agree_with_placement(
    rules: dict[bytes, tuple[str, ...]],
    region: str,
    bounds: tuple[bytes, bytes],
    probes: list[bytes],
) -> None:
    placement = PlacementRules([PlacementRule(p, r) for p, r in rules.items()], _REGIONS)
    lo, hi = sorted(bounds)
    if hi and lo >= hi:
        return
    local, remote = split_range(lo, hi, placement, region)
    parts = sorted([(s, e, None) for s, e in local] + list(remote), key=lambda p: p[0])
    assert parts[0][0] == lo and parts[-1][1] == hi
    for (_, end, _), (start, _, _) in itertools.pairwise(parts):
        assert end == start  # no gap, no overlap
    for key in probes:
        if key < lo or (hi and key >= hi):
            continue
        (start, end, owner) = next(p for p in parts if p[0] <= key and (not p[1] or key < p[1]))
        if owner is None:
            assert placement.allows(key, region)
        else:
            assert not placement.allows(key, region)
            assert placement.placement_of(key) == owner
