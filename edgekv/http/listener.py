"""The HTTP door's socket and server: uvicorn (httptools parser) on the node's uvloop.

Chosen by measurement (bench/e2e/http_door.py, README "HTTP door"): uvicorn
with httptools serves HTTP/1.1 with keep-alive at a fraction of the CPU per
call of grpcio's Python server; hypercorn (h2c too) and granian's embedded
server cost more per call here. uvicorn speaks HTTP/1.1 only: no h2c on this
port (Connect and gRPC-Web need no HTTP/2; native gRPC has its own port).

The listener binds its socket first (so the node knows its port before it
builds its view) and serves later. uvicorn runs embedded: its startup,
housekeeping loop and shutdown, never its ``serve`` (which would take the
process's signal handlers from the node). TLS uses the node's certificate
when the cluster has TLS. Each connection is uvicorn's httptools protocol with
bounds on the request head's size and on the time a request takes to arrive
(guard.py, the cluster file's ``http`` section).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

from edgekv.config.model import HttpSettings, TlsSettings
from edgekv.config.values import parse_host_port
from edgekv.errors import EdgeKVError
from edgekv.http.guard import guarded_protocol

log = logging.getLogger("edgekv.http")

# Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_S = 75


class HttpListener:
    """One listening socket and the uvicorn server on it. Runs on the node's loop."""

    def __init__(
        self,
        address: str,
        tls: TlsSettings | None,
        node_id: str,
        settings: HttpSettings | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self._settings = settings or HttpSettings()
        self._node_id = node_id
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._ticks: asyncio.Task[None] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    def bind(self) -> int:
        """Listen on ``address`` (port 0: any free one); returns the bound port.

        Raises EdgeKVError naming the address and http_listen when it cannot bind.
        """
        host, port = parse_host_port(self.address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            raise EdgeKVError(
                f"cannot listen on {self.address} (http_listen): {exc.strerror or exc}"
            ) from exc
        sock.setblocking(False)
        self._sock = sock
        return int(sock.getsockname()[1])

    async def start(self, app: Any) -> None:
        """Serve ``app`` (ASGI) on the bound socket."""
        assert self._sock is not None, "bind() first"
        tls: dict[str, Any] = {}
        if self._tls is not None:
            tls = {
                "ssl_certfile": str(self._tls.cert_for(self._node_id)),
                "ssl_keyfile": str(self._tls.key_for(self._node_id)),
            }
        config = uvicorn.Config(
            app,
            loop="none",  # the node's running uvloop
            http=guarded_protocol(self._settings),  # httptools, bounded (guard.py)
            ws="none",
            lifespan="off",
            log_config=None,  # the node configured logging
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=KEEP_ALIVE_S,
            **tls,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # "off": a no-op, as serve() sets it
        await server.startup(sockets=[self._sock])
        self._server = server
        self._ticks = asyncio.get_running_loop().create_task(
            server.main_loop(), name=f"{self._node_id}:http"
        )

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let calls in progress finish for ``grace_s``, then cancel them.

        Idempotent; also closes a socket that was bound but never served.
        """
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
            # uvicorn waits without a bound when this is 0 or None; it takes any number.
            server.config.timeout_graceful_shutdown = max(grace_s, 0.01)  # type: ignore[assignment]
            if self._ticks is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ticks
            await server.shutdown()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
