"""The ``edgekv.v1.KV`` and ``edgekv.v1.Cluster`` services for connectrpc: Connect and gRPC-Web.

connectrpc decodes the request (Connect unary with proto or JSON bodies, Connect
streaming, gRPC-Web) into the same ``edgekv.v1`` message a gRPC call carries;
each method here builds the :class:`Call` from the HTTP headers, hands the
message to :class:`~edgekv.server.kv_messages.KVMessages` (the code the gRPC
servicer runs) and returns its response. An ``EdgeKVError`` becomes a
``ConnectError`` with the code of errors.GRPC_CODE_BY_ERROR, which connectrpc
writes as Connect error JSON (with the HTTP status of errors.HTTP_STATUS_BY_CODE)
or as gRPC-Web trailers.

Each answer carries ``edgekv-served-by`` (the node that served it) and a
``Server-Timing`` entry for the request layer: ``kv`` when served here,
``forward`` when another node served it.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from protobuf.wkt import Any as AnyDetail

from edgekv.condition_status import VERSION_TYPE, trailing_metadata
from edgekv.coordinator import Call
from edgekv.errors import EdgeKVError, connect_code_name, grpc_code_for
from edgekv.http.calls import SERVED_BY, Admission, call_of, client_of_address
from edgekv.server.auth import Authorizer
from edgekv.server.cluster_service import ClusterService
from edgekv.server.kv_messages import KVMessages
from edgekv.v1 import cluster_connect, cluster_pb2, kv_connect, kv_pb2

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_CODES = {code.value: code for code in Code}
_TYPE_URL = "type.googleapis.com/"


def connect_error(exc: EdgeKVError) -> ConnectError:
    """``exc`` as connectrpc's error, with the code of the one error table.

    A failed condition's current version rides as an error detail (an
    ``edgekv.v1.Version``), as it rides in gRPC's trailing metadata.
    """
    details = [
        AnyDetail(type_url=_TYPE_URL + VERSION_TYPE, value=v) for _, v in trailing_metadata(exc)
    ]
    return ConnectError(_CODES[connect_code_name(grpc_code_for(exc))], str(exc), details)


class _Door:
    """What every method of the door needs: the token checker and the client limits."""

    _admission: Admission
    _auth: Authorizer | None


_D = TypeVar("_D", bound=_Door)


def _served(
    method: Callable[[_D, _Req, RequestContext], Coroutine[Any, Any, _Resp]],
) -> Callable[[_D, _Req, RequestContext], Coroutine[Any, Any, _Resp]]:
    """Admit the call under the client limits, run it, and map an EdgeKVError to Connect."""

    @functools.wraps(method)
    async def wrapped(self: _D, request: _Req, ctx: RequestContext) -> _Resp:
        client = client_of_address(ctx.client_address)
        admission = self._admission
        try:
            admission.enter_call(client)
        except EdgeKVError as exc:
            raise connect_error(exc) from exc
        try:
            return await method(self, request, ctx)
        except EdgeKVError as exc:
            raise connect_error(exc) from exc
        finally:
            admission.leave_call(client)

    return wrapped


def _call(auth: Authorizer | None, ctx: RequestContext) -> Call:
    def time_remaining() -> float | None:
        left_ms = ctx.timeout_ms
        return None if left_ms is None else left_ms / 1000.0

    return call_of(auth, ctx.request_headers.get, time_remaining)


class KVConnect(_Door, kv_connect.KV):
    """The KV service as connectrpc calls it; one per node, shared by all requests."""

    def __init__(self, messages: KVMessages, auth: Authorizer | None, admission: Admission) -> None:
        self._messages = messages
        self._auth = auth
        self._admission = admission
        self._node_id = messages.node_id

    def _answered(self, ctx: RequestContext, served_by: str, started: float) -> None:
        """Name the serving node and the request layer's time in the response headers."""
        headers = ctx.response_headers
        headers[SERVED_BY] = served_by
        where = "kv" if served_by == self._node_id else "forward"
        headers["server-timing"] = f"{where};dur={(time.perf_counter() - started) * 1000:.3f}"

    async def _unary(self, rpc: Any, request: Any, ctx: RequestContext) -> Any:
        """One KV call through the shared layer, its answer headed with who served it."""
        started = time.perf_counter()
        response = await rpc(request, _call(self._auth, ctx))
        self._answered(ctx, response.served_by, started)
        return response

    @_served
    async def get(self, request: kv_pb2.GetRequest, ctx: RequestContext) -> kv_pb2.GetResponse:
        return await self._unary(self._messages.get, request, ctx)

    @_served
    async def batch_get(
        self, request: kv_pb2.BatchGetRequest, ctx: RequestContext
    ) -> kv_pb2.BatchGetResponse:
        return await self._unary(self._messages.batch_get, request, ctx)

    @_served
    async def put(self, request: kv_pb2.PutRequest, ctx: RequestContext) -> kv_pb2.PutResponse:
        return await self._unary(self._messages.put, request, ctx)

    @_served
    async def delete(
        self, request: kv_pb2.DeleteRequest, ctx: RequestContext
    ) -> kv_pb2.DeleteResponse:
        return await self._unary(self._messages.delete, request, ctx)

    @_served
    async def write(
        self, request: kv_pb2.WriteRequest, ctx: RequestContext
    ) -> kv_pb2.WriteResponse:
        return await self._unary(self._messages.write, request, ctx)

    @_served
    async def scan(self, request: kv_pb2.ScanRequest, ctx: RequestContext) -> kv_pb2.ScanResponse:
        return await self._unary(self._messages.scan, request, ctx)

    async def watch(
        self, request: kv_pb2.WatchRequest, ctx: RequestContext
    ) -> AsyncIterator[kv_pb2.WatchEvent]:
        """Watch events until the client goes away (connectrpc then closes this generator)."""
        ctx.response_headers[SERVED_BY] = self._node_id
        client = client_of_address(ctx.client_address)
        try:
            self._admission.enter_stream(client)
        except EdgeKVError as exc:
            raise connect_error(exc) from exc
        try:
            events = self._messages.watch(request, _call(self._auth, ctx))
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        except EdgeKVError as exc:
            raise connect_error(exc) from exc
        finally:
            self._admission.leave_stream(client)


class ClusterConnect(_Door, cluster_connect.Cluster):
    """Cluster.Status and Cluster.Members (read scope); Audit and Backup stay on gRPC."""

    def __init__(
        self,
        service: ClusterService,
        auth: Authorizer | None,
        admission: Admission,
        node_id: str,
    ) -> None:
        self._service = service
        self._auth = auth
        self._admission = admission
        self._node_id = node_id

    def _authorize(self, ctx: RequestContext) -> None:
        call = _call(self._auth, ctx)
        call.principal.authorize("read")
        ctx.response_headers[SERVED_BY] = self._node_id

    @_served
    async def status(
        self, request: cluster_pb2.StatusRequest, ctx: RequestContext
    ) -> cluster_pb2.StatusResponse:
        self._authorize(ctx)
        return self._service.status_response()

    @_served
    async def members(
        self, request: cluster_pb2.MembersRequest, ctx: RequestContext
    ) -> cluster_pb2.MembersResponse:
        self._authorize(ctx)
        return self._service.members_response()


def rpc_apps(kv: KVConnect, cluster: ClusterConnect, read_max_bytes: int) -> dict[str, Any]:
    """The connectrpc ASGI applications by their path prefix ("/edgekv.v1.KV/")."""
    kv_app = kv_connect.KVASGIApplication(kv, read_max_bytes=read_max_bytes)
    cluster_app = cluster_connect.ClusterASGIApplication(cluster, read_max_bytes=read_max_bytes)
    return {kv_app.path + "/": kv_app, cluster_app.path + "/": cluster_app}
