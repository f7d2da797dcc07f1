"""Placement (data residency): which regions may hold a key, from the key alone.

Rules map a key prefix to the regions allowed to hold it; the longest matching
prefix wins; a key that matches no rule is global (every region may hold it).
Every node computes the same answer from the cluster file, so routing needs no
lookup. A key's *placement* is its rule's prefix (``b""`` for global):
anti-entropy digests are kept per placement, so two nodes compare only the keys
both may hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from edgekv.errors import InvalidArgument
from edgekv.keyrange import prefix_range

__all__ = ["GLOBAL", "PlacementRule", "PlacementRules"]

GLOBAL = b""  # the placement of keys that match no rule


class _Region(Protocol):
    @property
    def name(self) -> str: ...


class _PlacementSource(Protocol):
    """What ``from_config`` reads of a ClusterConfig (a Protocol: the config model
    imports this module for PlacementRule, so this module must not import it)."""

    @property
    def placement(self) -> Iterable[PlacementRule]: ...

    @property
    def regions(self) -> Iterable[_Region]: ...


@dataclass(frozen=True, slots=True)
class PlacementRule:
    """Keys starting with ``prefix`` may only be held in ``regions``.

    One entry of the cluster file's ``placement`` list, and what Cluster.Members
    tells the SDK, so it lives here with the lookup rather than with the loader.
    ``home`` names the node that serializes every write to these keys (and
    serves their conditions and STRONG reads: coordinator/home.py), "" for none.
    """

    prefix: bytes
    regions: tuple[str, ...]
    home: str = ""


class PlacementRules:
    """Longest-prefix placement lookup over a fixed set of rules.

    Immutable after construction, so it may be shared by any number of threads
    and tasks. Lookups cost one dict probe per *distinct prefix length* (not per
    rule), longest first, and allocate nothing but the probe slices.
    """

    __slots__ = (
        "_lengths",
        "_regions_by_prefix",
        "_rule_by_prefix",
        "all_regions",
        "has_homes",
        "rules",
    )

    def __init__(self, rules: Iterable[PlacementRule], all_regions: Iterable[str]) -> None:
        """Index ``rules``; ``all_regions`` are every region of the cluster (the global set).

        Raises InvalidArgument for an empty or duplicate prefix, a rule with no
        regions, or a rule naming a region not in ``all_regions``. (The cluster
        file parser reports the same problems with the entry's path first.)
        """
        self.rules: tuple[PlacementRule, ...] = tuple(rules)
        self.has_homes = any(rule.home for rule in self.rules)  # else no key has a home
        self.all_regions: frozenset[str] = frozenset(all_regions)
        self._rule_by_prefix: dict[bytes, PlacementRule] = {}
        self._regions_by_prefix: dict[bytes, frozenset[str]] = {}
        for rule in self.rules:
            if not rule.prefix:
                raise InvalidArgument("a placement rule has an empty prefix")
            if rule.prefix in self._rule_by_prefix:
                raise InvalidArgument(f"duplicate placement prefix {rule.prefix!r}")
            allowed = frozenset(rule.regions)
            if not allowed:
                raise InvalidArgument(f"placement rule {rule.prefix!r} allows no region")
            unknown = allowed - self.all_regions
            if unknown:
                raise InvalidArgument(
                    f"placement rule {rule.prefix!r} names unknown regions "
                    f"{', '.join(sorted(unknown))} (known: {', '.join(sorted(self.all_regions))})"
                )
            self._rule_by_prefix[rule.prefix] = rule
            self._regions_by_prefix[rule.prefix] = allowed
        # Prefixes are unique, so one dict serves every length: probing
        # key[:n] for each existing length n, longest first, finds the longest
        # matching prefix. A key shorter than n probes the whole key, which can
        # only hit a prefix equal to the key -- still a match, and no longer
        # one can exist.
        self._lengths: tuple[int, ...] = tuple(
            sorted({len(p) for p in self._rule_by_prefix}, reverse=True)
        )

    @classmethod
    def from_config(cls, config: _PlacementSource) -> PlacementRules:
        """The rules of a cluster file; the global set is every declared region."""
        return cls(config.placement, (r.name for r in config.regions))

    def regions_for(self, key: bytes) -> frozenset[str]:
        """The regions allowed to hold ``key``: its longest matching rule's, else all.

        Called on every request; returns a shared frozenset (do not mutate).
        """
        get = self._regions_by_prefix.get
        for n in self._lengths:
            allowed = get(key[:n])
            if allowed is not None:
                return allowed
        return self.all_regions

    def allows(self, key: bytes, region: str) -> bool:
        """Whether a node in ``region`` may store, log, cache or replicate ``key``."""
        return region in self.regions_for(key)

    def rule_for(self, key: bytes) -> PlacementRule | None:
        """The rule that governs ``key`` (longest matching prefix), or None if global."""
        get = self._rule_by_prefix.get
        for n in self._lengths:
            rule = get(key[:n])
            if rule is not None:
                return rule
        return None

    def home_of(self, key: bytes) -> str:
        """The node id of ``key``'s home (its rule's ``home``), or "" when it has none."""
        rule = self.rule_for(key) if self._lengths else None
        return "" if rule is None else rule.home

    def placement_of(self, key: bytes) -> bytes:
        """The key's placement: its rule's prefix, or ``GLOBAL`` (b"")."""
        rule = self.rule_for(key)
        return GLOBAL if rule is None else rule.prefix

    def is_global(self) -> bool:
        """True when there are no rules: every region may hold every key."""
        return not self.rules

    def placements_shared_by(self, regions: Iterable[str]) -> list[bytes]:
        """Placements whose keys every one of ``regions`` may hold, sorted.

        The global placement is included when all of ``regions`` are known regions.
        """
        wanted = frozenset(regions)
        shared = [GLOBAL] if wanted <= self.all_regions else []
        shared += sorted(p for p, allowed in self._regions_by_prefix.items() if wanted <= allowed)
        return shared

    def refused_ranges(self, region: str) -> list[tuple[bytes, bytes]]:
        """The key ranges ``region`` may not hold: sorted, disjoint, merged (end b"" = unbounded).

        Exact under nested rules: prefix ranges nest or are disjoint, so between
        two consecutive rule boundaries one rule (the longest) governs every key.
        Empty when ``region`` may hold every key.
        """
        points = sorted({p for rule in self.rules for p in prefix_range(rule.prefix) if p})
        refused: list[tuple[bytes, bytes]] = []
        for i, start in enumerate(points):
            end = points[i + 1] if i + 1 < len(points) else b""
            if region in self.regions_for(start):
                continue
            if refused and refused[-1][1] == start:
                refused[-1] = (refused[-1][0], end)
            else:
                refused.append((start, end))
        return refused

    def fingerprint(self) -> bytes:
        """16 bytes that change whenever the rules do, whatever their order in the file.

        The engine stores it and rebuilds its per-placement digest index when it
        changes. Only the rules count: adding a region changes no key's placement.
        """
        h = hashlib.sha256()
        for rule in sorted(self.rules, key=lambda r: r.prefix):
            h.update(len(rule.prefix).to_bytes(2, "big") + rule.prefix)
            h.update(",".join(sorted(rule.regions)).encode() + b";")
        return h.digest()[:16]

    def __repr__(self) -> str:
        return f"PlacementRules(rules={self.rules!r}, all_regions={sorted(self.all_regions)!r})"
