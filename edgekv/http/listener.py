"""The HTTP door's socket, and which server runs the app on it.

The listener binds its socket first (so the node knows its port before it
builds its view) and serves later, on the node's event loop, with one of two
ASGI servers chosen by the cluster file's ``http.h2c``:

* false (the default): uvicorn with the httptools parser
  (:mod:`edgekv.http.uvicorn_server`), HTTP/1.1 with keep-alive. Chosen by
  measurement (bench/e2e/http_door.py, README "The HTTP door"): it serves a call
  at a fraction of the CPU of grpcio's Python server. No HTTP/2.
* true: hypercorn (:mod:`edgekv.http.hypercorn_server`), HTTP/1.1 and HTTP/2 on
  the same port (h2c by prior knowledge or Upgrade; ALPN ``h2`` with TLS), for
  clients that multiplex many calls on one connection. It costs more CPU per call.

Both serve the same app with the node's certificate when the cluster has TLS,
and neither takes the process's signal handlers from the node. Both bound a
request's head (``http.max_header_bytes``) and the time it may take to arrive
(``http.request_timeout_s``): uvicorn through guard.py; hypercorn with its own
limits (head size; the timeout per read).
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

from edgekv.config.model import HttpSettings, TlsSettings
from edgekv.config.values import parse_host_port
from edgekv.errors import EdgeKVError
from edgekv.http.direct import DirectUnary
from edgekv.http.guard import guarded_protocol
from edgekv.http.unary import UNARY_PATHS

# Seconds an idle keep-alive connection stays open.
KEEP_ALIVE_S = 75
# Connections the kernel queues before the server accepts them.
BACKLOG = 2048


class AppServer(Protocol):
    """An ASGI server embedded in the running event loop, on a socket it is given."""

    async def start(self, app: Any) -> None:
        """Serve ``app`` (ASGI); returns once it accepts connections."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let calls finish for ``grace_s``, then cancel the rest."""
        ...


class HttpListener:
    """One listening socket and the server on it. Runs on the node's loop."""

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
        self.h2c = self._settings.h2c
        self._node_id = node_id
        self._sock: socket.socket | None = None
        self._server: AppServer | None = None

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
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            raise EdgeKVError(
                f"cannot listen on {self.address} (http_listen): {exc.strerror or exc}"
            ) from exc
        sock.setblocking(False)
        self._sock = sock
        return int(sock.getsockname()[1])

    async def start(self, app: Any, direct: DirectUnary | None = None) -> None:
        """Serve ``app`` (ASGI) on the bound socket; uvicorn's connections answer the
        Connect unary KV calls that arrive whole through ``direct`` (direct.py), when
        given: it must answer them as ``app`` would."""
        assert self._sock is not None, "bind() first"
        tls = None
        if self._tls is not None:
            tls = (str(self._tls.cert_for(self._node_id)), str(self._tls.key_for(self._node_id)))
        # Imported here: a node loads only the server it runs.
        server: AppServer
        if self.h2c:
            from edgekv.http.hypercorn_server import HypercornServer

            server = HypercornServer(
                self._sock, tls, self._node_id, KEEP_ALIVE_S,
                max_header_bytes=self._settings.max_header_bytes,
                request_timeout_s=self._settings.request_timeout_s,
            )  # fmt: skip
        else:
            from edgekv.http.uvicorn_server import UvicornServer

            protocol = guarded_protocol(self._settings, UNARY_PATHS, direct)
            server = UvicornServer(self._sock, tls, self._node_id, KEEP_ALIVE_S, protocol)
        await server.start(app)
        self._server = server

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let calls in progress finish for ``grace_s``, then cancel them.

        Idempotent; also closes a socket that was bound but never served.
        """
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace_s)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
