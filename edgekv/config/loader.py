"""Reading the cluster file: YAML in, a validated :class:`ClusterConfig` out.

The file is YAML, read with a safe loader (plain data only), and turned into
frozen dataclasses after validating every entry. Every node of a cluster reads
the same file, so placement and routing can be computed from it alone::

    cluster: demo
    regions:
      - {name: eu-west, location: [50.11, 8.68]}      # lat, lon
      - {name: us-east, location: [38.95, -77.45]}
    nodes:
      - {id: fra-1, region: eu-west, listen: "127.0.0.1:7101",
         peer_listen: "127.0.0.1:7201", data_dir: ./data/fra-1}
      - {id: iad-1, region: us-east, listen: "127.0.0.1:7102",
         peer_listen: "127.0.0.1:7202", data_dir: ./data/iad-1}
    placement:                                          # optional
      - {prefix: "eu/", regions: [eu-west]}
    limits: {max_value_bytes: 1048576}                  # optional
    storage: {sync_writes: false, block_cache_mb: 64}   # optional
    replication: {heartbeat_interval_s: 1.0}            # optional

:mod:`edgekv.config.sections` checks each section and
:mod:`edgekv.config.model` holds the result. This is the only module of edgekv
that imports PyYAML; the SDK never imports it.

A :class:`~edgekv.errors.ConfigError` names the entry, the bad value and what
is allowed: ``nodes[2].region: unknown region "eu-wst" (known: eu-west, us-east)``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from edgekv.config.consistency import parse_consistency
from edgekv.config.model import ClusterConfig
from edgekv.config.sections import (
    parse_http,
    parse_limits,
    parse_nodes,
    parse_placement,
    parse_regions,
    parse_replication,
    parse_security,
    parse_storage,
    parse_wan,
)
from edgekv.config.values import as_ident, as_mapping, check_keys, show
from edgekv.config.watch import parse_watch
from edgekv.errors import ConfigError
from edgekv.limits import PEER_RPCS_PER_PEER

__all__ = ["load_config", "parse_config"]

# The optional top-level sections of a cluster file.
_SECTIONS = (
    "placement",
    "limits",
    "storage",
    "replication",
    "wan",
    "security",
    "http",
    "consistency",
    "watch",
)


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Read and validate the cluster file at ``path``.

    Relative ``data_dir`` entries resolve against the directory of the file,
    so a cluster file and its data can move together. Every failure (missing
    or unreadable file, bad YAML, invalid entry) is a ConfigError whose
    message starts with the path.
    """
    source = Path(path).absolute()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{source}: cannot read the cluster file: {reason}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: the cluster file is not UTF-8 text: {exc}") from exc
    try:
        doc = yaml.load(text, Loader=_StrictSafeLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    try:
        config = parse_config(doc, source.parent)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return dataclasses.replace(config, source=source)


def parse_config(doc: object, base_dir: Path) -> ClusterConfig:
    """Validate a loaded YAML document and build the ClusterConfig.

    Relative ``data_dir`` entries resolve against ``base_dir``. Raises
    ConfigError naming the first bad entry (``nodes[1].id: ...``).
    """
    base_dir = Path(base_dir)
    if doc is None:
        raise ConfigError("the cluster file is empty")
    top = as_mapping(doc, "cluster file")
    check_keys(
        top,
        "cluster file",
        required=("cluster", "regions", "nodes"),
        optional=_SECTIONS,
    )
    cluster = as_ident(top["cluster"], "cluster", "cluster name")
    regions = parse_regions(top["regions"])
    region_names = {r.name for r in regions}
    nodes = parse_nodes(top["nodes"], region_names, base_dir)
    placement = parse_placement(top.get("placement"), region_names, nodes)
    limits = parse_limits(top.get("limits"))
    peers = len(nodes) - 1
    needed = PEER_RPCS_PER_PEER * peers
    if limits.max_peer_concurrent_rpcs < needed:
        raise ConfigError(
            f"limits.max_peer_concurrent_rpcs is {limits.max_peer_concurrent_rpcs}; with {peers} "
            f"peer{'' if peers == 1 else 's'} a node needs at least {needed} "
            f"({PEER_RPCS_PER_PEER} per peer: a replication stream, a heartbeat, an anti-entropy "
            "call and a spare)"
        )
    return ClusterConfig(
        cluster=cluster,
        regions=regions,
        nodes=nodes,
        placement=placement,
        limits=limits,
        storage=parse_storage(top.get("storage")),
        replication=parse_replication(top.get("replication")),
        wan=parse_wan(top.get("wan"), region_names),
        security=parse_security(top.get("security"), base_dir),
        http=parse_http(top.get("http")),
        consistency=parse_consistency(top.get("consistency")),
        watch=parse_watch(top.get("watch")),
    )


# -- YAML ---------------------------------------------------------------------


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key repeated in one mapping
    is an error: plain YAML keeps the last one silently, which turns a pasted
    duplicate into a hard-to-see misconfiguration."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        # `<<` merges may legitimately be overridden by explicit keys.
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"line {line}: duplicate key {show(key)} in one mapping")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictSafeLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
