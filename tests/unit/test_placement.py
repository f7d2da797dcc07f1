"""Placement rules (longest prefix wins, global default) and great-circle distance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgekv.cluster.geo import EARTH_RADIUS_KM, great_circle_km
from edgekv.cluster.placement import GLOBAL, PlacementRule, PlacementRules
from edgekv.config.loader import parse_config
from edgekv.errors import InvalidArgument

REGIONS = ("eu-west", "eu-central", "us-east", "ap-northeast")
EVERYWHERE = frozenset(REGIONS)
FRANKFURT = (50.11, 8.68)
ASHBURN = (38.95, -77.45)


def rules(*pairs: tuple[bytes, tuple[str, ...]]) -> PlacementRules:
    return PlacementRules([PlacementRule(p, r) for p, r in pairs], REGIONS)


@pytest.fixture
def eu_rules() -> PlacementRules:
    return rules(
        (b"eu/", ("eu-west", "eu-central")),
        (b"eu/de/", ("eu-central",)),
        (b"jp/", ("ap-northeast",)),
    )


# -- regions_for -------------------------------------------------------------------


def test_regions_for_unmatched_key_is_global(eu_rules: PlacementRules) -> None:
    assert eu_rules.regions_for(b"us/alice") == EVERYWHERE
    assert eu_rules.regions_for(b"e") == EVERYWHERE
    assert eu_rules.regions_for(b"") == EVERYWHERE


def test_regions_for_no_rules_everything_global() -> None:
    placement = rules()
    assert placement.is_global()
    assert placement.regions_for(b"eu/x") == EVERYWHERE
    assert placement.rule_for(b"eu/x") is None


def test_regions_for_longest_prefix_wins(eu_rules: PlacementRules) -> None:
    assert eu_rules.regions_for(b"eu/de/berlin") == {"eu-central"}
    assert eu_rules.regions_for(b"eu/fr/paris") == {"eu-west", "eu-central"}
    assert eu_rules.regions_for(b"jp/tokyo") == {"ap-northeast"}


def test_regions_for_rule_order_irrelevant() -> None:
    forward = rules((b"a", ("eu-west",)), (b"ab", ("us-east",)), (b"abc", ("ap-northeast",)))
    backward = rules((b"abc", ("ap-northeast",)), (b"ab", ("us-east",)), (b"a", ("eu-west",)))
    for key in (b"a", b"ab", b"abc", b"abcd", b"ax", b"b"):
        assert forward.regions_for(key) == backward.regions_for(key)
    assert forward.regions_for(b"abz") == {"us-east"}


def test_regions_for_key_equal_to_prefix_matches(eu_rules: PlacementRules) -> None:
    assert eu_rules.regions_for(b"eu/de/") == {"eu-central"}
    assert eu_rules.regions_for(b"eu/") == {"eu-west", "eu-central"}


def test_regions_for_key_shorter_than_prefix_falls_back(eu_rules: PlacementRules) -> None:
    assert eu_rules.regions_for(b"eu/de") == {"eu-west", "eu-central"}
    assert eu_rules.regions_for(b"eu") == EVERYWHERE


def test_regions_for_binary_and_utf8_prefixes() -> None:
    placement = rules(("ü/".encode(), ("eu-west",)), (b"\x00\xff", ("us-east",)))
    assert placement.regions_for("ü/x".encode()) == {"eu-west"}
    assert placement.regions_for(b"\x00\xff\x01") == {"us-east"}
    assert placement.regions_for(b"\x00") == EVERYWHERE


# -- allows, rule_for, placement_of ------------------------------------------------------


def test_allows_only_listed_regions(eu_rules: PlacementRules) -> None:
    assert eu_rules.allows(b"eu/de/x", "eu-central")
    assert not eu_rules.allows(b"eu/de/x", "eu-west")
    assert eu_rules.allows(b"global", "us-east")
    assert not eu_rules.allows(b"global", "mars")


def test_rule_for_returns_longest_rule_or_none(eu_rules: PlacementRules) -> None:
    rule = eu_rules.rule_for(b"eu/de/x")
    assert rule == PlacementRule(b"eu/de/", ("eu-central",))
    assert eu_rules.rule_for(b"us/x") is None


def test_placement_of_is_rule_prefix_or_global(eu_rules: PlacementRules) -> None:
    assert eu_rules.placement_of(b"eu/de/x") == b"eu/de/"
    assert eu_rules.placement_of(b"eu/fr/x") == b"eu/"
    assert eu_rules.placement_of(b"us/x") == GLOBAL == b""


def test_placements_shared_by_regions_that_may_hold_them(eu_rules: PlacementRules) -> None:
    assert eu_rules.placements_shared_by({"eu-west", "eu-central"}) == [b"", b"eu/"]
    assert eu_rules.placements_shared_by({"eu-central"}) == [b"", b"eu/", b"eu/de/"]
    assert eu_rules.placements_shared_by({"us-east", "ap-northeast"}) == [b""]
    assert eu_rules.placements_shared_by({"mars"}) == []


# -- fingerprint ---------------------------------------------------------------------


def test_fingerprint_ignores_rule_and_region_order() -> None:
    a = rules((b"eu/", ("eu-west", "eu-central")), (b"jp/", ("ap-northeast",)))
    b = rules((b"jp/", ("ap-northeast",)), (b"eu/", ("eu-central", "eu-west")))
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 16


def test_fingerprint_changes_with_rules() -> None:
    base = rules((b"eu/", ("eu-west",)))
    assert base.fingerprint() != rules().fingerprint()
    assert base.fingerprint() != rules((b"eu/", ("eu-central",))).fingerprint()
    assert base.fingerprint() != rules((b"eu", ("eu-west",))).fingerprint()
    assert base.fingerprint() != rules((b"eu/", ("eu-west", "us-east"))).fingerprint()


# -- construction --------------------------------------------------------------------


def test_from_config_uses_rules_and_every_region() -> None:
    config = parse_config(
        {
            "cluster": "c",
            "regions": [
                {"name": "eu-west", "location": [50.11, 8.68]},
                {"name": "us-east", "location": [38.95, -77.45]},
            ],
            "nodes": [
                {"id": "fra-1", "region": "eu-west", "listen": "h:1", "data_dir": "a"},
                {"id": "iad-1", "region": "us-east", "listen": "h:2", "data_dir": "b"},
            ],
            "placement": [{"prefix": "eu/", "regions": ["eu-west"]}],
        },
        Path("/tmp"),
    )
    placement = PlacementRules.from_config(config)
    assert placement.regions_for(b"eu/x") == {"eu-west"}
    assert placement.regions_for(b"x") == {"eu-west", "us-east"}
    assert placement.rules == config.placement


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([(b"", ("eu-west",))], "empty prefix"),
        ([(b"eu/", ("eu-west",)), (b"eu/", ("us-east",))], "duplicate placement prefix b'eu/'"),
        ([(b"eu/", ())], "allows no region"),
        ([(b"eu/", ("eu-wst",))], "names unknown regions eu-wst (known: ap-northeast, eu-c"),
    ],
)
def test_init_invalid_rules_rejected(
    bad: list[tuple[bytes, tuple[str, ...]]], message: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        rules(*bad)
    assert message in str(info.value)


# -- great_circle_km -----------------------------------------------------------------


def test_great_circle_km_frankfurt_to_ashburn_about_6500() -> None:
    assert great_circle_km(FRANKFURT, ASHBURN) == pytest.approx(6500, rel=0.02)


def test_great_circle_km_symmetric_and_zero_on_same_point() -> None:
    assert great_circle_km(FRANKFURT, ASHBURN) == pytest.approx(great_circle_km(ASHBURN, FRANKFURT))
    assert great_circle_km(FRANKFURT, FRANKFURT) == 0.0


def test_great_circle_km_antipodes_half_circumference() -> None:
    half = math.pi * EARTH_RADIUS_KM
    assert great_circle_km((0.0, 0.0), (0.0, 180.0)) == pytest.approx(half)
    assert great_circle_km((90.0, 0.0), (-90.0, 0.0)) == pytest.approx(half)


def test_great_circle_km_across_antimeridian_short_way() -> None:
    # 1 degree of longitude on the equator, not 359.
    one_degree = math.pi * EARTH_RADIUS_KM / 180
    assert great_circle_km((0.0, 179.5), (0.0, -179.5)) == pytest.approx(one_degree)


# -- refused_ranges ------------------------------------------------------------------


def test_refused_ranges_follow_nested_rules(eu_rules: PlacementRules) -> None:
    assert eu_rules.refused_ranges("us-east") == [(b"eu/", b"eu0"), (b"jp/", b"jp0")]
    assert eu_rules.refused_ranges("eu-west") == [(b"eu/de/", b"eu/de0"), (b"jp/", b"jp0")]
    assert eu_rules.refused_ranges("eu-central") == [(b"jp/", b"jp0")]
    assert rules().refused_ranges("us-east") == []


def test_refused_ranges_hole_for_a_nested_rule_that_allows_the_region() -> None:
    nested = rules(
        (b"eu/", ("eu-west",)), (b"eu/pub/", ("eu-west", "us-east")), (b"\xff", ("eu-west",))
    )
    assert nested.refused_ranges("us-east") == [
        (b"eu/", b"eu/pub/"),
        (b"eu/pub0", b"eu0"),
        (b"\xff", b""),
    ]


def test_refused_ranges_agree_with_allows_key_by_key(eu_rules: PlacementRules) -> None:
    keys = [b"", b"a", b"eu", b"eu/", b"eu/a", b"eu/de", b"eu/de/", b"eu/de/x", b"eu/df"]
    keys += [b"eu0", b"jp", b"jp/", b"jp/\xff", b"jp0", b"z", b"\xff\xff"]
    for region in REGIONS:
        refused = eu_rules.refused_ranges(region)
        for key in keys:
            inside = any(key >= lo and (not hi or key < hi) for lo, hi in refused)
            assert inside == (not eu_rules.allows(key, region)), (region, key)
