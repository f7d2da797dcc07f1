"""The HTTP door of one node, built whole: listener, application, services.

``Node.start`` makes an :class:`HttpDoor` when the node has ``http_listen``,
binds it before building its view (so the view knows the port) and starts it
once the request layer exists; ``Node.stop`` stops it beside the gRPC server.
Everything the door serves goes through the same request layer, token checker,
client limits and metrics as the gRPC port.
"""

from __future__ import annotations

from edgekv.config.model import ClusterConfig
from edgekv.coordinator import Coordinator
from edgekv.http.app import HttpApp, with_cors
from edgekv.http.calls import Admission
from edgekv.http.direct import DirectUnary
from edgekv.http.listener import HttpListener
from edgekv.http.openapi import openapi_json
from edgekv.http.rest import RestFace
from edgekv.http.rpc import ClusterConnect, KVConnect, rpc_apps
from edgekv.http.unary import ConnectUnary
from edgekv.metrics import NodeMetrics
from edgekv.server.auth import Authorizer
from edgekv.server.cluster_service import ClusterService
from edgekv.server.interceptors import InflightLimiter
from edgekv.server.kv_messages import KVMessages


class HttpDoor:
    """Connect, gRPC-Web and REST on ``http_listen``. Runs on the node's event loop."""

    def __init__(self, config: ClusterConfig, node_id: str, limiter: InflightLimiter) -> None:
        spec = config.node(node_id)
        assert spec.http_listen, "only for a node with http_listen"
        self._config = config
        self._listener = HttpListener(spec.http_listen, config.security.tls, node_id, config.http)
        self._admission = Admission(limiter, config.limits.max_concurrent_rpcs)

    def bind(self) -> int:
        """Take the port (raises EdgeKVError naming http_listen); returns it."""
        return self._listener.bind()

    @property
    def inflight(self) -> int:
        """Calls and Watch streams in progress on the door."""
        return self._admission.inflight

    async def start(
        self,
        coordinator: Coordinator,
        cluster: ClusterService,
        auth: Authorizer | None,
        metrics: NodeMetrics,
    ) -> None:
        limits = self._config.limits
        messages = KVMessages(coordinator)
        kv = KVConnect(messages, auth, self._admission)
        status = ClusterConnect(cluster, auth, self._admission, messages.node_id)
        unary = ConnectUnary(kv, limits.message_bytes)
        recorder = metrics.http_recorder()
        app = HttpApp(
            rpc=rpc_apps(kv, status, limits.message_bytes),
            unary=unary,
            rest=RestFace(coordinator, auth, self._admission, limits),
            openapi=openapi_json(),
            limits=limits,
            recorder=recorder,
        )
        served = with_cors(app, self._config.http.cors_allow_origins)
        # Calls answered without ASGI must get what the served app adds: CORS adds
        # headers to every answer (even without an Origin), so with CORS, ASGI only.
        direct = DirectUnary(unary, recorder) if served is app else None
        await self._listener.start(served, direct)

    async def stop(self, grace_s: float) -> None:
        await self._listener.stop(grace_s)
