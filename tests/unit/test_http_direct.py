"""Connect unary KV calls answered from the connection (edgekv/http/direct.py).

The protocol (guard.py) is driven directly with a transport that records its
writes, in front of the door's real HttpApp and ConnectUnary; the KV service
behind them is a stand-in that answers like KVConnect (response headers) and
can be told to wait, fail or raise. The same request, whole in one read (the
direct path) and with its body in a later read (the ASGI path), must give the
same bytes but for the date and the measured durations. Real nodes and sockets:
tests/integration/test_http_direct_paths.py.
"""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import Any, cast

import uvicorn
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from fake_transport import RecordingTransport
from uvicorn.server import ServerState

from edgekv.config.model import HttpSettings
from edgekv.http.app import HttpApp
from edgekv.http.direct import DirectUnary
from edgekv.http.guard import guarded_protocol
from edgekv.http.unary import UNARY_PATHS, ConnectUnary
from edgekv.metrics import NodeMetrics
from edgekv.v1 import kv_pb2

_DURATION = re.compile(rb"dur=[0-9.]+")
_DATE = re.compile(rb"date: [^\r]*\r\n")


class _KV:
    """Answers Get like KVConnect; a key names what to do instead."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[None] | None = None  # awaited by b"wait"

    async def get(self, request: kv_pb2.GetRequest, ctx: Any) -> kv_pb2.GetResponse:
        if request.key == b"wait":
            self.gate = asyncio.get_running_loop().create_future()
            await self.gate
        if request.key == b"missing":
            raise ConnectError(Code.NOT_FOUND, "no key missing")
        if request.key == b"boom":
            raise RuntimeError("a bug")
        ctx.response_headers["edgekv-served-by"] = "n1"
        if request.key == b"bad-header":  # a value that would split the head
            ctx.response_headers["edgekv-served-by"] = "n1\r\nx-injected: 1"
        ctx.response_headers["server-timing"] = "kv;dur=0.010"
        return kv_pb2.GetResponse(found=True, value=b"v:" + request.key, served_by="n1")

    batch_get = put = delete = write = scan = get


class _Door:
    """One connection of a door: protocol, transport, the app's calls, the metrics."""

    def __init__(self) -> None:
        self.kv = _KV()
        self.metrics = NodeMetrics()
        recorder = self.metrics.http_recorder()
        unary = ConnectUnary(cast(Any, self.kv), 1024)
        app = HttpApp(
            rpc={"/edgekv.v1.KV/": self._not_here},
            unary=unary,
            rest=self._not_here,
            openapi=b"{}",
            limits=cast(Any, SimpleNamespace(message_bytes=1024)),
            recorder=recorder,
        )
        self.app_calls = 0

        async def counted(scope: Any, receive: Any, send: Any) -> None:
            self.app_calls += 1
            await app(scope, receive, send)

        # As the door configures uvicorn (uvicorn_server.py): no access log, no proxy headers.
        config = uvicorn.Config(
            counted, lifespan="off", log_config=None, access_log=False, proxy_headers=False
        )
        self.state = ServerState()
        protocol_class = guarded_protocol(HttpSettings(), UNARY_PATHS, DirectUnary(unary, recorder))
        self.protocol = protocol_class(config=config, server_state=self.state, app_state={})
        self.transport = RecordingTransport()
        self.protocol.connection_made(self.transport)

    @staticmethod
    async def _not_here(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError(f"{scope['path']} should not reach connectrpc or REST")

    def requests(self, route: str, status: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "edgekv_http_requests_total", {"route": route, "status": status}
        )
        return value or 0.0

    async def answer(self, *reads: bytes) -> bytes:
        """What the connection writes for ``reads`` (after the loop settles)."""
        before = len(self.transport.written)
        for data in reads:
            self.protocol.data_received(data)
            await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        return self.transport.written[before:]


def _get(key: bytes, extra: bytes = b"", content_type: bytes = b"application/proto") -> bytes:
    body = kv_pb2.GetRequest(key=key).SerializeToString()
    return (
        b"POST /edgekv.v1.KV/Get HTTP/1.1\r\nhost: x\r\ncontent-type: %s\r\n"
        b"content-length: %d\r\n%s\r\n%s" % (content_type, len(body), extra, body)
    )


def _split(request: bytes) -> tuple[bytes, bytes]:
    head, sep, body = request.partition(b"\r\n\r\n")
    return head + sep, body


def _same(answer: bytes) -> bytes:
    return _DURATION.sub(b"dur=X", _DATE.sub(b"", answer))


async def test_whole_request_answered_in_the_read_without_the_asgi_app() -> None:
    door = _Door()
    door.protocol.data_received(_get(b"a"))
    # Written in the step that read it, in one write; no task, no ASGI call.
    assert door.transport.writes == 1 and not door.protocol.tasks
    assert door.app_calls == 0
    answer = door.transport.written
    body = kv_pb2.GetResponse(found=True, value=b"v:a", served_by="n1").SerializeToString()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n" + body)
    assert b"\r\ncontent-type: application/proto\r\ncontent-length: %d\r\n" % len(body) in answer
    assert b"\r\nedgekv-served-by: n1\r\nserver-timing: kv;dur=0.010\r\n" in answer
    assert re.search(rb"\r\nserver-timing: total;dur=[0-9.]+\r\n\r\n", answer), answer
    assert door.requests("/edgekv.v1.KV/Get", "200") == 1
    assert not door.transport.closed


async def test_direct_and_asgi_answers_are_the_same_bytes() -> None:
    door = _Door()
    for request in (
        _get(b"a"),
        _get(b"a", content_type=b"application/json")
        .replace(kv_pb2.GetRequest(key=b"a").SerializeToString(), b'{"key":"YQ"}')
        .replace(b"content-length: 3", b"content-length: 12"),
        _get(b"missing"),
        _get(b"a").replace(b"\r\n\r\n", b"\r\n\r\n\xff\xff").replace(b"length: 3", b"length: 5"),
    ):
        calls = door.app_calls
        direct = await door.answer(request)
        assert door.app_calls == calls, request
        asgi = await door.answer(*_split(request))
        assert door.app_calls == calls + 1, request
        assert _same(direct) == _same(asgi), (direct, asgi)
    assert door.requests("/edgekv.v1.KV/Get", "200") == 4
    assert door.requests("/edgekv.v1.KV/Get", "404") == 2
    assert door.requests("/edgekv.v1.KV/Get", "400") == 2
    assert b'"code": "invalid_argument", "message": "unmarshal message' in direct


async def test_pipelined_requests_answered_in_order_on_one_read() -> None:
    door = _Door()
    answer = await door.answer(_get(b"a") + _get(b"b") + _get(b"c"))
    values = re.findall(rb"v:(.)", answer)
    assert values == [b"a", b"b", b"c"] and answer.count(b"HTTP/1.1 200 OK") == 3
    assert not door.protocol.tasks and not door.transport.closed


async def test_connection_close_request_answered_then_closed() -> None:
    door = _Door()
    direct = await door.answer(_get(b"a", extra=b"connection: close\r\n"))
    assert door.transport.closed and door.app_calls == 0
    assert re.search(rb"total;dur=[0-9.]+\r\nconnection: close\r\n\r\n", direct), direct
    other = _Door()
    asgi = await other.answer(*_split(_get(b"a", extra=b"connection: close\r\n")))
    assert other.transport.closed and _same(direct) == _same(asgi)


async def test_call_that_waits_goes_on_in_a_task_and_drains_on_shutdown() -> None:
    door = _Door()
    door.protocol.data_received(_get(b"wait"))
    assert door.transport.written == b"" and len(door.protocol.tasks) == 1
    door.protocol.shutdown()  # the server stops: answer this call, then close
    assert not door.transport.closed
    assert door.kv.gate is not None
    door.kv.gate.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert door.transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nconnection: close\r\n\r\n" in door.transport.written
    assert door.transport.closed and not door.protocol.tasks


async def test_client_gone_while_the_call_waits_gets_nothing_written() -> None:
    door = _Door()
    door.protocol.data_received(_get(b"wait"))
    door.protocol.connection_lost(None)
    assert door.kv.gate is not None
    door.kv.gate.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert door.transport.written == b"" and not door.protocol.tasks
    assert door.requests("/edgekv.v1.KV/Get", "200") == 1  # served, as the ASGI path counts it


async def test_handler_bug_answered_500_and_closed_as_uvicorn_does() -> None:
    door = _Door()
    direct = await door.answer(_get(b"boom"))
    other = _Door()
    asgi = await other.answer(*_split(_get(b"boom")))
    assert direct.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert _same(direct) == _same(asgi) and door.transport.closed and other.transport.closed
    assert door.requests("/edgekv.v1.KV/Get", "500") == 1
    assert other.requests("/edgekv.v1.KV/Get", "500") == 1


async def test_requests_it_cannot_answer_take_the_asgi_path() -> None:
    for request in (
        _get(b"a", extra=b"expect: 100-continue\r\n"),
        _get(b"a", extra=b"content-encoding: gzip\r\n"),
        _get(b"a", content_type=b"application/grpc-web"),
    ):
        door = _Door()  # the stand-in connectrpc fails the call: its connection closes
        door.protocol.data_received(request)
        assert door.app_calls == 1, request
        for _ in range(10):
            await asyncio.sleep(0)


async def test_header_value_that_would_split_the_head_closes_the_connection_unanswered() -> None:
    door = _Door()
    direct = await door.answer(_get(b"bad-header"))
    other = _Door()
    asgi = await other.answer(*_split(_get(b"bad-header")))
    assert direct == asgi == b"" and door.transport.closed and other.transport.closed
    assert (
        door.requests("/edgekv.v1.KV/Get", "200") == 1 == other.requests("/edgekv.v1.KV/Get", "200")
    )
