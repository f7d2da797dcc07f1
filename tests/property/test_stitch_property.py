"""Paging a scan stitched from several sources returns every key exactly once, in order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv.coordinator.stitching import ScanSource, merge_scan_pages


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
