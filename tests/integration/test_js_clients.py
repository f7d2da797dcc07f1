"""Real JS clients (connect-node, connect-web under Node 20) against real nodes' HTTP doors.

One two-region cluster for the module (tokens on, the eu/ prefix pinned to
eu-west), reached over each node's http_listen with the Connect protocol (JSON
and binary) and gRPC-Web, by the clients a Worker, a browser or a Node service
would use. Every call goes through the same request layer as the gRPC door, so
what JS writes the Python SDK reads over gRPC, and the other way round.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from jsnode import (
    JS,
    NODE,
    REPO,
    NodeScript,
    b64,
    http_url,
    kv_calls,
    needs_node,
    npm_setup,
    ok,
    unb64,
)

from edgekv import Client
from edgekv.limits import DEFAULT_MAX_BATCH_OPS, DEFAULT_MAX_VALUE_BYTES
from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import scrape_metrics, wait_until
from edgekv.server.auth import hash_token

pytestmark = [pytest.mark.integration, needs_node]

TOKENS = {"writer": "w-secret-js", "reader": "r-secret-js"}
EU, US = "fra-1", "iad-1"
# (transport, binary): every client and wire format a fetch runtime or Node has.
UNARY_TRANSPORTS = [
    ("connect-node", False),
    ("connect-node", True),
    ("connect-web", False),
    ("connect-web", True),
    ("grpcweb-node", True),
    ("grpcweb-web", True),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    npm_setup()
    security = {
        "auth": {
            "mode": "tokens",
            "tokens": [
                {"name": "writer", "sha256": hash_token(TOKENS["writer"]).hex(), "scope": "write"},
                {"name": "reader", "sha256": hash_token(TOKENS["reader"]).hex(), "scope": "read"},
            ],
        },
        "insecure_peer_plane": True,  # loopback only; the peer plane is not under test here
    }
    path = write_cluster_file(
        tmp_path_factory.mktemp("js-clients"),
        regions=(("eu-west", 50.11, 8.68), ("us-east", 38.95, -77.45)),
        nodes=((EU, "eu-west"), (US, "us-east")),
        placement=(("eu/", ["eu-west"]),),
        extra={"security": security, "replication": {"heartbeat_interval_s": 0.2}},
        metrics=True,
        http=True,
    )
    with LocalCluster(path) as local:
        local.start()
        yield local


def sdk(cluster: LocalCluster, node: str) -> Client:
    return Client(cluster.endpoint(node), discover=False, token=TOKENS["writer"], timeout_s=10)


def url(cluster: LocalCluster, node: str) -> str:
    return http_url(cluster.nodes[node])


def prefix_for(name: str) -> str:
    return f"js/{name}/{uuid.uuid4().hex[:8]}/"


@pytest.mark.parametrize(("transport", "binary"), UNARY_TRANSPORTS)
def test_every_unary_call_over_each_js_transport(
    cluster: LocalCluster, transport: str, binary: bool
) -> None:
    p = prefix_for(f"{transport}-{'proto' if binary else 'json'}")
    k1, k2, missing = p + "a", p + "b", p + "missing"
    value = bytes(range(256))  # every byte value: base64 in JSON, raw in proto
    calls: list[dict[str, Any]] = [
        {"method": "put", "request": {"key": b64(k1), "value": b64(value), "ttlMs": "60000"}},
        {"method": "put", "request": {"key": b64(k2), "value": b64("two")}},
        {"method": "get", "request": {"key": b64(k1)}},
        {"method": "batchGet", "request": {"keys": [b64(k2), b64(missing), b64(k1)]}},
        {"method": "scan", "request": {"prefix": b64(p), "limit": 10}},
        {"method": "write", "request": {"ops": [
            {"put": {"key": b64(p + "c"), "value": b64("three")}},
            {"delete": {"key": b64(k2)}},
        ]}},
        {"method": "delete", "request": {"key": b64(k1)}},
        {"method": "get", "request": {"key": b64(k1)}},
        {"method": "scan", "request": {"prefix": b64(p), "keysOnly": True}},
    ]  # fmt: skip
    started_ms = time.time() * 1000
    put1, put2, get1, many, scan, write, delete, gone, scan2 = (
        ok(r) for r in kv_calls(url(cluster, US), calls, transport=transport, binary=binary,
                                token=TOKENS["writer"])
    )  # fmt: skip
    assert put1["servedBy"] == put2["servedBy"] == US
    assert put1["version"]["origin"] == US and int(put1["version"]["timestamp"]) > 0
    assert get1["found"] is True and unb64(get1["value"]) == value
    assert get1["version"] == put1["version"]
    assert started_ms + 60_000 <= int(get1["expiresAtMs"]) <= time.time() * 1000 + 60_000
    assert [(unb64(r["key"]).decode(), r["found"]) for r in many["results"]] == [
        (k2, True),
        (missing, False),
        (k1, True),
    ]
    assert unb64(many["results"][0]["value"]) == b"two"
    assert [unb64(i["key"]).decode() for i in scan["items"]] == [k1, k2]
    assert scan["nextPageToken"] == ""
    assert write["servedBy"] == US and delete["servedBy"] == US
    assert gone["found"] is False and gone["value"] == ""
    assert [(unb64(i["key"]).decode(), i["value"]) for i in scan2["items"]] == [(p + "c", "")]
    # The same data through the gRPC door, from the other region's node.
    with sdk(cluster, EU) as eu:
        entry = wait_until(lambda: eu.get(p + "c"), timeout_s=15, what="the JS write at fra-1")
        assert entry.value == b"three" and entry.version.origin == US
        wait_until(lambda: eu.get(k2) is None, timeout_s=15, what="the JS delete at fra-1")


# One client per wire format: Connect JSON, Connect proto, gRPC-Web.
@pytest.mark.parametrize(
    ("transport", "binary"),
    [("connect-node", False), ("connect-web", True), ("grpcweb-node", True)],
)
def test_errors_map_to_connect_codes_with_the_nodes_message(
    cluster: LocalCluster, transport: str, binary: bool
) -> None:
    p = prefix_for("errors")
    calls: list[dict[str, Any]] = [
        {"method": "put", "request": {"key": "", "value": b64("v")}},
        {"method": "put", "request": {"key": b64("k" * 1025), "value": b64("v")}},
        {"method": "put", "request": {"key": b64(p + "big"),
                                      "value": b64(b"x" * (DEFAULT_MAX_VALUE_BYTES + 1))}},
        {"method": "batchGet", "request": {"keys": [b64(f"{p}{i}")
                                                    for i in range(DEFAULT_MAX_BATCH_OPS + 1)]}},
        {"method": "scan", "request": {"prefix": b64(p), "limit": 10_001}},
        {"method": "write", "request": {"ops": []}},
        {"method": "get", "request": {"key": b64(p + "big")}},
    ]  # fmt: skip
    results = kv_calls(url(cluster, US), calls, transport=transport, binary=binary,
                       token=TOKENS["writer"])  # fmt: skip
    errors = [(r.get("error") or {}).get("code") for r in results[:-1]]
    assert errors == ["InvalidArgument"] * 6, results
    messages = [r["error"]["message"] for r in results[:-1]]
    assert "key is empty" in messages[0]
    assert "key is 1025 bytes; the limit is 1024" in messages[1]
    assert (
        f"value is {DEFAULT_MAX_VALUE_BYTES + 1} bytes; the limit is {DEFAULT_MAX_VALUE_BYTES} "
        "(max_value_bytes)" in messages[2]
    )
    assert f"{DEFAULT_MAX_BATCH_OPS} (max_batch_ops)" in messages[3]
    assert "max_scan_limit" in messages[4]
    assert "batch is empty" in messages[5]
    # Nothing was written by the rejected calls, and the node still serves.
    assert ok(results[-1])["found"] is False


@pytest.mark.parametrize(("transport", "binary"), [("connect-web", True), ("grpcweb-node", True)])
def test_value_at_the_limit_roundtrips(cluster: LocalCluster, transport: str, binary: bool) -> None:
    key = prefix_for("large") + "v"
    value = bytes(i % 251 for i in range(DEFAULT_MAX_VALUE_BYTES))
    put, got = kv_calls(
        url(cluster, US),
        [{"method": "put", "request": {"key": b64(key), "value": b64(value)}},
         {"method": "get", "request": {"key": b64(key)}}],
        transport=transport, binary=binary, token=TOKENS["writer"],
    )  # fmt: skip
    assert ok(put)["servedBy"] == US
    assert unb64(ok(got)["value"]) == value


@pytest.mark.parametrize("transport", ["connect-node", "grpcweb-web"])
def test_tokens_required_and_checked(cluster: LocalCluster, transport: str) -> None:
    key = b64(prefix_for("auth") + "k")
    put = {"method": "put", "request": {"key": key, "value": b64("v")}}
    get = {"method": "get", "request": {"key": key}}
    base = url(cluster, US)
    for token in (None, "not-a-token"):
        results = kv_calls(base, [get, put], transport=transport, token=token)
        assert [r["error"]["code"] for r in results] == ["Unauthenticated"] * 2, results
        assert all("token" in r["error"]["message"] for r in results)
    denied, read = kv_calls(base, [put, get], transport=transport, token=TOKENS["reader"])
    assert denied["error"]["code"] == "PermissionDenied", denied
    assert ok(read)["found"] is False
    wrote, read = kv_calls(base, [put, get], transport=transport, token=TOKENS["writer"])
    assert ok(wrote)["servedBy"] == US and ok(read)["found"] is True


@pytest.mark.parametrize(("transport", "binary"), [("connect-web", False), ("grpcweb-web", True)])
def test_pinned_key_forwarded_to_its_region(
    cluster: LocalCluster, transport: str, binary: bool
) -> None:
    key = "eu/" + prefix_for("pinned") + "profile"
    put, got, scan = kv_calls(
        url(cluster, US),
        [{"method": "put", "request": {"key": b64(key), "value": b64("Ada, Berlin")}},
         {"method": "get", "request": {"key": b64(key)}},
         {"method": "batchGet", "request": {"keys": [b64(key)]}}],
        transport=transport, binary=binary, token=TOKENS["writer"],
    )  # fmt: skip
    assert ok(put)["servedBy"] == EU  # us-east may not hold eu/ keys: forwarded
    assert ok(got)["servedBy"] == EU and unb64(ok(got)["value"]) == b"Ada, Berlin"
    assert ok(scan)["results"][0]["servedBy"] == EU
    # The door names the serving node in a header too, for clients that read no body.
    assert put["header"]["edgekv-served-by"] == got["header"]["edgekv-served-by"] == EU
    with sdk(cluster, EU) as eu:
        assert eu.get(key).value == b"Ada, Berlin"  # type: ignore[union-attr]


def test_cluster_status_and_members_over_connect(cluster: LocalCluster) -> None:
    status, members = kv_calls(
        url(cluster, EU),
        [{"service": "Cluster", "method": "status"},
         {"service": "Cluster", "method": "members"}],
        transport="connect-node", binary=False, token=TOKENS["reader"],
    )  # fmt: skip
    assert ok(status)["nodeId"] == EU
    assert sorted(m["nodeId"] for m in ok(members)["members"]) == [EU, US]


def watch_streams(cluster: LocalCluster, node: str) -> float:
    samples = scrape_metrics(cluster.nodes[node].info["metrics_port"])["edgekv_watch_streams"]
    return samples[0][1]


@pytest.mark.parametrize(
    ("transport", "binary"), [("connect-node", True), ("connect-web", False), ("grpcweb-web", True)]
)
def test_watch_streams_changes_and_cancel_ends_it_on_the_node(
    cluster: LocalCluster, transport: str, binary: bool
) -> None:
    p = prefix_for("watch")
    assert watch_streams(cluster, US) == 0
    spec = {"transport": transport, "binary": binary, "baseUrl": url(cluster, US),
            "token": TOKENS["reader"], "prefix": b64(p)}  # fmt: skip
    with NodeScript("watch.mjs", spec) as watch, sdk(cluster, US) as us, sdk(cluster, EU) as eu:

        def opened() -> bool:  # a write shows up once the stream is open
            us.put(p + "probe", "x")
            return any("event" in line for line in watch.collected())

        wait_until(opened, timeout_s=15, interval_s=0.05, what="the Watch stream to open")
        assert watch_streams(cluster, US) == 1
        us.put(p + "local", "1", ttl_ms=60_000)
        eu.put(p + "replicated", "2")  # written in eu-west, replicated to iad-1

        def seen() -> list[tuple[str, bool, bool]]:
            events = [line["event"] for line in watch.collected() if "event" in line]
            return [(unb64(e["key"]).decode(), e["deleted"], e["local"]) for e in events
                    if not unb64(e["key"]).endswith(b"probe")]  # fmt: skip

        # Replication is asynchronous: delete only once the replicated put arrived.
        wait_until(lambda: len(seen()) >= 2, timeout_s=15, what="two watch events")
        us.delete(p + "local")
        wait_until(lambda: len(seen()) >= 3, timeout_s=15, what="the delete's watch event")
        wanted = [(p + "local", False, True), (p + "replicated", False, False),
                  (p + "local", True, True)]  # fmt: skip
        assert seen() == wanted
        first = next(
            line["event"]
            for line in watch.collected()
            if "event" in line and unb64(line["event"]["key"]) == (p + "local").encode()
        )
        assert unb64(first["value"]) == b"1" and int(first["expiresAtMs"]) > 0
        assert first["servedBy"] == US
        watch.send("cancel")
        end = watch.wait_for("the stream's end", lambda line: "ended" in line)
        assert end["ended"] == "Canceled", end
        # The node noticed the client went away and dropped its subscription.
        wait_until(lambda: watch_streams(cluster, US) == 0, timeout_s=10,
                   what="the node to close the cancelled Watch")  # fmt: skip


def test_browser_bundle_reads_and_writes_under_node(cluster: LocalCluster) -> None:
    """examples/browser/dist/page.js, as a browser loads it, run by Node against a node."""
    key = prefix_for("browser") + "k"
    spec = {"baseUrl": url(cluster, EU), "token": TOKENS["writer"], "key": key,
            "value": "hi from the browser", "ttlMs": 30_000}  # fmt: skip
    proc = subprocess.run(
        [str(NODE), str(JS / "browser_page.mjs"), json.dumps(spec)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "error" not in out, out
    assert out["wrote"]["servedBy"] == EU
    assert out["read"] == {"key": key, "found": True, "value": "hi from the browser",
                           "servedBy": EU, "expiresAtMs": out["read"]["expiresAtMs"]}  # fmt: skip
    assert int(out["read"]["expiresAtMs"]) > time.time() * 1000
    assert out["deleted"]["servedBy"] == EU and out["after"]["found"] is False
