"""Home-mode prefixes on real engines, without gRPC (coordinator/home.py, config/homes.py).

Three nodes in three regions, their coordinators linked in-process by
DirectForwarder: writes to a homed prefix are applied at the home only,
conditions are checked there and refused on keys without a home, STRONG reads
are served by the home.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgekv.cluster.placement import PlacementRules
from edgekv.cluster.routing import Router
from edgekv.config.loader import parse_config
from edgekv.config.model import ClusterConfig
from edgekv.coordinator import Call, Coordinator, DirectForwarder
from edgekv.errors import (
    ConditionFailed,
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from edgekv.principal import ANYONE
from edgekv.storage.batch import DeleteOp, PutOp
from edgekv.storage.conditions import IF_ABSENT, Condition
from edgekv.storage.engine import Engine, EngineSettings
from edgekv.storage.group_commit import GroupCommitter
from edgekv.storage.record import Version

NODES = (("fra-1", "eu-west"), ("fra-2", "eu-west"), ("iad-1", "us-east"), ("nrt-1", "ap"))
STRONG = 2


def cluster_doc(placement: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cluster": "unit",
        "regions": [
            {"name": "eu-west", "location": [50.1, 8.7]},
            {"name": "us-east", "location": [39.0, -77.5]},
            {"name": "ap", "location": [35.7, 139.7]},
        ],
        "nodes": [
            {
                "id": node_id,
                "region": region,
                "listen": f"127.0.0.1:{7100 + i}",  # never bound: no server runs here
                "peer_listen": f"127.0.0.1:{7200 + i}",
                "data_dir": f"data/{node_id}",
            }
            for i, (node_id, region) in enumerate(NODES)
        ],
        "placement": placement,
        "security": {"auth": {"mode": "disabled"}},
    }


RULES = [
    {"prefix": "ctr/", "regions": ["eu-west", "us-east", "ap"], "home": "fra-1"},
    {"prefix": "us/", "regions": ["us-east"], "home": "iad-1"},
    {"prefix": "eu/", "regions": ["eu-west"]},
]


class Nodes:
    def __init__(self, config: ClusterConfig) -> None:
        placement = PlacementRules.from_config(config)
        self.engines: dict[str, Engine] = {}
        self.coordinators: dict[str, Coordinator] = {}
        for spec in config.nodes:
            engine = Engine(spec.data_dir, spec.id, EngineSettings())
            router = Router(config, spec, placement, membership=None)
            self.engines[spec.id] = engine
            self.coordinators[spec.id] = Coordinator(
                engine, router, forwarder=DirectForwarder(router, self.coordinators)
            )

    def __getitem__(self, node_id: str) -> Coordinator:
        return self.coordinators[node_id]


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    cluster = Nodes(parse_config(cluster_doc(RULES), tmp_path))
    try:
        yield cluster
    finally:
        for engine in cluster.engines.values():
            engine.close()


def client(consistency: int = 0) -> Call:
    return Call(ANYONE, consistency=consistency)


# -- the cluster file -----------------------------------------------------------------


def test_home_parsed_and_looked_up(tmp_path: Path) -> None:
    config = parse_config(cluster_doc(RULES), tmp_path)
    rules = PlacementRules.from_config(config)
    assert rules.has_homes
    assert rules.home_of(b"ctr/x") == "fra-1"
    assert rules.home_of(b"us/x") == "iad-1"
    assert rules.home_of(b"eu/x") == "" and rules.home_of(b"g") == ""


def test_home_unknown_node_rejected_naming_rule(tmp_path: Path) -> None:
    rules = [
        {"prefix": "a/", "regions": ["eu-west"]},
        {"prefix": "c/", "regions": ["ap"], "home": "x-9"},
    ]
    with pytest.raises(ConfigError, match=r'placement\[1\]\.home: unknown node "x-9"'):
        parse_config(cluster_doc(rules), tmp_path)


def test_home_outside_rule_regions_rejected(tmp_path: Path) -> None:
    rules = [{"prefix": "eu/", "regions": ["eu-west"], "home": "iad-1"}]
    with pytest.raises(
        ConfigError, match=r'placement\[0\]\.home: node "iad-1" is in region "us-east"'
    ):
        parse_config(cluster_doc(rules), tmp_path)


def test_home_empty_rejected(tmp_path: Path) -> None:
    rules = [{"prefix": "eu/", "regions": ["eu-west"], "home": ""}]
    with pytest.raises(ConfigError, match=r"placement\[0\]\.home: empty node id"):
        parse_config(cluster_doc(rules), tmp_path)


# -- writes are applied at the home -------------------------------------------------


async def test_write_to_homed_key_applied_at_home_only(nodes: Nodes) -> None:
    ack = await nodes["nrt-1"].put(b"ctr/a", b"1", 0, client())
    assert ack.served_by == "fra-1" and ack.version.origin == "fra-1"
    assert nodes.engines["fra-1"].get(b"ctr/a") is not None
    # No replication runs here: a non-home that forwarded it holds nothing.
    assert nodes.engines["nrt-1"].get(b"ctr/a") is None
    assert nodes.engines["fra-2"].get(b"ctr/a") is None
    ack = await nodes["fra-2"].delete(b"ctr/a", client())
    assert ack.served_by == "fra-1"


async def test_unhomed_write_still_local(nodes: Nodes) -> None:
    ack = await nodes["nrt-1"].put(b"g/a", b"1", 0, client())
    assert ack.served_by == "nrt-1"


async def test_batch_mixing_homes_refused(nodes: Nodes) -> None:
    with pytest.raises(InvalidArgument, match="mixes keys of different homes"):
        await nodes["fra-1"].write([PutOp(b"ctr/a", b"1"), PutOp(b"us/a", b"1")], client())
    with pytest.raises(InvalidArgument, match="no home"):
        await nodes["fra-1"].write([PutOp(b"ctr/a", b"1"), PutOp(b"g/a", b"1")], client())
    assert nodes.engines["fra-1"].get(b"ctr/a") is None


async def test_home_unreachable_write_unavailable_naming_home(nodes: Nodes) -> None:
    del nodes.coordinators["fra-1"]  # the home is gone: nobody else may apply it
    with pytest.raises(Unavailable, match="node fra-1, the home of prefix 'ctr/'") as info:
        await nodes["fra-2"].put(b"ctr/a", b"1", 0, client())
    assert "the write was not applied anywhere" in str(info.value)
    assert all(e.get(b"ctr/a") is None for e in nodes.engines.values())


async def test_forwarded_write_to_non_home_refused(nodes: Nodes) -> None:
    forwarded = Call(ANYONE, forwarded_by="nrt-1")
    with pytest.raises(FailedPrecondition, match="not the home"):
        await nodes["fra-2"].put(b"ctr/a", b"1", 0, forwarded)


# -- conditions ---------------------------------------------------------------------


async def test_if_absent_then_cas_at_home(nodes: Nodes) -> None:
    first = await nodes["iad-1"].put(b"ctr/n", b"0", 0, client(), condition=IF_ABSENT)
    with pytest.raises(ConditionFailed) as failed:
        await nodes["nrt-1"].put(b"ctr/n", b"x", 0, client(), condition=IF_ABSENT)
    assert failed.value.current_version == first.version
    assert "ctr/n" in str(failed.value) and str(first.version.timestamp) in str(failed.value)
    second = await nodes["nrt-1"].put(
        b"ctr/n", b"1", 0, client(), condition=Condition(if_version=first.version)
    )
    with pytest.raises(ConditionFailed) as stale:  # the same CAS again: lost the race
        await nodes["fra-2"].put(
            b"ctr/n", b"2", 0, client(), condition=Condition(if_version=first.version)
        )
    assert stale.value.current_version == second.version
    await nodes["fra-1"].delete(b"ctr/n", client(), condition=Condition(if_version=second.version))
    with pytest.raises(ConditionFailed) as gone:
        await nodes["fra-1"].delete(
            b"ctr/n", client(), condition=Condition(if_version=second.version)
        )
    assert gone.value.current_version is None and "no live value" in str(gone.value)
    await nodes["iad-1"].put(
        b"ctr/n", b"again", 0, client(), condition=IF_ABSENT
    )  # a tombstone is absent


async def test_condition_on_unhomed_key_refused_saying_why(nodes: Nodes) -> None:
    for key in (b"eu/a", b"g/a"):
        with pytest.raises(FailedPrecondition, match="no single order") as refused:
            await nodes["fra-1"].put(key, b"1", 0, client(), condition=IF_ABSENT)
        assert "home" in str(refused.value) and not isinstance(refused.value, ConditionFailed)
    assert nodes.engines["fra-1"].get(b"eu/a") is None


async def test_failed_condition_fails_whole_batch(nodes: Nodes) -> None:
    await nodes["fra-1"].put(b"ctr/b", b"x", 0, client())
    ops = [PutOp(b"ctr/a", b"1"), PutOp(b"ctr/b", b"2", 0, IF_ABSENT)]
    with pytest.raises(ConditionFailed, match="ctr/b"):
        await nodes["nrt-1"].write(ops, client())
    assert nodes.engines["fra-1"].get(b"ctr/a") is None


def test_engine_condition_on_expired_and_tombstone(tmp_path: Path) -> None:
    with Engine(tmp_path / "e", "n1") as engine:
        engine.put(b"k", b"v", ttl_ms=1)
        engine.put(b"t", b"v")
        engine.delete(b"t")
        time.sleep(0.01)  # k expires
        # Expired and deleted keys have no live value: if_absent holds, if_version does not.
        with pytest.raises(ConditionFailed, match="no live value"):
            engine.write([DeleteOp(b"k", Condition(if_version=Version(1, "n1")))])
        version = engine.write([PutOp(b"k", b"new", 0, IF_ABSENT), PutOp(b"t", b"n", 0, IF_ABSENT)])
        assert engine.get(b"k")[:3] == (b"new", version.timestamp, "n1")


def test_group_commit_refuses_conditions(tmp_path: Path) -> None:
    with Engine(tmp_path / "e", "n1") as engine:
        results = engine.write_group([[PutOp(b"k", b"v", 0, IF_ABSENT)]])
        assert isinstance(results[0], InvalidArgument)


async def test_group_committer_checks_conditions(tmp_path: Path) -> None:
    with Engine(tmp_path / "e", "n1", EngineSettings(sync_writes=True)) as engine:
        committer = GroupCommitter(engine)
        first = await committer.write([PutOp(b"c", b"0", 0, IF_ABSENT)])
        outcomes = await asyncio.gather(
            *(
                committer.write([PutOp(b"c", b"1", 0, Condition(if_version=first))])
                for _ in range(5)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(o, Version) for o in outcomes) == 1
        assert sum(isinstance(o, ConditionFailed) for o in outcomes) == 4


# -- STRONG reads -------------------------------------------------------------------


async def test_strong_get_served_by_home(nodes: Nodes) -> None:
    await nodes["fra-1"].put(b"ctr/s", b"v", 0, client())
    # Not replicated here: LOCAL at nrt-1 misses it, STRONG goes to the home.
    assert (await nodes["nrt-1"].get(b"ctr/s", client())).found is None
    result = await nodes["nrt-1"].get(b"ctr/s", client(STRONG))
    assert result.served_by == "fra-1" and result.found is not None
    assert (await nodes["fra-1"].get(b"ctr/s", client(STRONG))).served_by == "fra-1"


async def test_strong_answers_carry_the_session_token(nodes: Nodes) -> None:
    # The SDK merges every answer into its session: a STRONG read's version must be in
    # it, or a later SESSION read could return something older than what it saw.
    from edgekv.consistency import decode_token

    ack = await nodes["fra-1"].put(b"ctr/t", b"v", 0, client())
    for node in ("nrt-1", "fra-1"):
        result = await nodes[node].get(b"ctr/t", client(STRONG))
        assert decode_token(result.session_token) == {"fra-1": ack.version.timestamp}
        many = await nodes[node].get_many([b"ctr/t"], client(STRONG))
        assert decode_token(many.session_token) == {"fra-1": ack.version.timestamp}
        page = await nodes[node].scan(client(STRONG), prefix=b"ctr/")
        assert decode_token(page.session_token) == {"fra-1": ack.version.timestamp}


async def test_strong_get_without_home_refused_naming_key(nodes: Nodes) -> None:
    with pytest.raises(FailedPrecondition, match="key b'eu/x' has no home"):
        await nodes["fra-1"].get(b"eu/x", client(STRONG))


async def test_strong_batch_get_each_key_at_its_home(nodes: Nodes) -> None:
    await nodes["fra-1"].put(b"ctr/1", b"a", 0, client())
    await nodes["iad-1"].put(b"us/1", b"b", 0, client())
    result = await nodes["nrt-1"].get_many([b"ctr/1", b"us/1", b"ctr/2"], client(STRONG))
    assert [f[0] if f else None for f in result.found] == [b"a", b"b", None]
    assert result.read_by == ["fra-1", "iad-1", "fra-1"]
    with pytest.raises(FailedPrecondition, match="no home"):
        await nodes["nrt-1"].get_many([b"ctr/1", b"g/1"], client(STRONG))


async def test_strong_scan_under_one_home(nodes: Nodes) -> None:
    for i in range(3):
        await nodes["fra-1"].put(b"ctr/%d" % i, b"v", 0, client())
    page = await nodes["iad-1"].scan(client(STRONG), prefix=b"ctr/")
    assert [i.key for i in page.items] == [b"ctr/0", b"ctr/1", b"ctr/2"]
    assert page.served_by == "fra-1"
    with pytest.raises(FailedPrecondition, match="must lie under one home"):
        await nodes["iad-1"].scan(client(STRONG), prefix=b"c")


async def test_strong_read_home_down_unavailable(nodes: Nodes) -> None:
    del nodes.coordinators["fra-1"]
    with pytest.raises(Unavailable, match="fra-1"):
        await nodes["nrt-1"].get(b"ctr/s", client(STRONG))
    assert (await nodes["nrt-1"].get(b"ctr/s", client())).served_by == "nrt-1"  # LOCAL works


def test_sdk_routes_homed_writes_to_the_home_first(tmp_path: Path) -> None:
    from edgekv.client.discovery import NodeRoute, Topology

    rules = PlacementRules.from_config(parse_config(cluster_doc(RULES), tmp_path))
    nodes = [NodeRoute(n, r, f"{n}:1", rtt_ms=float(i)) for i, (n, r) in enumerate(reversed(NODES))]
    topology = Topology(nodes, rules)
    nearest = [n.node_id for n in topology.route(b"ctr/x")]
    assert nearest[0] == "nrt-1"  # reads: the nearest allowed node
    writes = [n.node_id for n in topology.route(b"ctr/x", write=True)]
    assert writes[0] == "fra-1" and sorted(writes) == sorted(nearest)
    assert topology.route(b"g/x", write=True)[0].node_id == "nrt-1"  # no home: as before


@pytest.mark.parametrize("header", ["\u00b2.fra-1", "18446744073709551616.fra-1", "x.fra-1"])
def test_if_match_takes_a_64_bit_timestamp_of_ascii_digits(header: str) -> None:
    from edgekv.http.rest import rest_condition

    with pytest.raises(InvalidArgument, match=r"If-Match must be a version TS\.ORIGIN"):
        rest_condition(None, header)  # was a 500 (ValueError) for the first two
    assert rest_condition(None, "18446744073709551615.fra-1") is not None
