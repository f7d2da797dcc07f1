"""hypercorn embedded in the node's event loop: the HTTP door's server when ``http.h2c`` is on.

hypercorn speaks HTTP/1.1 and HTTP/2 on one port: h2c by prior knowledge (the
client opens with the HTTP/2 preface) or by ``Upgrade: h2c``, and with TLS,
``h2`` chosen by ALPN. It runs through its public ``hypercorn.asyncio.serve``
with a ``shutdown_trigger``, so it installs no signal handlers: the node keeps
SIGTERM and SIGINT.

Shutdown: hypercorn stops accepting, closes idle connections, waits up to its
``graceful_timeout`` for the calls in progress and then cancels their
connections mid-stream, which its task groups report as errors (hypercorn
PR #374). A Watch stream never ends by itself, so after ``grace_s`` this server
cancels the app calls still running first, which ends their streams cleanly;
hypercorn's own timeout is only a backstop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import sys
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.events import Closed
from hypercorn.protocol.h2 import H2Protocol

from edgekv.errors import EdgeKVError

log = logging.getLogger("edgekv.http")
# hypercorn's own messages: its warnings and errors (an app that raised), not its
# "Running on ... (CTRL + C to quit)", which is not true of a node.
_hypercorn_log = logging.getLogger("edgekv.http.hypercorn")
_hypercorn_log.addFilter(lambda record: record.levelno >= logging.WARNING)

# Seconds stop() waits for hypercorn to close once the calls were cancelled.
_CLOSE_S = 2.0


def _release_streams_when_the_connection_closes() -> None:
    """Work around a hypercorn 0.18 HTTP/2 bug that pins an app call forever.

    When an HTTP/2 connection closes with a stream open (a client that goes
    away mid-Watch, or before a unary answer), hypercorn stops the task that
    empties the streams' send buffers but leaves the buffers open, so the app's
    last ``send`` (the end of the body, e.g. Connect's end-of-stream message)
    waits on ``drain()`` forever: the call's task leaks, and the node's shutdown
    waits out its grace period for it. Closing the buffers when the connection
    closes, as hypercorn does when one stream is reset, makes those sends return.
    tests/inprocess/test_http_h2c_server.py fails without this.
    """
    if getattr(H2Protocol, "_edgekv_releases_streams", False):
        return
    handle = H2Protocol.handle

    async def handle_then_release(self: H2Protocol, event: Any) -> None:
        await handle(self, event)
        if isinstance(event, Closed):
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()

    H2Protocol.handle = handle_then_release  # type: ignore[method-assign]
    H2Protocol._edgekv_releases_streams = True  # type: ignore[attr-defined]


_release_streams_when_the_connection_closes()


class HypercornServer:
    """hypercorn on a bound, listening socket (the caller closes it after ``stop``).

    ``tls`` is (certfile, keyfile) or None. Used from the event loop only.
    """

    def __init__(
        self,
        sock: socket.socket,
        tls: tuple[str, str] | None,
        name: str,
        keep_alive_s: int,
        *,
        max_header_bytes: int,
        request_timeout_s: float,
    ) -> None:
        self._sock = sock
        self._name = name
        self._config = Config()
        self._config.keep_alive_timeout = keep_alive_s
        # The door's bounds, as hypercorn has them: the head's size (HTTP/1.1 and
        # HTTP/2 header lists) and a timeout on each read (not on the whole request).
        self._config.h11_max_incomplete_size = max_header_bytes
        self._config.h2_max_header_list_size = max_header_bytes
        self._config.read_timeout = max(1, math.ceil(request_timeout_s))
        # hypercorn closes a connection after 1000 requests by default (GOAWAY on
        # HTTP/2, which fails the call in flight in httpx): a door connection lives
        # as long as the client keeps it, as with uvicorn and the gRPC port.
        self._config.keep_alive_max_requests = sys.maxsize
        self._config.backlog = 2048  # as the listener's socket and uvicorn's
        self._config.include_server_header = False
        self._config.accesslog = None
        self._config.errorlog = _hypercorn_log  # the node configured logging
        if tls is not None:
            self._config.certfile, self._config.keyfile = tls  # ALPN: h2, then http/1.1
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._calls: set[asyncio.Task[Any]] = set()  # app calls in progress, for stop()
        self._task: asyncio.Task[None] | None = None

    async def start(self, app: Any) -> None:
        """Serve ``app``; returns once hypercorn runs (raises EdgeKVError if it cannot)."""
        if self._config.ssl_enabled:
            self._config.create_ssl_context()  # a bad certificate fails here, not in the task
        # hypercorn owns (and closes) a duplicate of the socket; the listener closes the original.
        self._config.bind = [f"fd://{os.dup(self._sock.fileno())}"]
        task = asyncio.get_running_loop().create_task(
            serve(self._asgi(app), self._config, shutdown_trigger=self._stopping.wait, mode="asgi"),
            name=f"{self._name}:http",
        )
        started = asyncio.ensure_future(self._started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            started.cancel()
            raise EdgeKVError(f"the HTTP door (http.h2c) did not start: {task.exception()!r}")
        self._task = task

    def _asgi(self, app: Any) -> Any:
        """``app`` with hypercorn's lifespan answered here and its calls tracked."""

        async def tracked(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                        self._started.set()
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            call = asyncio.current_task()
            assert call is not None
            self._calls.add(call)
            try:
                await app(scope, receive, send)
            finally:
                self._calls.discard(call)

        return tracked

    async def stop(self, grace_s: float) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        # hypercorn's own bound, a backstop: past it, it cancels connections mid-stream.
        self._config.graceful_timeout = grace_s + _CLOSE_S
        self._stopping.set()
        done, _ = await asyncio.wait({task}, timeout=grace_s)
        if not done:
            for call in list(self._calls):  # Watch streams, calls past the grace period
                call.cancel()
            done, _ = await asyncio.wait({task}, timeout=2 * _CLOSE_S)
        if not done:
            log.warning("%s: the HTTP door did not close in time; cancelling it", self._name)
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # a task boundary: the node goes on stopping
            log.exception("%s: the HTTP door failed while stopping", self._name)
