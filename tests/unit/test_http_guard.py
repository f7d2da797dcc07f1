"""The HTTP door's connection guard (edgekv/http/guard.py) and its cluster-file keys.

The protocol is driven directly, with a transport that records what is written
and whether it was closed (the bytes a socket would carry); the integration
tests (tests/integration/test_http_abuse.py) send the same over real sockets.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fake_transport import RecordingTransport
from uvicorn.server import ServerState

from edgekv.config.loader import parse_config
from edgekv.config.model import HttpSettings
from edgekv.errors import ConfigError
from edgekv.http.guard import GuardedProtocol, guarded_protocol

DOC: dict[str, Any] = {
    "cluster": "t",
    "regions": [{"name": "r", "location": [0, 0]}],
    "nodes": [{"id": "n1", "region": "r", "listen": "127.0.0.1:7101", "data_dir": "d"}],
}


async def _app(scope: Any, receive: Any, send: Any) -> None:  # never reached in these tests
    raise AssertionError("the request should have been refused before the application")


async def _answers(scope: Any, receive: Any, send: Any) -> None:
    """Answers like the door's Connect path: the head, then the body, as two ASGI messages."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"5")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"hello"})


def _connection(
    settings: HttpSettings, keep_alive_s: float = 5.0, app: Any = _app
) -> tuple[Any, RecordingTransport]:
    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_keep_alive=keep_alive_s)
    protocol = guarded_protocol(settings)(config=config, server_state=ServerState(), app_state={})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


def _answer(transport: RecordingTransport) -> tuple[bytes, dict[str, str]]:
    head, _, body = transport.written.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], json.loads(body)


def test_http_bounds_parse_with_defaults_and_reject_bad_values() -> None:
    config = parse_config(copy.deepcopy(DOC), Path("/tmp"))
    assert config.http.max_header_bytes == 16384 and config.http.request_timeout_s == 30.0
    doc = copy.deepcopy(DOC)
    doc["http"] = {"max_header_bytes": 4096, "request_timeout_s": 2.5}
    config = parse_config(doc, Path("/tmp"))
    assert (config.http.max_header_bytes, config.http.request_timeout_s) == (4096, 2.5)
    for key, value, message in (
        ("max_header_bytes", 100, "http.max_header_bytes: 100 is too small"),
        ("max_header_bytes", "16k", "http.max_header_bytes: expected an integer"),
        ("request_timeout_s", 0, "http.request_timeout_s: 0.0 is not allowed"),
    ):
        doc["http"] = {key: value}
        with pytest.raises(ConfigError, match=message):
            parse_config(doc, Path("/tmp"))


async def test_head_over_the_limit_answered_431_and_closed() -> None:
    protocol, transport = _connection(HttpSettings(max_header_bytes=2048))
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\nx-a: " + b"a" * 3000 + b"\r\n\r\n")
    status, body = _answer(transport)
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large" and transport.closed
    assert body["message"].endswith("the limit is 2048 (http.max_header_bytes)"), body
    # A header line that never ends is counted read by read, before the parser holds it all.
    protocol, transport = _connection(HttpSettings(max_header_bytes=2048))
    protocol.data_received(b"GET / HTTP/1.1\r\nx-b: ")
    for _ in range(3):
        protocol.data_received(b"b" * 1000)
    assert _answer(transport)[0].startswith(b"HTTP/1.1 431 ") and transport.closed


async def test_incomplete_head_answered_408_after_request_timeout() -> None:
    protocol, transport = _connection(HttpSettings(request_timeout_s=0.05))
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n")
    await asyncio.sleep(0.2)  # past the 0.05 s bound under test
    status, body = _answer(transport)
    assert status == b"HTTP/1.1 408 Request Timeout" and transport.closed
    assert "within 0.05 s (http.request_timeout_s)" in body["message"], body


async def test_connection_that_sends_nothing_closes_after_keep_alive() -> None:
    protocol, transport = _connection(HttpSettings(), keep_alive_s=0.05)
    await asyncio.sleep(0.2)  # past the 0.05 s keep-alive under test
    assert transport.closed and transport.written == b""
    assert isinstance(protocol, GuardedProtocol)


async def test_answer_head_and_body_leave_in_one_write() -> None:
    # Two writes are two segments with TCP_NODELAY: the client wakes twice per call.
    protocol, transport = _connection(HttpSettings(), app=_answers)
    for _ in range(2):  # and again on the kept-alive connection
        before = transport.written
        protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        for _ in range(5):
            await asyncio.sleep(0)
        answer = transport.written[len(before) :]
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhello")
    assert transport.writes == 2 and not transport.closed


async def test_held_answer_is_written_before_a_close_and_dropped_by_an_abort() -> None:
    protocol, transport = _connection(HttpSettings())
    protocol.transport.write(b"HTTP/1.1 200 OK\r\n")
    protocol.transport.write(b"content-length: 0\r\n\r\n")
    assert transport.written == b""  # held until the end of this turn of the loop
    protocol.transport.close()
    assert transport.written == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    assert transport.writes == 1 and transport.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to write
    assert transport.writes == 1


async def test_connect_unary_call_is_answered_in_the_step_that_read_it() -> None:
    ran: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        ran.append(scope["path"])
        await _answers(scope, receive, send)

    settings = HttpSettings()
    config = uvicorn.Config(app, lifespan="off", log_config=None)
    protocol = guarded_protocol(settings, frozenset({"/edgekv.v1.KV/Get"}))(
        config=config, server_state=ServerState(), app_state={}
    )
    transport = RecordingTransport()
    protocol.connection_made(transport)
    call = b"POST /edgekv.v1.KV/Get HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
    protocol.data_received(call)
    assert ran == ["/edgekv.v1.KV/Get"] and not protocol.tasks  # no task, no loop turn
    # Its body in a later read: the call waits for it in a task, then answers.
    protocol.data_received(call[:-2])
    assert len(ran) == 2 and len(protocol.tasks) == 1
    protocol.data_received(call[-2:])
    # Any other path starts in a task, as uvicorn does.
    protocol.data_received(b"POST /v1/kv/a HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    assert len(ran) == 2
    for _ in range(10):
        await asyncio.sleep(0)
    assert ran[2] == "/v1/kv/a" and not protocol.tasks
    assert transport.written.count(b"HTTP/1.1 200 OK") == 3


class _CountingLoop:
    """The running loop, counting the timers asked of it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.delays: list[float] = []

    def call_later(self, delay: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        self.delays.append(delay)
        return self._loop.call_later(delay, callback, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


async def test_request_that_arrives_whole_sets_no_request_timer() -> None:
    # A timer made and cancelled in the same read is pure cost on every call.
    protocol, transport = _connection(HttpSettings(request_timeout_s=0.3), app=_answers)
    loop = _CountingLoop(protocol.loop)
    protocol.loop = loop
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert loop.delays == []
    for _ in range(5):
        await asyncio.sleep(0)
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    # A request still arriving after a read is bounded from its first byte.
    protocol.data_received(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\nabc")
    assert len(loop.delays) == 2 and 0.2 < loop.delays[-1] <= 0.3, (
        loop.delays
    )  # keep-alive, request
    await asyncio.sleep(0.5)  # past the 0.3 s bound under test: the late body's connection closes
    assert transport.closed
