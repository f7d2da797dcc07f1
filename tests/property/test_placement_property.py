"""PlacementRules agrees with a brute-force longest-prefix scan on random rule sets."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from edgekv.cluster.placement import GLOBAL, PlacementRule, PlacementRules

REGIONS = ("r0", "r1", "r2", "r3")

# A tiny alphabet makes prefixes nest and keys hit them often; the high byte
# keeps non-ASCII in play.
_ALPHABET = [0x00, ord("a"), ord("b"), ord("/"), 0xFF]
_bytes = st.lists(st.sampled_from(_ALPHABET), max_size=6).map(bytes)
_prefixes = _bytes.filter(bool)
_region_sets = st.lists(st.sampled_from(REGIONS), min_size=1, max_size=4, unique=True).map(tuple)
_rule_sets = st.dictionaries(_prefixes, _region_sets, max_size=8)


def reference(rules: dict[bytes, tuple[str, ...]], key: bytes) -> tuple[bytes, frozenset[str]]:
    """(group, regions) by scanning every rule: the longest matching prefix, else global."""
    matching = [p for p in rules if key.startswith(p)]
    if not matching:
        return GLOBAL, frozenset(REGIONS)
    best = max(matching, key=len)
    return best, frozenset(rules[best])


def build(rules: dict[bytes, tuple[str, ...]]) -> PlacementRules:
    return PlacementRules([PlacementRule(p, r) for p, r in rules.items()], REGIONS)


@given(_rule_sets, st.lists(_bytes, min_size=1, max_size=20))
def test_regions_for_matches_brute_force(
    rules: dict[bytes, tuple[str, ...]], keys: list[bytes]
) -> None:
    placement = build(rules)
    for key in [*keys, *rules]:  # keys equal to a prefix are the edge case
        group, regions = reference(rules, key)
        assert placement.regions_for(key) == regions
        assert placement.placement_of(key) == group
        rule = placement.rule_for(key)
        assert (rule.prefix if rule else GLOBAL) == group
        for region in REGIONS:
            assert placement.allows(key, region) == (region in regions)


@given(_rule_sets, st.randoms(use_true_random=False))
def test_regions_for_independent_of_rule_order(
    rules: dict[bytes, tuple[str, ...]], rnd: random.Random
) -> None:
    items = list(rules.items())
    rnd.shuffle(items)
    shuffled = PlacementRules([PlacementRule(p, r) for p, r in items], REGIONS)
    placement = build(rules)
    assert shuffled.fingerprint() == placement.fingerprint()
    for key in rules:
        assert shuffled.regions_for(key + b"x") == placement.regions_for(key + b"x")
