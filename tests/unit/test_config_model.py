"""edgekv.config.model: the cluster file's dataclasses, built here without the loader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgekv.cluster.placement import PlacementRule
from edgekv.config.model import ClusterConfig, NodeSpec, Region, StorageSettings
from edgekv.errors import ConfigError

BASE = Path("/srv/edgekv")


@pytest.fixture
def config() -> ClusterConfig:
    """Three nodes in two regions; ap-south is declared but has no node."""
    return make_config()


def make_config() -> ClusterConfig:
    return ClusterConfig(
        cluster="demo",
        regions=(
            Region("eu-west", (50.11, 8.68)),
            Region("us-east", (38.95, -77.45)),
            Region("ap-south", (19.08, 72.88)),
        ),
        nodes=(
            NodeSpec("fra-1", "eu-west", "127.0.0.1:7101", "127.0.0.1:7201", BASE / "data/fra-1"),
            NodeSpec("iad-1", "us-east", "127.0.0.1:7102", "127.0.0.1:7202", BASE / "data/iad-1"),
            NodeSpec("iad-2", "us-east", "127.0.0.1:7103", "127.0.0.1:7203", BASE / "data/iad-2"),
        ),
        placement=(PlacementRule(b"eu/", ("eu-west",)),),
    )


def test_cluster_config_is_frozen(config: ClusterConfig) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cluster = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.nodes[0].id = "x"  # type: ignore[misc]
    assert config == make_config()


def test_cluster_config_replace_rebuilds_lookups(config: ClusterConfig) -> None:
    # The loader sets `source` with dataclasses.replace; the derived lookup
    # tables must follow the new fields, never the old instance's.
    fewer = dataclasses.replace(config, nodes=config.nodes[:1], source=Path("/x/cluster.yaml"))
    assert fewer.source == Path("/x/cluster.yaml")
    assert fewer.node("fra-1") == config.node("fra-1")
    with pytest.raises(ConfigError, match=r"the cluster file defines: fra-1$"):
        fewer.node("iad-1")
    assert dataclasses.replace(config, source=None) == config


def test_settings_sections_have_defaults() -> None:
    assert StorageSettings() == StorageSettings(sync_writes=False, block_cache_mb=64)


# -- lookups -------------------------------------------------------------------


def test_node_known_id_returned(config: ClusterConfig) -> None:
    assert config.node("iad-1").region == "us-east"


def test_node_unknown_id_names_defined_nodes(config: ClusterConfig) -> None:
    with pytest.raises(ConfigError) as info:
        config.node("x")
    assert str(info.value) == 'unknown node "x"; the cluster file defines: fra-1, iad-1, iad-2'


def test_region_known_and_unknown(config: ClusterConfig) -> None:
    assert config.region("us-east").location == (38.95, -77.45)
    with pytest.raises(ConfigError, match=r'unknown region "mars"; the cluster file defines: ap-s'):
        config.region("mars")


def test_nodes_in_region_in_file_order(config: ClusterConfig) -> None:
    assert [n.id for n in config.nodes_in_region("us-east")] == ["iad-1", "iad-2"]
    assert config.nodes_in_region("ap-south") == ()
    with pytest.raises(ConfigError, match="unknown region"):
        config.nodes_in_region("mars")
