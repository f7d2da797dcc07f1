"""The ``home`` of a placement rule in the cluster file: which node serializes its writes.

A rule may name one node as its keys' home (coordinator/home.py): every write to
those keys is applied there first, in one order, and replicated from it; that
order is what conditions (compare-and-set) and STRONG reads rely on. The home
must be a node of the cluster in one of the rule's regions, or it could not hold
the keys it orders.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgekv.config.model import NodeSpec
from edgekv.config.values import as_string, show
from edgekv.errors import ConfigError


def parse_home(value: object, where: str, regions: Sequence[str], nodes: Sequence[NodeSpec]) -> str:
    """The rule's home node id ("" when the entry has none), checked against the cluster.

    ``where`` names the rule (``placement[2]``); ``regions`` are the rule's own.
    Raises ConfigError naming the rule when the node is unknown or sits in a
    region the rule does not allow.
    """
    if value is None:
        return ""
    home = as_string(value, f"{where}.home")
    if not home:
        raise ConfigError(f"{where}.home: empty node id; leave the key out for no home")
    by_id = {n.id: n for n in nodes}
    node = by_id.get(home)
    if node is None:
        known = ", ".join(sorted(by_id))
        raise ConfigError(f"{where}.home: unknown node {show(home)} (known: {known})")
    if node.region not in regions:
        allowed = ", ".join(regions)
        raise ConfigError(
            f"{where}.home: node {show(home)} is in region {show(node.region)}, which this "
            f"rule does not allow (regions: {allowed}); the home must be able to hold the keys "
            "it orders, so pick a node in one of the rule's regions"
        )
    return home
