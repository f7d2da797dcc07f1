"""The SDK's HTTP/1.1 pools against a scripted server: the asyncio pool (client/_http1.py)
on both loops, and the blocking pool (client/_http1_sync.py).

The server is a blocking socket server in a thread of the test process that
reads each request whole and answers as the test says: so a test can close a
connection, cut a response short or stall, and hold the client's event loop
still (a blocking sleep) while the server's side moves. Every test body is a
coroutine run three ways (``kind``): on the asyncio pool on asyncio's loop and
on uvloop, and on the blocking pool, each of its calls on a thread of its own
(``Threaded``), so the same edge cases hold for both pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvloop
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from edgekv.client import _http1
from edgekv.client._connect import _SERVICES, ConnectRpcError, ConnectUnary
from edgekv.client._http1 import NOT_CONNECTED, Http1Pool, client_ssl_context
from edgekv.client._http1_reader import MAX_HEAD_BYTES
from edgekv.client._http1_sync import Http1SyncPool
from edgekv.condition_status import CURRENT_VERSION_METADATA
from edgekv.errors import never_sent
from edgekv.local.launcher import free_port
from edgekv.tls import create_ca, issue_cert
from edgekv.v1 import common_pb2, kv_pb2

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
CLOSE = object()  # an answer that closes the connection after writing what came before

# answer(request number, connection) -> bytes to send, or CLOSE, or (bytes, CLOSE)
Answer = Callable[[int, socket.socket], Any]


class ScriptedServer:
    """Reads whole requests (head + Content-Length body); answers each with ``answer``."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self._answer = answer
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.conns: list[socket.socket] = []
        self.eofs = 0  # connections the client closed
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            with self._lock:
                self.conns.append(conn)
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        with self._lock:
                            self.eofs += 1
                        return
                    buf += data
                head, _, rest = buf.partition(b"\r\n\r\n")
                found = re.search(rb"content-length: *(\d+)", head, re.I)
                length = int(found[1]) if found else 0
                while len(rest) < length:
                    rest += conn.recv(65536)
                with self._lock:
                    number = len(self.requests)
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                answer = self._answer(number, conn)
                if isinstance(answer, tuple):
                    conn.sendall(answer[0])
                    answer = answer[1]
                if answer is CLOSE:
                    conn.close()
                    return
                conn.sendall(answer)

    def drop(self) -> None:
        """Close every connection from the server's side (a keep-alive timeout)."""
        with self._lock:
            for conn in self.conns:
                with contextlib.suppress(OSError):  # the TCP connection's, under TLS too
                    socket.socket.shutdown(conn, socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        self.drop()


Scenario = Callable[[], Coroutine[Any, Any, None]]


class Threaded:
    """The blocking pool driven from a test's event loop: each call on a thread of its own."""

    def __init__(self, pool: Http1SyncPool, threads: ThreadPoolExecutor) -> None:
        self.pool = pool
        self._threads = threads

    async def post(self, request: bytes, timeout_s: float | None, resend_safe: bool) -> Any:
        return await self.call(self.pool.post, request, timeout_s, resend_safe)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.pool.close()


class Kind:
    """Which pool a test runs on, and how: ``asyncio``, ``uvloop`` or ``blocking``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.blocking = name == "blocking"
        self.threads = ThreadPoolExecutor(16)  # the blocking pool's callers

    def run(self, scenario: Scenario) -> None:
        (uvloop.run if self.name == "uvloop" else asyncio.run)(scenario())

    def pool(self, url: str, limit: int = 1000, tls: ssl.SSLContext | None = None) -> Any:
        """A pool of this kind for ``url``, with ``post(request, timeout_s, resend_safe)``."""
        if self.blocking:
            return Threaded(Http1SyncPool(url, tls, limit), self.threads)
        return Http1Pool(url, tls, limit)

    def method(self, pool: Any, service: str, name: str) -> Callable[..., Any]:
        """``ConnectUnary``'s method ``name`` on ``pool``, as a coroutine function."""
        if not self.blocking:
            return ConnectUnary(pool, _SERVICES[service]).method(name)
        blocking = ConnectUnary(pool.pool, _SERVICES[service]).method(name)
        return functools.partial(pool.call, blocking)


@pytest.fixture(params=["asyncio", "uvloop", "blocking"])
def kind(request: pytest.FixtureRequest) -> Iterator[Kind]:
    made = Kind(request.param)
    yield made
    made.threads.shutdown(wait=False)


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], ScriptedServer]]:
    started: list[ScriptedServer] = []

    def start(answer: Answer, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(answer, tls)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


# (the server's TLS, the client's), or no TLS: (None, None)
TLS = tuple[ssl.SSLContext | None, ssl.SSLContext | None]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("http1-pki")
    create_ca(directory)
    issue_cert(directory, "server", ["127.0.0.1"])
    return directory


@pytest.fixture(params=["http", "https"])
def tls(request: pytest.FixtureRequest) -> TLS:
    if request.param == "http":
        return None, None
    pki: Path = request.getfixturevalue("pki")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki / "server.pem", pki / "server-key.pem")
    return server, client_ssl_context((pki / "ca.pem").read_bytes())


def request(path: str = "/x") -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: h\r\ncontent-length: 4\r\n\r\nbody".encode()


def rpc_error(exc: pytest.ExceptionInfo[ConnectError]) -> tuple[Code, str]:
    return exc.value.code, exc.value.message


def test_a_kept_alive_connection_carries_call_after_call(kind: Kind, serve: Any, tls: TLS) -> None:
    server = serve(lambda n, conn: OK, tls[0])

    async def scenario() -> None:
        pool = kind.pool(server.url, tls=tls[1])
        for _ in range(3):
            assert await pool.post(request(), 5, False) == (200, b"", b"", b"ok")
        pool.close()

    kind.run(scenario)
    assert len(server.requests) == 3 and len(server.conns) == 1


def test_concurrent_calls_each_take_a_connection_and_leave_it_for_the_next(
    kind: Kind, serve: Any
) -> None:
    together = threading.Barrier(8)

    def answer(n: int, conn: socket.socket) -> bytes:
        together.wait(5)  # no answer before all 8 calls are in: they overlap
        return OK

    server = serve(answer)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        for _ in range(2):
            answers = await asyncio.gather(*(pool.post(request(), 5, False) for _ in range(8)))
            assert {a[3] for a in answers} == {b"ok"}
        pool.close()

    kind.run(scenario)
    assert len(server.requests) == 16 and len(server.conns) == 8  # no pipelining, all reused


def test_a_connection_idle_past_the_expiry_is_not_reused(
    kind: Kind, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http1, "IDLE_EXPIRY_S", 0.05)
    server = serve(lambda n, conn: OK)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        await pool.post(request(), 5, False)
        await asyncio.sleep(0.1)
        await pool.post(request(), 5, False)
        pool.close()

    kind.run(scenario)
    assert len(server.conns) == 2


def test_connection_close_is_never_reused(kind: Kind, serve: Any) -> None:
    server = serve(
        lambda n, conn: b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    )

    async def scenario() -> None:
        pool = kind.pool(server.url)
        for _ in range(2):
            assert (await pool.post(request(), 5, False))[0] == 200
        pool.close()

    kind.run(scenario)  # the server keeps each connection open: only the client can tell
    assert len(server.conns) == 2


def test_a_write_never_goes_out_on_a_connection_the_server_closed_while_idle(
    kind: Kind, serve: Any, tls: TLS
) -> None:
    server = serve(lambda n, conn: OK, tls[0])

    async def scenario() -> None:
        pool = kind.pool(server.url, tls=tls[1])
        await pool.post(request(), 5, False)
        server.drop()
        # Hold the loop: the server's FIN arrives, unseen by the event loop.
        time.sleep(0.1)
        assert (await pool.post(request("/put"), 5, resend_safe=False))[0] == 200
        pool.close()

    kind.run(scenario)
    assert [r.split(b" ")[1] for r in server.requests] == [b"/x", b"/put"]
    assert len(server.conns) == 2


def test_a_read_is_sent_again_when_the_kept_alive_connection_closes_unanswered(
    kind: Kind, serve: Any
) -> None:
    server = serve(lambda n, conn: CLOSE if n == 1 else OK)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        await pool.post(request(), 5, False)
        assert (await pool.post(request("/get"), 5, resend_safe=True))[3] == b"ok"
        pool.close()

    kind.run(scenario)
    assert [r.split(b" ")[1] for r in server.requests] == [b"/x", b"/get", b"/get"]


def test_a_write_is_never_sent_twice_when_the_connection_closes_unanswered(
    kind: Kind, serve: Any
) -> None:
    server = serve(lambda n, conn: CLOSE if n == 1 else OK)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        await pool.post(request(), 5, False)
        with pytest.raises(ConnectError) as exc:
            await pool.post(request("/put"), 5, resend_safe=False)
        code, message = rpc_error(exc)
        assert code is Code.UNAVAILABLE and "may or may not have been applied" in message
        assert not never_sent(grpc.StatusCode.UNAVAILABLE, message)
        pool.close()

    kind.run(scenario)
    assert [r.split(b" ")[1] for r in server.requests] == [b"/x", b"/put"]


def test_a_refused_connection_is_a_call_never_sent(kind: Kind) -> None:
    async def scenario() -> None:
        pool = kind.pool(f"http://127.0.0.1:{free_port()}")
        with pytest.raises(ConnectError) as exc:
            await pool.post(request(), 5, False)
        code, message = rpc_error(exc)
        assert code is Code.UNAVAILABLE and message.startswith(NOT_CONNECTED)
        assert never_sent(grpc.StatusCode.UNAVAILABLE, message)

    kind.run(scenario)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        ((b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789", CLOSE),
         "in the middle of the response"),
        ((b"HTTP/1.1 200 OK\r\ncontent-le", CLOSE), "in the middle of the response"),
        (b"garbage\r\n\r\n", "the answer is not HTTP/1.1"),
        (OK + OK, None),  # a second answer nobody asked for
    ],
    ids=["body-cut", "head-cut", "not-http", "out-of-turn"],
)  # fmt: skip
def test_a_cut_short_or_malformed_response_fails_and_its_connection_is_dropped(
    kind: Kind, serve: Any, answer: Any, words: str | None
) -> None:
    server = serve(lambda n, conn: answer if n == 0 else OK)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        if words is None:  # bytes after the answer: it stands, the connection does not
            assert (await pool.post(request(), 5, False))[3] == b"ok"
        else:
            with pytest.raises(ConnectError) as exc:
                await pool.post(request(), 5, False)
            code, message = rpc_error(exc)
            assert code is Code.UNAVAILABLE and words in message
        assert (await pool.post(request(), 5, False))[3] == b"ok"
        pool.close()

    kind.run(scenario)
    assert len(server.conns) == 2


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\ncontent-length: 1001\r\n\r\n",
     b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3e9\r\n" + b"x" * 1001
     + b"\r\n0\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nx: " + b"y" * MAX_HEAD_BYTES + b"\r\n\r\n"],
    ids=["length", "chunked", "head"],
)  # fmt: skip
def test_a_response_over_the_limits_is_refused(kind: Kind, serve: Any, answer: bytes) -> None:
    server = serve(lambda n, conn: answer if n == 0 else OK)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        with pytest.raises(ConnectError) as exc:
            await pool.post(request(), 5, False)
        code, message = rpc_error(exc)
        assert code is Code.RESOURCE_EXHAUSTED
        assert (
            "larger than max (1001 vs. 1000)" in message or f"at most {MAX_HEAD_BYTES}" in message
        )
        assert (await pool.post(request(), 5, False))[3] == b"ok"
        pool.close()

    kind.run(scenario)
    assert len(server.conns) == 2  # the first one dropped


def test_a_slow_answer_ends_at_the_deadline_and_drops_the_connection(
    kind: Kind, serve: Any
) -> None:
    def answer(n: int, conn: socket.socket) -> bytes:
        if n == 0:
            time.sleep(2)
        return OK

    server = serve(answer)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        start = time.monotonic()
        with pytest.raises(ConnectError) as exc:
            await pool.post(request(), 0.2, False)
        assert time.monotonic() - start < 1.5
        assert exc.value.code is Code.DEADLINE_EXCEEDED
        assert (await pool.post(request(), 5, False))[3] == b"ok"
        pool.close()

    kind.run(scenario)
    assert len(server.conns) == 2


def test_a_call_cancelled_mid_response_closes_its_connection(kind: Kind, serve: Any) -> None:
    if kind.blocking:
        pytest.skip("a blocking call cannot be cancelled: it ends at its deadline or on close()")
    started = threading.Event()

    def answer(n: int, conn: socket.socket) -> Any:
        if n > 0:
            return OK
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
        started.set()
        conn.settimeout(5)
        conn.recv(1)  # until the client closes its end
        return CLOSE

    server = serve(answer)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        call = asyncio.ensure_future(pool.post(request(), 5, False))
        await asyncio.to_thread(started.wait, 5)
        await asyncio.sleep(0.05)  # the first bytes arrive
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert not pool._idle and not pool._open
        assert (await pool.post(request(), 5, False))[3] == b"ok"
        pool.close()

    kind.run(scenario)
    assert len(server.conns) == 2


@pytest.mark.parametrize(
    "answer",
    [(b"HTTP/1.1 200 OK\r\ncontent-type: a/b\r\n\r\nok", CLOSE),  # ends with the connection
     b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n",
     b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK],
    ids=["until-eof", "chunked", "interim"],
)  # fmt: skip
def test_bodies_of_every_framing_are_read_whole(kind: Kind, serve: Any, answer: Any) -> None:
    server = serve(lambda n, conn: answer)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        assert (await pool.post(request(), 5, False))[3] == b"ok"
        pool.close()

    kind.run(scenario)


def test_close_ends_idle_connections_and_later_calls(kind: Kind, serve: Any) -> None:
    server = serve(lambda n, conn: OK)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        await pool.post(request(), 5, False)
        pool.close()
        with pytest.raises(ConnectError) as exc:
            await pool.post(request(), 5, False)
        assert exc.value.message.startswith(NOT_CONNECTED)
        for _ in range(500):  # the server's thread sees the end of stream
            if server.eofs:
                break
            await asyncio.sleep(0.01)

    kind.run(scenario)
    assert server.eofs == 1


def test_close_cancels_a_call_in_flight(kind: Kind, serve: Any) -> None:
    started = threading.Event()

    def answer(n: int, conn: socket.socket) -> Any:
        started.set()
        conn.settimeout(5)
        conn.recv(1)  # until the client closes its end
        return CLOSE

    server = serve(answer)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        call = asyncio.ensure_future(pool.post(request(), 5, True))
        await asyncio.to_thread(started.wait, 5)
        start = time.monotonic()
        pool.close()
        with pytest.raises(ConnectError) as exc:
            await call
        assert exc.value.code is Code.CANCELED
        assert time.monotonic() - start < 4  # at once, not when the server gives up (5 s)

    kind.run(scenario)
    assert len(server.requests) == 1  # a read, not sent again after close


# -- the blocking pool from many threads -----------------------------------------------------


def test_threads_share_the_blocking_pool_each_call_on_a_connection_of_its_own(serve: Any) -> None:
    def answer(n: int, conn: socket.socket) -> bytes:
        path = server.requests[n].split(b" ")[1]  # each answer names its request
        return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(path) + path

    server = serve(answer)
    pool = Http1SyncPool(server.url, None, 1000)

    def caller(thread: int) -> None:
        for i in range(25):
            path = f"/{thread}/{i}"
            assert pool.post(request(path), 5, False)[3] == path.encode()

    with ThreadPoolExecutor(8) as threads:
        list(threads.map(caller, range(8)))
    idle = pool._idle.take()
    assert idle is not None
    assert idle.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    idle.close()
    pool.close()
    assert len(server.requests) == 200 and len(server.conns) <= 8


# -- the Connect unary protocol over the pool (ConnectUnary) -------------------------------


def connect_error(code: str, status: int, details: str = "") -> bytes:
    body = f'{{"code": "{code}", "message": "the node\'s words"{details}}}'.encode()
    return (
        b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % (status, len(body))
    ) + body


def proto(message: Any) -> bytes:
    body = message.SerializeToString()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\ncontent-length: %d\r\n\r\n"
    return head % len(body) + body


def test_unary_calls_speak_connect_as_connectrpc_does(kind: Kind, serve: Any) -> None:
    server = serve(lambda n, conn: proto(kv_pb2.GetResponse(found=True, value=b"v")))

    async def scenario() -> None:
        pool = kind.pool(server.url)
        get = kind.method(pool, "kv", "Get")
        metadata = (("authorization", "Bearer t"),)
        answer = await get(kv_pb2.GetRequest(key=b"k"), timeout=1.5, metadata=metadata)
        assert answer == kv_pb2.GetResponse(found=True, value=b"v")
        pool.close()

    kind.run(scenario)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /edgekv.v1.KV/Get HTTP/1.1"
    assert lines[1] == f"host: {server.url.removeprefix('http://')}"
    assert {
        "content-type: application/proto", "connect-protocol-version: 1",
        "connect-timeout-ms: 1500", "authorization: Bearer t", f"content-length: {len(body)}",
    } <= set(lines)  # fmt: skip
    assert kv_pb2.GetRequest.FromString(body) == kv_pb2.GetRequest(key=b"k")


def test_connect_errors_keep_their_code_message_and_version_detail(kind: Kind, serve: Any) -> None:
    version = common_pb2.Version(timestamp=7, origin="n1").SerializeToString()
    value = __import__("base64").b64encode(version).decode().rstrip("=")
    detail = f', "details": [{{"type": "edgekv.v1.Version", "value": "{value}"}}]'
    answers = [
        connect_error("failed_precondition", 412, detail),
        connect_error("invalid_argument", 400),
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 9\r\n\r\n"
        b"<h1>x</h1",
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nhi",
    ]  # fmt: skip
    server = serve(lambda n, conn: answers[n])

    async def scenario() -> None:
        pool = kind.pool(server.url)
        put = kind.method(pool, "kv", "Put")
        seen = []
        for _ in answers:
            with pytest.raises(ConnectRpcError) as exc:
                await put(kv_pb2.PutRequest(key=b"k", value=b"v"), timeout=5)
            seen.append(exc.value)
        assert seen[0].code() == grpc.StatusCode.FAILED_PRECONDITION
        assert seen[0].details() == "the node's words"
        assert seen[0].trailing_metadata() == ((CURRENT_VERSION_METADATA, version),)
        assert seen[1].code() == grpc.StatusCode.INVALID_ARGUMENT
        assert seen[2].code() == grpc.StatusCode.UNAVAILABLE
        assert "HTTP 502 Bad Gateway, not a Connect answer (content-type text/html)" in (
            seen[2].details()
        )
        assert seen[3].code() == grpc.StatusCode.UNKNOWN and "text/plain" in seen[3].details()
        pool.close()

    kind.run(scenario)


def test_metadata_that_is_no_http_header_is_refused_unsent(kind: Kind, serve: Any) -> None:
    server = serve(lambda n, conn: OK)

    async def scenario() -> None:
        pool = kind.pool(server.url)
        get = kind.method(pool, "kv", "Get")
        with pytest.raises(ConnectRpcError) as exc:
            await get(kv_pb2.GetRequest(key=b"k"), metadata=(("authorization", "a\r\nx: y"),))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "'authorization'" in exc.value.details()
        pool.close()

    kind.run(scenario)
    assert server.requests == []
