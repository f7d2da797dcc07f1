"""Reading the cluster file (edgekv.config.loader, .sections): parsing, defaults and every
validation message."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgekv.cluster.placement import PlacementRule
from edgekv.config.loader import load_config, parse_config
from edgekv.config.model import (
    ClusterConfig,
    NodeSpec,
    Region,
    ReplicationSettings,
    StorageSettings,
)
from edgekv.errors import ConfigError
from edgekv.limits import DEFAULT_ANTIENTROPY_BYTES_PER_S, DEFAULT_LIMITS, Limits

EXAMPLE = """\
cluster: demo
regions:
  - {name: eu-west, location: [50.11, 8.68]}      # lat, lon
  - {name: us-east, location: [38.95, -77.45]}
nodes:
  - {id: fra-1, region: eu-west, listen: "127.0.0.1:7101", peer_listen: "127.0.0.1:7201", data_dir: ./data/fra-1}
  - {id: iad-1, region: us-east, listen: "127.0.0.1:7102", peer_listen: "127.0.0.1:7202", data_dir: ./data/iad-1}
placement:
  - {prefix: "eu/", regions: [eu-west]}
"""  # noqa: E501 -- the documented example, verbatim

BASE = Path("/srv/edgekv")

DOC: dict[str, Any] = {
    "cluster": "demo",
    "regions": [
        {"name": "eu-west", "location": [50.11, 8.68]},
        {"name": "us-east", "location": [38.95, -77.45]},
        {"name": "ap-south", "location": [19.08, 72.88]},
    ],
    "nodes": [
        {
            "id": "fra-1",
            "region": "eu-west",
            "listen": "127.0.0.1:7101",
            "peer_listen": "127.0.0.1:7201",
            "data_dir": "data/fra-1",
        },
        {
            "id": "iad-1",
            "region": "us-east",
            "listen": "127.0.0.1:7102",
            "peer_listen": "127.0.0.1:7202",
            "data_dir": "data/iad-1",
        },
        {
            "id": "iad-2",
            "region": "us-east",
            "listen": "127.0.0.1:7103",
            "peer_listen": "127.0.0.1:7203",
            "data_dir": "data/iad-2",
        },
    ],
    "placement": [{"prefix": "eu/", "regions": ["eu-west"]}],
}


@pytest.fixture
def doc() -> dict[str, Any]:
    """A valid three-node document; ap-south is declared but has no node."""
    return copy.deepcopy(DOC)


def parse(doc: object) -> ClusterConfig:
    return parse_config(doc, BASE)


def error_of(doc: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    return str(info.value)


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- happy path ----------------------------------------------------------------


def test_load_config_documented_example_parses(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE)
    config = load_config(path)
    assert config.cluster == "demo"
    assert config.regions == (
        Region("eu-west", (50.11, 8.68)),
        Region("us-east", (38.95, -77.45)),
    )
    assert config.nodes == (
        NodeSpec("fra-1", "eu-west", "127.0.0.1:7101", "127.0.0.1:7201", tmp_path / "data/fra-1"),
        NodeSpec("iad-1", "us-east", "127.0.0.1:7102", "127.0.0.1:7202", tmp_path / "data/iad-1"),
    )
    assert config.placement == (PlacementRule(b"eu/", ("eu-west",)),)
    assert config.limits == DEFAULT_LIMITS
    assert config.storage == StorageSettings(sync_writes=False, block_cache_mb=64)
    assert config.replication == ReplicationSettings()
    assert config.source == path


def test_load_config_relative_data_dir_resolves_against_file_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    write(conf_dir, EXAMPLE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../conf/cluster.yaml"))
    data_dir = config.node("fra-1").data_dir
    assert data_dir.is_absolute()
    assert data_dir.resolve() == (conf_dir / "data" / "fra-1").resolve()
    assert config.source is not None and config.source.is_absolute()


def test_load_config_accepts_str_path(tmp_path: Path) -> None:
    config = load_config(str(write(tmp_path, EXAMPLE)))
    assert config.node("iad-1").data_dir == tmp_path / "data" / "iad-1"


def test_parse_config_absolute_data_dir_kept(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["data_dir"] = "/var/lib/edgekv"
    assert parse(doc).node("fra-1").data_dir == Path("/var/lib/edgekv")


def test_parse_config_home_data_dir_expanded(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["data_dir"] = "~/edgekv"
    assert parse(doc).node("fra-1").data_dir == Path(os.path.expanduser("~/edgekv"))


def test_parse_config_relative_data_dir_joins_base_dir(doc: dict[str, Any]) -> None:
    assert parse(doc).node("fra-1").data_dir == BASE / "data" / "fra-1"
    assert parse(doc).source is None


def test_parse_config_single_node_without_optional_keys_valid() -> None:
    config = parse(
        {
            "cluster": "solo",
            "regions": [{"name": "local", "location": [0, 0]}],
            "nodes": [
                {"id": "node-1", "region": "local", "listen": "127.0.0.1:0", "data_dir": "d"}
            ],
        }
    )
    assert config.node("node-1").peer_listen is None
    assert config.placement == ()
    assert config.regions[0].location == (0.0, 0.0)
    assert all(isinstance(x, float) for x in config.regions[0].location)


def test_parse_config_null_optional_sections_use_defaults(doc: dict[str, Any]) -> None:
    doc.update(placement=None, limits=None, storage=None, replication=None)
    doc["nodes"][0]["peer_listen"] = None
    config = parse(doc)
    assert config.placement == ()
    assert config.limits == DEFAULT_LIMITS
    assert config.storage == StorageSettings()
    assert config.replication == ReplicationSettings()
    assert config.node("fra-1").peer_listen is None


def test_parse_config_placement_prefix_encoded_utf8(doc: dict[str, Any]) -> None:
    doc["placement"] = [{"prefix": "ü/", "regions": ["eu-west", "us-east"]}]
    assert parse(doc).placement == (PlacementRule("ü/".encode(), ("eu-west", "us-east")),)


def test_parse_config_placement_region_without_node_allowed_beside_one_with(
    doc: dict[str, Any],
) -> None:
    # ap-south is planned; eu-west can hold the keys meanwhile.
    doc["placement"] = [{"prefix": "in/", "regions": ["ap-south", "eu-west"]}]
    assert parse(doc).placement[0].regions == ("ap-south", "eu-west")


def test_parse_config_sections_override_defaults(doc: dict[str, Any]) -> None:
    doc["limits"] = {"max_value_bytes": 2048, "max_batch_ops": 10}
    doc["storage"] = {"sync_writes": True, "block_cache_mb": 0}
    doc["replication"] = {"heartbeat_interval_s": 1, "log_retention_entries": 50}
    config = parse(doc)
    assert config.limits == Limits(max_value_bytes=2048, max_batch_ops=10)
    assert config.storage == StorageSettings(sync_writes=True, block_cache_mb=0)
    assert config.replication.heartbeat_interval_s == 1.0
    assert isinstance(config.replication.heartbeat_interval_s, float)
    assert config.replication.log_retention_entries == 50
    assert config.replication.batch_entries == ReplicationSettings().batch_entries


def test_parse_config_port_zero_and_wildcards_may_repeat(doc: dict[str, Any]) -> None:
    for i, node in enumerate(doc["nodes"]):
        node["listen"] = "0.0.0.0:7101"  # one node per machine/pod
        node["peer_listen"] = f"127.0.0.{i + 1}:0"
    parse(doc)


def test_parse_config_ipv6_and_hostnames_accepted(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["listen"] = "[::1]:7101"
    doc["nodes"][1]["listen"] = "iad-1.edgekv.svc.cluster.local:7101"
    config = parse(doc)
    assert config.node("fra-1").listen == "[::1]:7101"  # kept as written


# -- file errors ---------------------------------------------------------------


def test_load_config_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(str(path))) as info:
        load_config(path)
    assert "cannot read the cluster file" in str(info.value)


def test_load_config_directory_names_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_config(tmp_path)


def test_load_config_yaml_syntax_error_names_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "cluster: demo\nregions: [\n  {name: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid YAML")
    assert "line" in message


def test_load_config_not_utf8_names_path(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(b"cluster: \xff\xfe\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: the cluster file is not UTF-8")):
        load_config(path)


def test_load_config_empty_file_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing yet\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: the cluster file is empty"


def test_load_config_duplicate_yaml_key_rejected(tmp_path: Path) -> None:
    text = EXAMPLE.replace("cluster: demo\n", "cluster: demo\ncluster: other\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f'{path}: line 2: duplicate key "cluster" in one mapping'


def test_load_config_yaml_merge_key_may_be_overridden(tmp_path: Path) -> None:
    text = EXAMPLE.replace(
        "  - {name: eu-west, location: [50.11, 8.68]}",
        "  - &eu {name: eu-west, location: [50.11, 8.68]}\n  - {<<: *eu, name: eu-central}",
    )
    config = load_config(write(tmp_path, text))
    assert config.region("eu-central").location == (50.11, 8.68)


def test_load_config_invalid_entry_message_starts_with_path(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("region: us-east", "region: us-eats"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f'{path}: nodes[1].region: unknown region "us-eats" (known: eu-west, us-east)'
    )


def test_load_config_unquoted_number_id_asks_for_quotes(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.replace("id: fra-1", "id: 1"))
    with pytest.raises(
        ConfigError, match=re.escape("nodes[0].id: expected a string, got 1; quote")
    ):
        load_config(path)


# -- structure errors ----------------------------------------------------------


def test_parse_config_top_level_not_mapping_rejected() -> None:
    assert error_of(["cluster"]) == "cluster file: expected a mapping, got ['cluster']"
    assert error_of(None) == "the cluster file is empty"


def test_parse_config_unknown_top_level_key_rejected(doc: dict[str, Any]) -> None:
    doc["nodez"] = []
    assert error_of(doc) == (
        'cluster file: unknown key "nodez" (allowed: cluster, regions, nodes, placement, '
        "limits, storage, replication, wan, security, http, consistency, watch)"
    )


@pytest.mark.parametrize("key", ["cluster", "regions", "nodes"])
def test_parse_config_missing_top_level_key_rejected(doc: dict[str, Any], key: str) -> None:
    del doc[key]
    assert error_of(doc) == f'cluster file: missing required key "{key}"'


def test_parse_config_invalid_cluster_name_rejected(doc: dict[str, Any]) -> None:
    doc["cluster"] = "my cluster"
    assert error_of(doc) == (
        'cluster: invalid cluster name "my cluster"; use 1 to 64 characters from A-Z a-z 0-9 . _ -'
    )


def test_parse_config_non_string_mapping_key_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][0][1] = "x"
    assert error_of(doc) == "nodes[0]: keys must be strings, got 1"


# -- regions -------------------------------------------------------------------


def test_regions_empty_list_rejected(doc: dict[str, Any]) -> None:
    doc["regions"] = []
    assert error_of(doc) == "regions: the list is empty; it needs at least one region"


def test_regions_not_a_list_rejected(doc: dict[str, Any]) -> None:
    doc["regions"] = {"name": "eu-west"}
    assert error_of(doc).startswith("regions: expected a list with at least one region, got a map")


def test_regions_entry_not_mapping_rejected(doc: dict[str, Any]) -> None:
    doc["regions"][1] = "us-east"
    assert error_of(doc) == 'regions[1]: expected a mapping, got "us-east"'


def test_regions_unknown_key_rejected(doc: dict[str, Any]) -> None:
    doc["regions"][0]["lat"] = 1
    assert error_of(doc) == 'regions[0]: unknown key "lat" (allowed: name, location)'


def test_regions_missing_location_rejected(doc: dict[str, Any]) -> None:
    del doc["regions"][2]["location"]
    assert error_of(doc) == 'regions[2]: missing required key "location"'


def test_regions_duplicate_name_rejected(doc: dict[str, Any]) -> None:
    doc["regions"][2]["name"] = "eu-west"
    assert error_of(doc) == 'regions[2].name: duplicate region "eu-west" (also regions[0])'


def test_regions_invalid_name_rejected(doc: dict[str, Any]) -> None:
    doc["regions"][0]["name"] = "eu/west"
    assert error_of(doc).startswith('regions[0].name: invalid region name "eu/west"; use 1 to 64')


@pytest.mark.parametrize(
    "location",
    [[50.11], [50.11, 8.68, 0], "50.11, 8.68", [True, 8.68], ["50", "8"], None, {"lat": 1}],
)
def test_regions_location_not_two_numbers_rejected(doc: dict[str, Any], location: object) -> None:
    doc["regions"][0]["location"] = location
    assert error_of(doc).startswith(
        "regions[0].location: expected [lat, lon], two numbers in degrees, got "
    )


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ([90.5, 0], "latitude 90.5 is out of range; allowed -90..90"),
        ([-91, 0], "latitude -91.0 is out of range; allowed -90..90"),
        ([float("nan"), 0], "latitude nan is out of range; allowed -90..90"),
        ([0, 180.01], "longitude 180.01 is out of range; allowed -180..180"),
        ([0, -181], "longitude -181.0 is out of range; allowed -180..180"),
    ],
)
def test_regions_location_out_of_range_rejected(
    doc: dict[str, Any], location: list[float], message: str
) -> None:
    doc["regions"][0]["location"] = location
    assert error_of(doc) == f"regions[0].location: {message}"


def test_regions_location_bounds_inclusive(doc: dict[str, Any]) -> None:
    doc["regions"][0]["location"] = [-90, 180]
    doc["regions"][1]["location"] = [90, -180]
    config = parse(doc)
    assert config.region("eu-west").location == (-90.0, 180.0)


# -- nodes ---------------------------------------------------------------------


def test_nodes_empty_list_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"] = []
    assert error_of(doc) == "nodes: the list is empty; it needs at least one node"


def test_nodes_unknown_key_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["lisen"] = doc["nodes"][0].pop("listen")
    assert error_of(doc) == (
        'nodes[0]: unknown key "lisen" (allowed: id, region, listen, data_dir, peer_listen, '
        "metrics_listen, http_listen)"
    )


@pytest.mark.parametrize("key", ["id", "region", "listen", "data_dir"])
def test_nodes_missing_required_key_rejected(doc: dict[str, Any], key: str) -> None:
    del doc["nodes"][1][key]
    assert error_of(doc) == f'nodes[1]: missing required key "{key}"'


def test_nodes_unknown_region_lists_known_regions(doc: dict[str, Any]) -> None:
    doc["nodes"][2]["region"] = "eu-wst"
    assert error_of(doc) == (
        'nodes[2].region: unknown region "eu-wst" (known: ap-south, eu-west, us-east)'
    )


def test_nodes_duplicate_id_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][1]["id"] = "fra-1"
    assert error_of(doc) == 'nodes[1].id: duplicate node id "fra-1" (also nodes[0])'


@pytest.mark.parametrize("node_id", ["fra 1", "fra/1", "", "x" * 65, "fra-1\n", "zürich"])
def test_nodes_invalid_id_rejected(doc: dict[str, Any], node_id: str) -> None:
    doc["nodes"][0]["id"] = node_id
    message = error_of(doc)
    assert message.startswith("nodes[0].id: invalid node id ")
    assert message.endswith("; use 1 to 64 characters from A-Z a-z 0-9 . _ -")


def test_nodes_id_of_64_allowed_characters_valid(doc: dict[str, Any]) -> None:
    node_id = ("Az09._-" * 10)[:64]
    doc["nodes"][0]["id"] = node_id
    assert parse(doc).node(node_id).region == "eu-west"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(7, "7; quote it"), (True, "true (a boolean); quote it"), (None, "null"), (["a"], "['a']")],
)
def test_nodes_id_not_string_rejected(doc: dict[str, Any], value: object, shown: str) -> None:
    doc["nodes"][0]["id"] = value
    assert error_of(doc) == f"nodes[0].id: expected a string, got {shown}"


def test_nodes_data_dir_not_string_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["data_dir"] = ["data"]
    assert error_of(doc) == "nodes[0].data_dir: expected a string, got ['data']"


def test_nodes_bad_listen_address_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][1]["listen"] = "127.0.0.1"
    assert error_of(doc) == (
        'nodes[1].listen: expected host:port such as "127.0.0.1:7101", "[::1]:7101" or '
        '"localhost:7101", got "127.0.0.1"'
    )


def test_nodes_bad_peer_listen_port_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["peer_listen"] = "127.0.0.1:99999"
    assert error_of(doc) == (
        'nodes[0].peer_listen: port 99999 in "127.0.0.1:99999" is out of range; '
        "allowed 0..65535 (0 picks a free port)"
    )


def test_nodes_duplicate_listen_address_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][2]["listen"] = "127.0.0.1:7101"
    assert error_of(doc) == (
        'nodes[2].listen: address "127.0.0.1:7101" is already used by nodes[0].listen'
    )


def test_nodes_listen_clashing_with_other_peer_listen_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][1]["listen"] = "LOCALHOST:9000"
    doc["nodes"][2]["peer_listen"] = "localhost:9000"
    assert error_of(doc) == (
        'nodes[2].peer_listen: address "localhost:9000" is already used by nodes[1].listen'
    )


def test_nodes_listen_equal_to_own_peer_listen_rejected(doc: dict[str, Any]) -> None:
    doc["nodes"][0]["peer_listen"] = doc["nodes"][0]["listen"] = "0.0.0.0:7101"
    assert error_of(doc) == (
        'nodes[0].peer_listen: "0.0.0.0:7101" is also this node\'s listen address; '
        "clients and peers need different ports"
    )


# -- placement -----------------------------------------------------------------


def test_placement_not_a_list_rejected(doc: dict[str, Any]) -> None:
    doc["placement"] = {"eu/": ["eu-west"]}
    assert error_of(doc).startswith(
        "placement: expected a list of {prefix, regions} rules, got a mapping"
    )


def test_placement_unknown_key_rejected(doc: dict[str, Any]) -> None:
    doc["placement"][0]["region"] = "eu-west"
    assert error_of(doc) == 'placement[0]: unknown key "region" (allowed: prefix, regions, home)'


def test_placement_unknown_region_rejected(doc: dict[str, Any]) -> None:
    doc["placement"][0]["regions"] = ["eu-west", "eu-wst"]
    assert error_of(doc) == (
        'placement[0].regions[1]: unknown region "eu-wst" (known: ap-south, eu-west, us-east)'
    )


def test_placement_duplicate_prefix_rejected(doc: dict[str, Any]) -> None:
    doc["placement"].append({"prefix": "eu/", "regions": ["us-east"]})
    assert error_of(doc) == 'placement[1].prefix: duplicate prefix "eu/" (also placement[0])'


def test_placement_empty_regions_rejected(doc: dict[str, Any]) -> None:
    doc["placement"][0]["regions"] = []
    assert error_of(doc) == (
        "placement[0].regions: the list is empty; it needs at least one region"
    )


def test_placement_duplicate_region_in_rule_rejected(doc: dict[str, Any]) -> None:
    doc["placement"][0]["regions"] = ["eu-west", "eu-west"]
    assert error_of(doc) == 'placement[0].regions[1]: duplicate region "eu-west"'


def test_placement_empty_prefix_rejected(doc: dict[str, Any]) -> None:
    doc["placement"][0]["prefix"] = ""
    assert error_of(doc).startswith("placement[0].prefix: the prefix is empty;")


def test_placement_prefix_not_string_rejected(doc: dict[str, Any]) -> None:
    doc["placement"][0]["prefix"] = 7
    assert error_of(doc) == "placement[0].prefix: expected a string, got 7; quote it"


def test_placement_prefix_longer_than_any_key_rejected(doc: dict[str, Any]) -> None:
    doc["placement"][0]["prefix"] = "k" * 1025
    assert error_of(doc) == (
        "placement[0].prefix: the prefix is 1025 bytes; keys are at most 1024 bytes, "
        "so it could never match"
    )


def test_placement_region_without_node_rejected(doc: dict[str, Any]) -> None:
    doc["placement"][0] = {"prefix": "in/", "regions": ["ap-south"]}
    assert error_of(doc) == (
        'placement[0].regions: no node in region "ap-south", '
        'so keys under "in/" could not be stored anywhere'
    )


def test_placement_all_regions_without_node_rejected(doc: dict[str, Any]) -> None:
    doc["regions"].append({"name": "ap-east", "location": [22.3, 114.2]})
    doc["placement"][0] = {"prefix": "in/", "regions": ["ap-south", "ap-east"]}
    assert error_of(doc).startswith(
        'placement[0].regions: no node in any of regions "ap-south", "ap-east", so keys'
    )


# -- limits, storage, replication ----------------------------------------------


def test_limits_bad_value_names_setting(doc: dict[str, Any]) -> None:
    doc["limits"] = {"max_value_bytes": 0}
    assert error_of(doc) == "limits.max_value_bytes: 0 is too small; allowed: an integer >= 1"


def test_limits_invalid_argument_from_limits_wrapped(
    doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever Limits itself refuses surfaces as a ConfigError on the entry.
    from edgekv.config import sections as sections_module
    from edgekv.errors import InvalidArgument

    class PickyLimits(Limits):
        def __post_init__(self) -> None:
            if self.max_scan_limit == 5:
                raise InvalidArgument("max_scan_limit must be a positive integer, got 5")

    monkeypatch.setattr(sections_module, "Limits", PickyLimits)
    doc["limits"] = {"max_scan_limit": 5}
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert str(info.value) == (
        "limits.max_scan_limit: max_scan_limit must be a positive integer, got 5"
    )
    assert isinstance(info.value.__cause__, InvalidArgument)


@pytest.mark.parametrize("value", [True, 1.5, "1024", None])
def test_limits_non_integer_rejected(doc: dict[str, Any], value: object) -> None:
    doc["limits"] = {"max_batch_ops": value}
    assert error_of(doc).startswith("limits.max_batch_ops: expected an integer >= 1, got ")


def test_limits_unknown_key_rejected(doc: dict[str, Any]) -> None:
    doc["limits"] = {"max_key_bytes": 10}
    assert error_of(doc) == (
        'limits: unknown key "max_key_bytes" (allowed: max_value_bytes, max_batch_ops, '
        "max_scan_limit, max_message_bytes, max_inflight_per_client, max_concurrent_rpcs, "
        "max_peer_concurrent_rpcs, max_watches_per_client, max_watch_queue_bytes, "
        "max_streams_per_client, max_stream_inflight)"
    )


def test_storage_sync_writes_must_be_boolean(doc: dict[str, Any]) -> None:
    doc["storage"] = {"sync_writes": "yes"}
    assert error_of(doc) == 'storage.sync_writes: expected true or false, got "yes"'


def test_storage_block_cache_bool_is_not_an_int(doc: dict[str, Any]) -> None:
    doc["storage"] = {"block_cache_mb": True}
    assert error_of(doc) == (
        "storage.block_cache_mb: expected an integer >= 0, got true (a boolean)"
    )


def test_storage_block_cache_negative_rejected(doc: dict[str, Any]) -> None:
    doc["storage"] = {"block_cache_mb": -1}
    assert error_of(doc) == "storage.block_cache_mb: -1 is too small; allowed: an integer >= 0"


def test_storage_unknown_key_rejected(doc: dict[str, Any]) -> None:
    doc["storage"] = {"fsync": True}
    assert error_of(doc) == 'storage: unknown key "fsync" (allowed: sync_writes, block_cache_mb)'


def test_replication_unknown_key_rejected(doc: dict[str, Any]) -> None:
    doc["replication"] = {"heartbeat_s": 1}
    assert error_of(doc).startswith(
        'replication: unknown key "heartbeat_s" (allowed: max_clock_skew_ms, heartbeat_interval_s,'
    )


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan")])
def test_replication_interval_must_be_positive(doc: dict[str, Any], value: float) -> None:
    doc["replication"] = {"antientropy_interval_s": value}
    assert error_of(doc) == (
        f"replication.antientropy_interval_s: {float(value)} is not allowed; "
        "use a number of seconds > 0"
    )


def test_replication_count_must_be_positive_int(doc: dict[str, Any]) -> None:
    doc["replication"] = {"batch_entries": 0.5}
    assert error_of(doc) == "replication.batch_entries: expected an integer >= 1, got 0.5"


def test_launcher_style_document_round_trips_through_yaml(tmp_path: Path) -> None:
    # The local launcher writes files with yaml.safe_dump; they must load back.
    path = write(tmp_path, yaml.safe_dump(DOC, sort_keys=False))
    assert load_config(path) == dataclasses.replace(parse_config(DOC, tmp_path), source=path)


def test_parse_config_wan_delays_symmetric(doc: dict[str, Any]) -> None:
    names = [r["name"] for r in doc["regions"]]
    doc["wan"] = {"delays_ms": {names[0]: {names[1]: 45}}}
    config = parse_config(doc, Path("/tmp"))
    assert config.wan.delays_ms[(names[0], names[1])] == 45.0
    assert config.wan.delays_ms[(names[1], names[0])] == 45.0


def test_parse_config_wan_unknown_region_rejected(doc: dict[str, Any]) -> None:
    doc["wan"] = {"delays_ms": {"mars": {}}}
    assert error_of(doc) == 'wan.delays_ms: unknown region "mars"'


def test_tombstone_grace_shorter_than_antientropy_interval_rejected(doc: dict[str, Any]) -> None:
    doc["replication"] = {"antientropy_interval_s": 60, "tombstone_grace_s": 30}
    with pytest.raises(ConfigError, match=r"tombstone_grace_s is 30 s; it must be at least"):
        parse(doc)


def test_tombstone_grace_and_gc_interval_parsed(doc: dict[str, Any]) -> None:
    doc["replication"] = {"tombstone_grace_s": 7200, "gc_interval_s": 60}
    settings = parse(doc).replication
    assert (settings.tombstone_grace_s, settings.gc_interval_s) == (7200.0, 60.0)


def test_antientropy_bytes_per_s_parsed_with_a_default(doc: dict[str, Any]) -> None:
    assert parse(doc).replication.antientropy_bytes_per_s == DEFAULT_ANTIENTROPY_BYTES_PER_S
    doc["replication"] = {"antientropy_bytes_per_s": 8 * 1024 * 1024}
    assert parse(doc).replication.antientropy_bytes_per_s == 8 * 1024 * 1024


def test_antientropy_lag_target_and_floor_parsed_with_defaults(doc: dict[str, Any]) -> None:
    settings = parse(doc).replication
    assert (settings.antientropy_lag_target_ms, settings.antientropy_min_bytes_per_s) == (2, 0)
    doc["replication"] = {"antientropy_lag_target_ms": 5, "antientropy_min_bytes_per_s": 4 << 20}
    settings = parse(doc).replication
    assert settings.antientropy_lag_target_ms == 5
    assert settings.antientropy_min_bytes_per_s == 4 << 20


def test_antientropy_floor_above_the_pace_rejected(doc: dict[str, Any]) -> None:
    doc["replication"] = {
        "antientropy_bytes_per_s": 4 << 20,
        "antientropy_min_bytes_per_s": 8 << 20,
    }
    assert error_of(doc) == (
        "replication.antientropy_min_bytes_per_s: 8388608 is more than "
        "antientropy_bytes_per_s (4194304)"
    )
    doc["replication"] = {"antientropy_lag_target_ms": 0}
    assert error_of(doc) == (
        "replication.antientropy_lag_target_ms: 0 is too small; allowed: an integer >= 1"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1000, "1000 is too small; allowed: an integer >= 1048576"),
        (0, "0 is too small; allowed: an integer >= 1048576"),
        (2.5e6, "expected an integer >= 1048576, got 2500000.0"),
        ("16MB", 'expected an integer >= 1048576, got "16MB"'),
    ],
)
def test_antientropy_bytes_per_s_below_one_mib_or_not_an_integer_rejected(
    doc: dict[str, Any], value: object, message: str
) -> None:
    doc["replication"] = {"antientropy_bytes_per_s": value}
    assert error_of(doc) == f"replication.antientropy_bytes_per_s: {message}"
