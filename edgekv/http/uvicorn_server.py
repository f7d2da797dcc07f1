"""uvicorn (httptools parser) embedded in the node's uvloop: the HTTP door's default server.

HTTP/1.1 with keep-alive, at the lowest CPU per call we measured (README "The
HTTP door"). uvicorn runs embedded: its startup, housekeeping loop and
shutdown, never its ``serve`` (which would take the process's signal handlers
from the node).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import uvicorn


class UvicornServer:
    """uvicorn on a bound, listening socket (the caller closes it after ``stop``).

    ``tls`` is (certfile, keyfile) or None; ``protocol`` the connection class
    (uvicorn's httptools protocol with the door's bounds). Used from the event
    loop only.
    """

    def __init__(
        self,
        sock: socket.socket,
        tls: tuple[str, str] | None,
        name: str,
        keep_alive_s: int,
        protocol: type[asyncio.Protocol],
    ) -> None:
        self._sock = sock
        self._protocol = protocol  # httptools, bounded (guard.py)
        self._tls = tls
        self._name = name
        self._keep_alive_s = keep_alive_s
        self._server: uvicorn.Server | None = None
        self._ticks: asyncio.Task[None] | None = None

    async def start(self, app: Any) -> None:
        tls: dict[str, Any] = {}
        if self._tls is not None:
            tls = {"ssl_certfile": self._tls[0], "ssl_keyfile": self._tls[1]}
        config = uvicorn.Config(
            app,
            loop="none",  # the node's running uvloop
            http=self._protocol,
            ws="none",
            lifespan="off",
            log_config=None,  # the node configured logging
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_keep_alive=self._keep_alive_s,
            **tls,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # "off": a no-op, as serve() sets it
        await server.startup(sockets=[self._sock])
        self._server = server
        self._ticks = asyncio.get_running_loop().create_task(
            server.main_loop(), name=f"{self._name}:http"
        )

    async def stop(self, grace_s: float) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        # uvicorn waits without a bound when this is 0 or None; it takes any number.
        server.config.timeout_graceful_shutdown = max(grace_s, 0.01)  # type: ignore[assignment]
        if self._ticks is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticks
        await server.shutdown()
