"""The HTTP door with ``http.h2c: true`` on a real node: HTTP/2 and HTTP/1.1 on one port.

One node for the module, its door served by hypercorn. Python (httpx with h2)
and Node (@connectrpc/connect-node with httpVersion "2") speak HTTP/2 by prior
knowledge, the way gRPC-style clients open cleartext h2; a raw HTTP/1.1 client
upgrades with ``Upgrade: h2c``; and plain HTTP/1.1 keep-alive still works on
the same port. The door's behaviour itself is test_http_door.py's.
"""

from __future__ import annotations

import base64
import http.client
import json
import queue
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
from jsnode import NodeScript, b64, kv_calls, needs_node, npm_setup, ok, unb64

from edgekv.local.cluster import LocalCluster
from edgekv.local.launcher import write_cluster_file
from edgekv.local.wait import scrape_metrics, wait_until
from edgekv.v1 import kv_pb2

pytestmark = pytest.mark.integration

NODE_ID = "node-1"
PROTO = {"content-type": "application/proto", "connect-protocol-version": "1"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = write_cluster_file(
        tmp_path_factory.mktemp("http-h2c"), extra={"http": {"h2c": True}}, metrics=True, http=True
    )
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        yield cluster


def base(node: LocalCluster) -> str:
    return f"http://{node.nodes[NODE_ID].http_endpoint}"


def prefix_for(name: str) -> str:
    return f"h2c/{name}/{uuid.uuid4().hex[:8]}/"


def metric(node: LocalCluster, name: str) -> float:
    port = node.nodes[NODE_ID].info["metrics_port"]
    return sum(value for _, value in scrape_metrics(port).get(name, []))


def watch_streams(node: LocalCluster) -> float:
    return metric(node, "edgekv_watch_streams")


def calls_ended(node: LocalCluster) -> bool:
    """No Watch stream open and no call holding an admission slot on the door."""
    return watch_streams(node) == 0 and metric(node, "edgekv_http_inflight") == 0


def test_connect_unary_over_h2c_prior_knowledge_and_http11_on_the_same_port(
    node: LocalCluster,
) -> None:
    key = (prefix_for("unary") + "k").encode()
    with httpx.Client(http1=False, http2=True, timeout=10) as h2c:
        put = h2c.post(
            f"{base(node)}/edgekv.v1.KV/Put",
            content=kv_pb2.PutRequest(key=key, value=b"over h2").SerializeToString(),
            headers=PROTO,
        )
        assert put.http_version == "HTTP/2" and put.status_code == 200, put.text
        assert kv_pb2.PutResponse.FromString(put.content).served_by == NODE_ID
        got = h2c.post(
            f"{base(node)}/edgekv.v1.KV/Get",
            json={"key": base64.b64encode(key).decode()},
            headers={"connect-protocol-version": "1"},
        )
        assert got.http_version == "HTTP/2" and got.status_code == 200, got.text
        assert base64.b64decode(got.json()["value"]) == b"over h2"
        assert got.headers["edgekv-served-by"] == NODE_ID
        rest = h2c.get(f"{base(node)}/v1/kv/{key.decode()}")
        assert rest.http_version == "HTTP/2" and rest.content == b"over h2"

    # HTTP/1.1 with keep-alive on the same port.
    host, port = node.nodes[NODE_ID].http_endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = kv_pb2.GetRequest(key=key).SerializeToString()
        conn.request("POST", "/edgekv.v1.KV/Get", body, PROTO)
        answer = conn.getresponse()
        assert answer.status == 200 and answer.version == 11
        assert kv_pb2.GetResponse.FromString(answer.read()).value == b"over h2"
        first_socket = conn.sock
        conn.request("GET", f"/v1/kv/{key.decode()}")
        answer = conn.getresponse()
        assert answer.status == 200 and answer.read() == b"over h2"
        assert conn.sock is first_socket, "HTTP/1.1 keep-alive: the same connection served both"
    finally:
        conn.close()


def test_http11_upgrade_to_h2c(node: LocalCluster) -> None:
    """``Upgrade: h2c`` on an HTTP/1.1 request: 101, then the answer on HTTP/2 stream 1."""
    key = prefix_for("upgrade") + "k"
    httpx.put(f"{base(node)}/v1/kv/{key}", content=b"upgraded").raise_for_status()
    h2conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = h2conn.initiate_upgrade_connection()  # base64url SETTINGS, for HTTP2-Settings
    assert settings is not None
    host, port = node.nodes[NODE_ID].http_endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET /v1/kv/{key} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            f"Upgrade: h2c\r\nHTTP2-Settings: {settings.decode()}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"the node closed the connection after {data!r}"
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.sendall(h2conn.data_to_send())  # the client preface and SETTINGS
        status, body, ended = None, b"", False
        events = h2conn.receive_data(rest)
        while not ended:
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == 1:
                    status = dict(event.headers)[b":status"]
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == 1:
                    body += event.data
                    h2conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == 1:
                    ended = True
            sock.sendall(h2conn.data_to_send())
            if not ended:
                chunk = sock.recv(65536)
                assert chunk, "the node closed the connection before the answer ended"
                events = h2conn.receive_data(chunk)
    assert status == b"200" and body == b"upgraded"


def test_watch_streams_over_h2c_and_ends_when_the_client_goes(node: LocalCluster) -> None:
    p = prefix_for("watch")
    request = _frame(json.dumps({"prefix": b64(p)}).encode())
    events: queue.Queue[Any] = queue.Queue()

    def watch() -> None:
        try:
            with (
                httpx.Client(http1=False, http2=True, timeout=30) as h2c,
                h2c.stream(
                    "POST",
                    f"{base(node)}/edgekv.v1.KV/Watch",
                    content=request,
                    headers={"content-type": "application/connect+json"},
                ) as answer,
            ):
                buffer = b""
                for chunk in answer.iter_raw():
                    buffer += chunk
                    frames = _frames(buffer)
                    if frames:
                        events.put((answer.http_version, json.loads(frames[0][1])))
                        return  # closes the stream: the client goes away
        except Exception as exc:  # surfaces in the test thread
            events.put(exc)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    wait_until(lambda: watch_streams(node) >= 1, timeout_s=15, what="the Watch stream to open")
    httpx.put(f"{base(node)}/v1/kv/{p}a", content=b"seen").raise_for_status()
    got = events.get(timeout=10)
    assert not isinstance(got, Exception), got
    version, event = got
    assert version == "HTTP/2"
    assert unb64(event["key"]) == f"{p}a".encode() and unb64(event["value"]) == b"seen"
    thread.join(10)
    # The client closed the connection mid-stream: the call ends and frees its slot.
    wait_until(lambda: calls_ended(node), timeout_s=10, what="the Watch call to end")


@needs_node
def test_connect_node_client_over_h2c_unary_and_watch(node: LocalCluster) -> None:
    npm_setup()
    p = prefix_for("js")
    calls: list[dict[str, Any]] = [
        {"method": "put", "request": {"key": b64(p + "a"), "value": b64("from node")}},
        {"method": "get", "request": {"key": b64(p + "a")}},
    ]
    put, get = (ok(r) for r in kv_calls(base(node), calls, http_version="2"))
    assert put["servedBy"] == NODE_ID
    assert get["found"] is True and unb64(get["value"]) == b"from node"

    spec = {"transport": "connect-node", "binary": True, "baseUrl": base(node),
            "httpVersion": "2", "prefix": b64(p)}  # fmt: skip
    with NodeScript("watch.mjs", spec) as watch:

        def opened() -> bool:  # a write shows up once the stream is open
            httpx.put(f"{base(node)}/v1/kv/{p}probe", content=b"x").raise_for_status()
            return any("event" in line for line in watch.collected())

        wait_until(opened, timeout_s=15, interval_s=0.05, what="the Watch stream to open")
        watch.send("cancel")
        end = watch.wait_for("the stream's end", lambda line: "ended" in line)
        assert end["ended"] == "Canceled", end
    wait_until(lambda: calls_ended(node), timeout_s=10, what="the cancelled Watch call to end")


def _frame(message: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(message)) + message


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """The whole Connect envelopes at the start of ``data``."""
    frames = []
    while len(data) >= 5:
        flags, length = struct.unpack(">BI", data[:5])
        if len(data) < 5 + length:
            break
        frames.append((flags, data[5 : 5 + length]))
        data = data[5 + length :]
    return frames
