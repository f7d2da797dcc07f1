"""The HTTP door's h2c server (hypercorn, ``http.h2c: true``) on this test's event loop.

A tiny ASGI app stands in for the door's app so that the server's own
behaviour is what is tested: an app call ends when its client goes away mid
stream, ``stop`` is bounded by its grace period even with a stream open, and
with the node's certificate ALPN picks h2 or http/1.1.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgekv.config.model import HttpSettings, TlsSettings
from edgekv.http.listener import HttpListener
from edgekv.tls import create_ca, issue_cert


class StreamingApp:
    """Streams one chunk, then waits for the client to leave and ends its body, as Connect does."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()  # the app's last send returned
        self.cancelled = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if scope["path"].endswith("/unary"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"one"})
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            while (await receive())["type"] != "http.disconnect":
                pass
            # The end of the body has bytes, as a Connect end-of-stream message does.
            await send({"type": "http.response.body", "body": b"end", "more_body": False})
            self.ended.set()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpListener, StreamingApp, str]]:
    listener = HttpListener("127.0.0.1:0", None, "test", HttpSettings(h2c=True))
    port = listener.bind()
    app = StreamingApp()
    await listener.start(app)
    try:
        yield listener, app, f"http://127.0.0.1:{port}/stream"
    finally:
        await listener.stop(0)


async def test_h2c_call_ends_when_the_client_closes_the_connection_mid_stream(
    served: tuple[HttpListener, StreamingApp, str],
) -> None:
    listener, app, url = served
    client = httpx.AsyncClient(http1=False, http2=True)
    async with client.stream("GET", url) as answer:
        assert answer.http_version == "HTTP/2"
        async for _ in answer.aiter_raw():
            break
        await client.aclose()  # the connection goes, the stream still open on the server
    await asyncio.wait_for(app.ended.wait(), timeout=5)
    started = time.monotonic()
    await listener.stop(10)
    assert time.monotonic() - started < 2, "nothing was left to wait for"


async def test_h2c_stop_cancels_a_stream_still_open_after_the_grace_period(
    served: tuple[HttpListener, StreamingApp, str],
) -> None:
    listener, app, url = served
    async with (
        httpx.AsyncClient(http1=False, http2=True) as client,
        client.stream("GET", url) as answer,
    ):
        async for _ in answer.aiter_raw():
            break
        started = time.monotonic()
        await listener.stop(0.2)
        elapsed = time.monotonic() - started
    assert app.cancelled.is_set()
    assert 0.2 <= elapsed < 3, elapsed


async def test_h2c_server_with_tls_chooses_h2_or_http11_by_alpn(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    create_ca(pki)
    issue_cert(pki, "test", ["127.0.0.1"])
    tls = TlsSettings(
        ca_file=pki / "ca.pem",
        cert_file=str(pki / "{node}.pem"),
        key_file=str(pki / "{node}-key.pem"),
    )
    listener = HttpListener("127.0.0.1:0", tls, "test", HttpSettings(h2c=True))
    port = listener.bind()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        version = scope["http_version"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": version})

    await listener.start(app)
    try:
        trust = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        for http2, version in ((True, b"2"), (False, b"1.1")):
            async with httpx.AsyncClient(http1=not http2, http2=http2, verify=trust) as client:
                answer = await client.get(f"https://127.0.0.1:{port}/")
                assert answer.content == version, answer
    finally:
        await listener.stop(0)


async def test_h2c_connection_serves_more_than_a_thousand_calls(
    served: tuple[HttpListener, StreamingApp, str],
) -> None:
    """hypercorn's default closes a connection after 1000 requests; the door's does not."""
    _, _, url = served
    calls = 0
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        while calls < 1010:
            answers = await asyncio.gather(*(client.get(url + "/unary") for _ in range(101)))
            assert all(a.status_code == 200 and a.http_version == "HTTP/2" for a in answers)
            calls += len(answers)
