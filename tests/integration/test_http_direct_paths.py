"""Connect unary KV calls answered straight from the connection (edgekv/http/direct.py)
give the answers of the ASGI path, on real node processes over raw sockets.

A request that reaches the node in one network read takes the direct path; the
same request with its body sent a moment after its head takes the ASGI path
(HttpApp, unary.py's ``serve``). Each test sends one request both ways and
compares status, headers (the date and the measured durations aside) and body.
Two regions, so a call for an "eu/" key at iad-1 is forwarded (the direct path
waits for it in a task); bearer tokens; no CORS (with CORS every call takes the
ASGI path: tests/integration/test_http_door.py covers it).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest
from doorcluster import token_entry, write_door_cluster

from edgekv.local.cluster import LocalCluster
from edgekv.local.wait import scrape_metrics
from edgekv.v1 import kv_pb2

pytestmark = pytest.mark.integration

WRITER, READER = "writer-token", "reader-token"
MAX_VALUE = 4096
_DURATION = re.compile(rb"dur=[0-9.]+")


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    path = write_door_cluster(
        tmp_path_factory.mktemp("http-direct"),
        tokens=[token_entry("writer", WRITER, "write"), token_entry("reader", READER, "read")],
        extra={"limits": {"max_value_bytes": MAX_VALUE, "max_message_bytes": 16384}},
        metrics=True,
    )
    with LocalCluster(path, proxies=False) as cluster:
        cluster.start()
        yield cluster


def _address(door: LocalCluster, node: str) -> tuple[str, int]:
    host, port = door.nodes[node].http_endpoint.rsplit(":", 1)
    return host, int(port)


def request(
    method: str,
    body: bytes,
    token: str | None = WRITER,
    content_type: bytes = b"application/proto",
    extra: bytes = b"",
) -> bytes:
    """A whole Connect unary request to the KV service."""
    head = b"POST /edgekv.v1.KV/%s HTTP/1.1\r\nhost: edgekv\r\ncontent-type: %s\r\n" % (
        method.encode(),
        content_type,
    )
    head += b"connect-protocol-version: 1\r\ncontent-length: %d\r\n" % len(body)
    if token is not None:
        head += b"authorization: Bearer %s\r\n" % token.encode()
    return head + extra + b"\r\n" + body


def get(key: bytes, token: str | None = WRITER, extra: bytes = b"") -> bytes:
    return request("Get", kv_pb2.GetRequest(key=key).SerializeToString(), token, extra=extra)


def put(key: bytes, value: bytes, token: str | None = WRITER) -> bytes:
    return request("Put", kv_pb2.PutRequest(key=key, value=value).SerializeToString(), token)


class Response:
    """One HTTP/1.1 response as read off the socket."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]

    def comparable(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Status and headers, without the date and with durations blanked."""
        return self.status, [
            (n, _DURATION.sub(b"dur=X", v)) for n, v in self.headers if n != b"date"
        ]


def _read_responses(
    sock: socket.socket, count: int, close_wait_s: float = 0.5
) -> tuple[list[Response], bool]:
    """``count`` responses, and whether the server closed the connection after them.

    A close is looked for during ``close_wait_s`` after the last response (0: not
    looked for, reported False: for callers that do not use it).
    """
    buffer = b""
    responses: list[Response] = []
    while len(responses) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            lines = buffer[:head_end].split(b"\r\n")
            headers = [
                (n.strip().lower(), v.strip())
                for n, _, v in (line.partition(b":") for line in lines[1:])
            ]
            length = int(dict(headers)[b"content-length"])
            end = head_end + 4 + length
            if len(buffer) >= end:
                status = int(lines[0].split()[1])
                responses.append(Response(status, headers, buffer[head_end + 4 : end]))
                buffer = buffer[end:]
                continue
        data = sock.recv(65536)
        assert data, f"the connection ended after {len(responses)} of {count} responses"
        buffer += data
    assert buffer == b"", buffer
    if close_wait_s <= 0:
        return responses, False
    sock.settimeout(close_wait_s)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return responses, closed


def send(
    door: LocalCluster,
    chunks: list[bytes],
    count: int = 1,
    node: str = "fra-1",
    close_wait_s: float = 0.5,
) -> tuple[list[Response], bool]:
    """Send ``chunks`` on a new connection, 0.2 s apart (separate reads on the node).

    The answers, and whether the node closed the connection (``_read_responses``).
    """
    with socket.create_connection(_address(door, node), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(0.2)
            sock.sendall(chunk)
        return _read_responses(sock, count, close_wait_s)


def both_ways(door: LocalCluster, whole: bytes, node: str = "fra-1") -> tuple[Response, Response]:
    """The answer of ``whole`` sent in one piece (direct) and with its body late (ASGI)."""
    (direct,), _ = send(door, [whole], node=node, close_wait_s=0)
    head, sep, body = whole.partition(b"\r\n\r\n")
    assert body, "a request with a body, so that it can come late"
    (asgi,), _ = send(door, [head + sep, body], node=node, close_wait_s=0)
    return direct, asgi


def _put(door: LocalCluster, key: bytes, value: bytes) -> None:
    put = request("Put", kv_pb2.PutRequest(key=key, value=value).SerializeToString())
    (answer,), _ = send(door, [put], close_wait_s=0)
    assert answer.status == 200, answer.body


def test_get_found_and_missing_answered_alike_both_ways(door: LocalCluster) -> None:
    _put(door, b"direct/a", b"one")
    for key in (b"direct/a", b"direct/none"):
        direct, asgi = both_ways(
            door, request("Get", kv_pb2.GetRequest(key=key).SerializeToString())
        )
        assert direct.status == 200 and direct.comparable() == asgi.comparable()
        assert direct.body == asgi.body
        assert direct.header(b"edgekv-served-by") == [b"fra-1"]
        timings = b",".join(direct.header(b"server-timing"))
        assert b"kv;dur=" in timings and b"total;dur=" in timings, timings
    got = kv_pb2.GetResponse.FromString(direct.body)
    assert not got.found


def test_json_get_answered_alike_both_ways(door: LocalCluster) -> None:
    _put(door, b"direct/j", b"jay")
    body = b'{"key": "ZGlyZWN0L2o="}'  # direct/j
    direct, asgi = both_ways(door, request("Get", body, content_type=b"application/json"))
    assert direct.status == 200 and direct.comparable() == asgi.comparable()
    assert direct.body == asgi.body and b'"value":"amF5"' in direct.body.replace(b" ", b"")


def test_put_answered_alike_both_ways(door: LocalCluster) -> None:
    put = request("Put", kv_pb2.PutRequest(key=b"direct/p", value=b"v").SerializeToString())
    direct, asgi = both_ways(door, put)
    assert direct.status == asgi.status == 200
    assert direct.comparable() == asgi.comparable()
    answers = [kv_pb2.PutResponse.FromString(r.body) for r in (direct, asgi)]
    assert answers[0].version.timestamp < answers[1].version.timestamp  # two writes
    for answer in answers:  # what differs from one write to the next
        answer.ClearField("version")
        answer.ClearField("session_token")
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("name", "whole", "status", "code"),
    [
        ("bad message", request("Get", b"\xff\xff\xff"), 400, b"invalid_argument"),
        (
            "value over max_value_bytes",
            put(b"direct/big", b"x" * (MAX_VALUE + 1)),
            400,
            b"invalid_argument",
        ),
        (
            # max_value_bytes + 64 KiB of framing: refused as declared, read or not
            "body over max_message_bytes",
            put(b"direct/huge", b"x" * (MAX_VALUE + 70 * 1024)),
            429,
            b"resource_exhausted",
        ),
        ("no token", get(b"k", token=None), 401, b"unauthenticated"),
        (
            "read token writes",
            put(b"direct/r", b"v", token=READER),
            403,
            b"permission_denied",
        ),
    ],
)  # fmt: skip
def test_errors_answered_alike_both_ways(
    door: LocalCluster, name: str, whole: bytes, status: int, code: bytes
) -> None:
    direct, asgi = both_ways(door, whole)
    assert direct.status == status, (name, direct.body)
    assert direct.comparable() == asgi.comparable(), name
    assert direct.body == asgi.body and code in direct.body, (name, direct.body)
    assert direct.header(b"content-type") == [b"application/json"]


def test_body_declared_over_the_message_limit_refused_unread(door: LocalCluster) -> None:
    # A declared length over max_message_bytes: refused before the body is read,
    # whichever path; the connection stays usable for the next request.
    big = b"POST /edgekv.v1.KV/Put HTTP/1.1\r\nhost: e\r\ncontent-type: application/proto\r\n"
    big += b"authorization: Bearer %s\r\ncontent-length: 99999999\r\n\r\n" % WRITER.encode()
    with socket.create_connection(_address(door, "fra-1"), timeout=10) as sock:
        sock.sendall(big)
        (answer,), _ = _read_responses(sock, 1)
    assert answer.status == 429 and b"the limit is" in answer.body, answer.body


def test_forwarded_get_answered_alike_both_ways(door: LocalCluster) -> None:
    # iad-1 may not hold "eu/" keys: it forwards to fra-1, so the call waits.
    _put(door, b"eu/direct", b"eu-value")
    get = request("Get", kv_pb2.GetRequest(key=b"eu/direct").SerializeToString())
    direct, asgi = both_ways(door, get, node="iad-1")
    assert direct.status == 200 and direct.comparable() == asgi.comparable()
    assert direct.body == asgi.body
    assert direct.header(b"edgekv-served-by") == [b"fra-1"]
    assert kv_pb2.GetResponse.FromString(direct.body).value == b"eu-value"


def test_pipelined_requests_answered_in_order(door: LocalCluster) -> None:
    _put(door, b"direct/1", b"first")
    _put(door, b"direct/2", b"second")
    gets = [
        request("Get", kv_pb2.GetRequest(key=k).SerializeToString())
        for k in (b"direct/1", b"direct/2", b"direct/1")
    ]
    answers, closed = send(door, [b"".join(gets)], count=3)
    values = [kv_pb2.GetResponse.FromString(a.body).value for a in answers]
    assert values == [b"first", b"second", b"first"] and not closed
    assert answers[0].comparable() == answers[2].comparable()


def test_connection_close_request_answered_then_closed(door: LocalCluster) -> None:
    _put(door, b"direct/c", b"bye")
    get = request(
        "Get",
        kv_pb2.GetRequest(key=b"direct/c").SerializeToString(),
        extra=b"connection: close\r\n",
    )
    (direct,), closed = send(door, [get])
    assert closed and direct.header(b"connection") == [b"close"]
    head, sep, body = get.partition(b"\r\n\r\n")
    (asgi,), asgi_closed = send(door, [head + sep, body])
    assert asgi_closed and direct.comparable() == asgi.comparable() and direct.body == asgi.body
    assert kv_pb2.GetResponse.FromString(direct.body).value == b"bye"


def test_keep_alive_connection_serves_direct_calls_one_after_another(door: LocalCluster) -> None:
    _put(door, b"direct/k", b"kept")
    get = request("Get", kv_pb2.GetRequest(key=b"direct/k").SerializeToString())
    with socket.create_connection(_address(door, "fra-1"), timeout=10) as sock:
        for i in range(20):
            sock.sendall(get)
            # A close after any but the last answer also fails the next call on this
            # socket ("the connection ended"): only the last waits the full 0.5 s.
            (answer,), closed = _read_responses(sock, 1, close_wait_s=0.5 if i == 19 else 0.02)
            assert answer.status == 200 and not closed
            sock.settimeout(10)
            assert kv_pb2.GetResponse.FromString(answer.body).value == b"kept"


def _requests(door: LocalCluster, route: str, status: str) -> float:
    samples = scrape_metrics(door.nodes["fra-1"].info["metrics_port"]).get(
        "edgekv_http_requests_total", []
    )
    wanted = {"route": route, "status": status}
    return sum(v for labels, v in samples if labels.items() >= wanted.items())


def test_metrics_count_direct_calls_by_route_and_status(door: LocalCluster) -> None:
    route = "/edgekv.v1.KV/Get"
    ok, unauthenticated = _requests(door, route, "200"), _requests(door, route, "401")
    get = request("Get", kv_pb2.GetRequest(key=b"direct/m").SerializeToString())
    for _ in range(5):
        send(door, [get], close_wait_s=0)
    anonymous = request("Get", kv_pb2.GetRequest(key=b"direct/m").SerializeToString(), token=None)
    send(door, [anonymous], close_wait_s=0)
    assert _requests(door, route, "200") == ok + 5
    assert _requests(door, route, "401") == unauthenticated + 1
