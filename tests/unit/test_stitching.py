"""The pure split and merge rules of the request layer (coordinator/stitching.py)."""

from __future__ import annotations

import pytest

from edgekv.cluster.placement import PlacementRule, PlacementRules
from edgekv.coordinator.stitching import (
    ScanSource,
    merge_scan_pages,
    remote_ranges,
    split_keys,
    split_range,
    write_target,
)
from edgekv.errors import InvalidArgument
from edgekv.storage.batch import DeleteOp, PutOp

REGIONS = ("eu", "us", "ap")
PLACEMENT = PlacementRules(
    [PlacementRule(b"eu/", ("eu",)), PlacementRule(b"jp/", ("ap",))], REGIONS
)


def is_local_in(region: str):  # type: ignore[no-untyped-def]
    return lambda key: region in PLACEMENT.regions_for(key)


def test_split_keys_groups_foreign_keys_by_placement_keeping_positions() -> None:
    keys = [b"eu/1", b"g/1", b"jp/1", b"eu/2", b"g/2"]
    local, remote = split_keys(keys, is_local_in("us"), PLACEMENT.placement_of)
    assert local == [1, 4]
    assert remote == {b"eu/": [0, 3], b"jp/": [2]}


def test_split_keys_many_foreign_keys_is_linear() -> None:
    keys = [b"eu/%06d" % i for i in range(200_000)]
    local, remote = split_keys(keys, is_local_in("us"), PLACEMENT.placement_of)
    assert local == [] and len(remote[b"eu/"]) == 200_000


def test_remote_ranges_only_the_foreign_parts_of_a_range() -> None:
    assert remote_ranges(b"", b"", PLACEMENT, "us") == [
        (b"eu/", b"eu0", b"eu/"),
        (b"jp/", b"jp0", b"jp/"),
    ]
    assert remote_ranges(b"eu/m", b"f", PLACEMENT, "us") == [(b"eu/m", b"eu0", b"eu/")]
    assert remote_ranges(b"", b"", PLACEMENT, "eu") == [(b"jp/", b"jp0", b"jp/")]
    assert remote_ranges(b"a", b"b", PLACEMENT, "us") == []


NESTED = PlacementRules(
    [PlacementRule(b"eu/", ("eu",)), PlacementRule(b"eu/us/", ("us",))], REGIONS
)


def test_split_range_nested_rule_held_here_is_not_sent_away() -> None:
    local, remote = split_range(b"eu/", b"eu0", NESTED, "us")
    assert remote == [(b"eu/", b"eu/us/", b"eu/"), (b"eu/us0", b"eu0", b"eu/")]
    assert local == [(b"eu/us/", b"eu/us0")]


def test_split_range_the_owner_sees_the_nested_part_as_remote() -> None:
    local, remote = split_range(b"eu/", b"eu0", NESTED, "eu")
    assert local == [(b"eu/", b"eu/us/"), (b"eu/us0", b"eu0")]
    assert remote == [(b"eu/us/", b"eu/us0", b"eu/us/")]


def test_split_range_unbounded_covers_everything_once() -> None:
    local, remote = split_range(b"", b"", NESTED, "ap")
    assert local == [(b"", b"eu/"), (b"eu0", b"")]
    assert remote == [(b"eu/", b"eu/us/", b"eu/"), (b"eu/us/", b"eu/us0", b"eu/us/"),
                      (b"eu/us0", b"eu0", b"eu/")]  # fmt: skip


def test_write_target_local_batch_stays_here() -> None:
    assert write_target([PutOp(b"g/1", b"x"), DeleteOp(b"eu/1")], is_local_in("eu"),
                        PLACEMENT.placement_of) is None  # fmt: skip


def test_write_target_one_foreign_placement_goes_there() -> None:
    ops = [PutOp(b"eu/1", b"x"), DeleteOp(b"eu/2")]
    assert write_target(ops, is_local_in("us"), PLACEMENT.placement_of) in (b"eu/1", b"eu/2")


def test_write_target_placements_held_apart_refused_naming_them() -> None:
    with pytest.raises(InvalidArgument, match=r"'eu/', 'jp/'"):
        write_target([PutOp(b"eu/1", b"x"), PutOp(b"jp/1", b"y")], is_local_in("us"),
                     PLACEMENT.placement_of)  # fmt: skip


class _Item:
    def __init__(self, key: bytes) -> None:
        self.key = key


def test_merge_scan_pages_stops_at_lowest_resume_point() -> None:
    a = ScanSource([_Item(b"a1"), _Item(b"a2"), _Item(b"c9")], resume=b"c9\x00", served_by="A")
    b = ScanSource([_Item(b"b1"), _Item(b"d1")], resume=b"d1\x00", served_by=["B1", "B2"])
    items, token, held_by = merge_scan_pages([a, b], limit=10)
    assert [i.key for i in items] == [b"a1", b"a2", b"b1", b"c9"]
    assert token == b"c9\x00"
    assert held_by == ["A", "A", "B1", "A"]


def test_merge_scan_pages_deduplicates_keys_held_by_two_sources() -> None:
    a = ScanSource([_Item(b"k1"), _Item(b"k2")], resume=b"")
    b = ScanSource([_Item(b"k2"), _Item(b"k3")], resume=b"")
    items, token, _ = merge_scan_pages([a, b], limit=2)
    assert [i.key for i in items] == [b"k1", b"k2"]
    assert token == b"k2\x00"


def test_split_range_local_parts_exclude_every_refused_range() -> None:
    def local(lo: bytes, hi: bytes) -> list[tuple[bytes, bytes]]:
        return split_range(lo, hi, PLACEMENT, "us")[0]

    assert local(b"", b"") == [(b"", b"eu/"), (b"eu0", b"jp/"), (b"jp0", b"")]
    assert local(b"eu/m", b"f") == [(b"eu0", b"f")]
    assert local(b"eu/a", b"eu/z") == []
    assert local(b"a", b"b") == [(b"a", b"b")]
