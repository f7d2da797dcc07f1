"""The HTTP door read as an attacker would: malformed and hostile requests on real nodes.

One two-region cluster for the module (fra-1 in eu-west holds "eu/" keys, iad-1
in us-east forwards them) with bearer tokens and http_listen on every node.
Each test sends what a hostile or broken client could send and checks the
door answers with a 4xx naming the problem (never a 500, never an "Exception
in ASGI application" in the node's log) and stays up.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
from collections.abc import Iterator

import httpx
import pytest
from doorcluster import token_entry, write_door_cluster

from edgekv.local.cluster import LocalCluster

pytestmark = pytest.mark.integration

WRITER, APPS = "writer-token", "apps-token"
UNHANDLED = "Exception in ASGI application"
HEAD_LIMIT = 8192
REQUEST_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = write_door_cluster(
        tmp_path_factory.mktemp("http-abuse"),
        tokens=[
            token_entry("writer", WRITER, "write"),
            token_entry("apps", APPS, "write", ["app/"]),
        ],
        extra={"http": {"max_header_bytes": HEAD_LIMIT, "request_timeout_s": REQUEST_TIMEOUT_S}},
    )
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        yield cluster


def base(door: LocalCluster, node: str = "fra-1") -> str:
    return f"http://{door.nodes[node].http_endpoint}"


def auth() -> dict[str, str]:
    return {"authorization": f"Bearer {WRITER}"}


def unhandled(door: LocalCluster, node: str) -> int:
    """How many requests the node's HTTP door failed to answer itself (uvicorn's 500)."""
    return door.nodes[node].log_path.read_text(errors="replace").count(UNHANDLED)


def assert_up(door: LocalCluster, node: str) -> None:
    answer = httpx.get(f"{base(door, node)}/v1/openapi.json", timeout=10)
    assert answer.status_code == 200


def test_connect_timeout_header_out_of_protocol_is_refused_as_connectrpc_does(
    door: LocalCluster,
) -> None:
    """connect-timeout-ms is 1 to 10 digits (Connect protocol); anything else is a 400,
    on the unary hot path as through connectrpc, never a 500 or a call without deadline."""
    before = unhandled(door, "fra-1")
    for timeout in ("1" * 5000, "9" * 400, "99999999999", "-1", "abc", "1.5"):
        for content_type in ("application/json", "application/json; charset=utf-8"):
            answer = httpx.post(
                f"{base(door)}/edgekv.v1.KV/Get",
                content=b'{"key": "YQ=="}',
                headers={**auth(), "content-type": content_type, "connect-timeout-ms": timeout},
                timeout=10,
            )
            assert answer.status_code == 400, (timeout[:20], content_type, answer.text)
            body = answer.json()
            assert body["code"] == "invalid_argument", body
            assert "timeout" in body["message"].lower(), body
    assert unhandled(door, "fra-1") == before
    assert_up(door, "fra-1")


def test_forwarded_rest_calls_with_out_of_range_numbers_are_refused_with_a_400(
    door: LocalCluster,
) -> None:
    """A PUT with a huge ttl or a list with a huge limit, on a node that forwards the key
    (iad-1 for "eu/"), is refused with the request layer's message before it is forwarded."""
    iad = base(door, "iad-1")
    before = unhandled(door, "iad-1")
    cases = [
        ("PUT", "/v1/kv/eu/ttl", {"ttl": "9" * 30}, {}, "ttl_ms is"),
        ("PUT", "/v1/kv/eu/ttl", {}, {"edgekv-ttl-ms": str(2**64)}, "ttl_ms is"),
        ("GET", "/v1/kv", {"prefix": "eu/", "limit": "9" * 30}, {}, "max_scan_limit"),
    ]
    for method, path, params, headers, message in cases:
        answer = httpx.request(
            method, iad + path, params=params, content=b"v", headers={**auth(), **headers}
        )
        assert answer.status_code == 400, (path, params, headers, answer.text)
        assert message in answer.json()["message"], answer.text
    assert unhandled(door, "iad-1") == before
    assert_up(door, "iad-1")


def _exchange(door: LocalCluster, chunks: list[bytes], pause_s: float = 0.0) -> tuple[bytes, float]:
    """Send ``chunks`` on a fresh connection (``pause_s`` apart), then read until the node
    closes it (at most 15 s); the bytes answered and the seconds from the first send."""
    host, port = door.nodes["fra-1"].http_endpoint.rsplit(":", 1)
    answer = b""
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        started = time.monotonic()
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                if pause_s:
                    time.sleep(pause_s)  # a slow client's pace, not a wait for the node
        except (BrokenPipeError, ConnectionResetError):
            pass  # the node closed the connection while we were still sending
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass  # closed with our bytes unread: what it answered first was read above
        except TimeoutError:
            pytest.fail(f"the node kept the connection open; it answered {answer[:200]!r}")
        return answer, time.monotonic() - started


def test_request_head_over_max_header_bytes_is_refused_with_431(door: LocalCluster) -> None:
    """uvicorn with httptools keeps a request head of any size in memory: the door
    answers 431 past http.max_header_bytes, whether the head comes in one read or many."""
    line = b"GET /v1/openapi.json HTTP/1.1\r\nhost: x\r\n"
    huge = [line] + [b"x-filler: " + b"a" * 60_000 + b"\r\n"] * 100  # 6 MB of headers
    one_value = [line + b"x-big: " + b"b" * 6_000_000]  # one header line, never ended
    one_read = [line + b"x-big: " + b"c" * (HEAD_LIMIT + 1) + b"\r\n\r\n"]
    for chunks in (huge, one_value, one_read):
        answer, _ = _exchange(door, chunks)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert f"the limit is {HEAD_LIMIT} (http.max_header_bytes)" in body["message"], body
    fits = [line + b"x-ok: " + b"d" * (HEAD_LIMIT - 200) + b"\r\nconnection: close\r\n\r\n"]
    answer, _ = _exchange(door, fits)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert_up(door, "fra-1")


def test_slow_requests_are_cut_off_after_request_timeout(door: LocalCluster) -> None:
    """A head dripped a byte at a time (slowloris) gets 408, and a body that stops
    coming gets its connection closed, http.request_timeout_s after the first byte."""
    drip = [b"GET /v1/openapi.json HTTP/1.1\r\nhost: x\r\n"] + [b"x"] * 40
    answer, elapsed = _exchange(door, drip, pause_s=0.1)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"(http.request_timeout_s)" in answer
    assert elapsed < REQUEST_TIMEOUT_S + 3, elapsed

    put = (
        b"PUT /v1/kv/slow/a HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n"
        b"content-length: 1000\r\n\r\n" % WRITER.encode()
    )
    answer, elapsed = _exchange(door, [put, b"v" * 10])
    assert elapsed < REQUEST_TIMEOUT_S + 3, elapsed
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert_up(door, "fra-1")


def test_prefix_token_and_forwarded_by_header_grant_nothing_more_over_http(
    door: LocalCluster,
) -> None:
    """A token confined to "app/" lists and watches only "app/" (a cursor naming another
    range included), and a client claiming to be a peer (edgekv-forwarded-by) only gets
    its call refused, not served outside the key's region."""
    apps = {"authorization": f"Bearer {APPS}"}
    assert httpx.put(f"{base(door)}/v1/kv/app/1", content=b"v", headers=apps).status_code == 200
    listed = httpx.get(f"{base(door)}/v1/kv", params={"prefix": "app/"}, headers=apps)
    assert [k["name"] for k in listed.json()["keys"]] == ["app/1"]
    elsewhere = base64.urlsafe_b64encode(b"secret/").decode().rstrip("=")
    for params in ({"prefix": ""}, {"prefix": "", "cursor": elsewhere}):
        answer = httpx.get(f"{base(door)}/v1/kv", params=params, headers=apps)
        assert answer.status_code == 403, (params, answer.text)
    answer = httpx.get(
        f"{base(door)}/v1/kv", params={"prefix": "app/", "cursor": elsewhere}, headers=apps
    )
    assert answer.status_code == 400 and "page_token" in answer.text, answer.text

    request = json.dumps({"prefix": base64.b64encode(b"").decode()}).encode()
    watch = httpx.post(
        f"{base(door)}/edgekv.v1.KV/Watch",
        content=struct.pack(">BI", 0, len(request)) + request,
        headers={**apps, "content-type": "application/connect+json"},
        timeout=10,
    )
    flags, length = struct.unpack(">BI", watch.content[:5])
    end = json.loads(watch.content[5 : 5 + length])
    assert flags & 2 and end["error"]["code"] == "permission_denied", end

    spoofed = {**auth(), "edgekv-forwarded-by": "fra-1"}
    for path, params in (("/v1/kv/eu/x", {}), ("/v1/kv", {"prefix": "eu/"})):
        answer = httpx.get(base(door, "iad-1") + path, params=params, headers=spoofed)
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == "failed_precondition", answer.text
