"""Conditions and STRONG reads through every door, on real node processes (issue 13).

Two regions; "ctr/" homed at fra-1 and allowed everywhere, "loose/" unhomed.
The REST face (If-None-Match / If-Match -> 412 with the current version), the
Connect door (error details), the SDK over gRPC and over HTTP (ConditionFailed
with current_version), the CLI (--if-absent / --if-version, exit 6) and STRONG
reads through the raw Connect field.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgekv import Client, ConditionFailed, FailedPrecondition, Version
from edgekv.cli import exitcodes
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.v1 import common_pb2, kv_pb2

pytestmark = pytest.mark.integration

EDGEKV = Path(sys.executable).parent / "edgekv"
PROTO = {"content-type": "application/proto", "connect-protocol-version": "1"}
ALL = ["eu-west", "us-east"]


@pytest.fixture(scope="module")
def homed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = write_cluster_file(
        tmp_path_factory.mktemp("home-doors"),
        regions=(("eu-west", 50.1, 8.7), ("us-east", 38.9, -77.4)),
        nodes=(("fra-1", "eu-west"), ("iad-1", "us-east")),
        placement=(("ctr/", ALL, "fra-1"), ("loose/", ALL)),
        http=True,
    )
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        yield cluster


def rest(homed: LocalCluster, node: str, key: str) -> str:
    return f"http://{homed.nodes[node].http_endpoint}/v1/kv/{key}"


def test_rest_if_none_match_and_if_match(homed: LocalCluster) -> None:
    url = rest(homed, "iad-1", "ctr%2Frest")
    created = httpx.put(url, content=b"1", headers={"if-none-match": "*"})
    assert created.status_code == 200, created.text
    assert created.headers["edgekv-served-by"] == "fra-1"
    version = created.json()["version"]  # TS.ORIGIN, as GET's edgekv-version gives it
    again = httpx.put(url, content=b"2", headers={"if-none-match": "*"})
    assert again.status_code == 412
    assert again.headers["edgekv-current-version"] == version
    assert again.json()["code"] == "failed_precondition" and "ctr/rest" in again.json()["message"]
    updated = httpx.put(url, content=b"2", headers={"if-match": version})
    assert updated.status_code == 200
    assert (
        httpx.get(rest(homed, "fra-1", "ctr%2Frest")).headers["edgekv-version"]
        == (updated.json()["version"])
    )
    stale = httpx.delete(url, headers={"if-match": version})
    assert stale.status_code == 412
    assert stale.headers["edgekv-current-version"] != version
    current = stale.headers["edgekv-current-version"]
    assert httpx.delete(url, headers={"if-match": f'"{current}"'}).status_code == 200
    gone = httpx.put(url, content=b"3", headers={"if-match": current})
    assert gone.status_code == 412 and "edgekv-current-version" not in gone.headers
    bad = httpx.put(url, content=b"3", headers={"if-match": "yesterday"})
    assert bad.status_code == 400 and "TS.ORIGIN" in bad.json()["message"]


def test_rest_condition_on_unhomed_key_is_not_412(homed: LocalCluster) -> None:
    refused = httpx.put(
        rest(homed, "fra-1", "loose%2Fk"), content=b"1", headers={"if-none-match": "*"}
    )
    assert refused.status_code == 400
    assert "no single order" in refused.json()["message"]


def test_connect_error_details_carry_current_version(homed: LocalCluster) -> None:
    with Client(homed.nodes["fra-1"].endpoint) as client:
        ack = client.put("ctr/connect", b"1")
    request = kv_pb2.PutRequest(
        key=b"ctr/connect", value=b"2", condition=common_pb2.Condition(if_absent=True)
    )
    answer = httpx.post(
        f"http://{homed.nodes['iad-1'].http_endpoint}/edgekv.v1.KV/Put",
        content=request.SerializeToString(),
        headers=PROTO,
    )
    error = answer.json()
    assert answer.status_code == 400 and error["code"] == "failed_precondition"
    (detail,) = error["details"]
    assert detail["type"] == "edgekv.v1.Version"
    assert str(ack.version.timestamp) in error["message"]


@pytest.mark.parametrize("door", ["grpc", "http"])
def test_sdk_cas_and_condition_failed(homed: LocalCluster, door: str) -> None:
    node = homed.nodes["iad-1"]
    endpoint = node.endpoint if door == "grpc" else f"http://{node.http_endpoint}"
    key = f"ctr/sdk-{door}"
    with Client(endpoint, discover=False) as client:
        first = client.put(key, b"0", if_absent=True)
        assert first.served_by == "fra-1"
        with pytest.raises(ConditionFailed) as taken:
            client.put(key, b"x", if_absent=True)
        assert taken.value.current_version == first.version
        second = client.put(key, b"1", if_version=first.version)
        with pytest.raises(ConditionFailed) as stale:
            client.delete(key, if_version=first.version)
        assert stale.value.current_version == second.version
        client.delete(key, if_version=second.version)
        with pytest.raises(ConditionFailed) as gone:
            client.put(key, b"2", if_version=second.version)
        assert gone.value.current_version is None
        with pytest.raises(FailedPrecondition, match="no single order"):
            client.put("loose/sdk", b"1", if_absent=True)


def test_strong_read_over_connect_served_by_home(homed: LocalCluster) -> None:
    with Client(homed.nodes["iad-1"].endpoint) as client:
        client.put("ctr/strong", b"v")
    request = kv_pb2.GetRequest(key=b"ctr/strong", consistency=common_pb2.CONSISTENCY_STRONG)
    answer = httpx.post(
        f"http://{homed.nodes['iad-1'].http_endpoint}/edgekv.v1.KV/Get",
        content=request.SerializeToString(),
        headers=PROTO,
    )
    got = kv_pb2.GetResponse.FromString(answer.content)
    assert got.found and got.value == b"v" and got.served_by == "fra-1"
    unhomed = kv_pb2.GetRequest(key=b"loose/x", consistency=common_pb2.CONSISTENCY_STRONG)
    refused = httpx.post(
        f"http://{homed.nodes['iad-1'].http_endpoint}/edgekv.v1.KV/Get",
        content=unhomed.SerializeToString(),
        headers=PROTO,
    )
    assert refused.json()["code"] == "failed_precondition"
    assert "b'loose/x' has no home" in refused.json()["message"]


def edgekv(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(EDGEKV), *args], capture_output=True, timeout=60)


def test_cli_if_absent_and_if_version(homed: LocalCluster) -> None:
    endpoint = ("--endpoint", homed.nodes["iad-1"].endpoint)
    created = edgekv("put", *endpoint, "--json", "--if-absent", "ctr/cli", "1")
    assert created.returncode == 0, created.stderr
    version = json.loads(created.stdout)["version"]
    again = edgekv("put", *endpoint, "--if-absent", "ctr/cli", "2")
    assert again.returncode == exitcodes.CONDITION_FAILED == 6
    assert (
        b"condition failed" in again.stderr and str(version["timestamp"]).encode() in again.stderr
    )
    ts_origin = f"{version['timestamp']}:{version['origin']}"
    assert edgekv("put", *endpoint, "--if-version", ts_origin, "ctr/cli", "2").returncode == 0
    stale = edgekv("delete", *endpoint, "--if-version", ts_origin, "ctr/cli")
    assert stale.returncode == 6
    usage = edgekv("delete", *endpoint, "--if-version", "soon", "ctr/cli")
    assert usage.returncode == exitcodes.USAGE and b"TS:ORIGIN" in usage.stderr
    with Client(homed.nodes["fra-1"].endpoint) as client:
        entry = client.get("ctr/cli")
    assert entry is not None and entry.value == b"2"
    assert isinstance(entry.version, Version)
