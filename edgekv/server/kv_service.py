"""The public KV gRPC service: check the request, call the request layer, build the response.

Each method reads the caller from gRPC metadata into a ``Call`` (principal,
forwarding header, deadline) and hands the decoded request to
:class:`~edgekv.server.kv_messages.KVMessages`, which calls the node's
``Coordinator`` and builds the response message (the HTTP door shares it);
``grpc_errors`` turns any EdgeKVError into its status. Rules (auth, routing,
fan-out, write paths) live in the coordinator, so every front door shares them.
``Stream`` multiplexes the same point operations over one bidi stream
(server/kv_stream.py), authenticated once when it opens.
Handlers are ``async def``: a plain function would run on a thread pool, one
thread hop per call (performance-notes.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import grpc

from edgekv.cluster.routing import FORWARDED_BY
from edgekv.coordinator import Call, Coordinator
from edgekv.coordinator.draining import StreamDrain
from edgekv.limits import DEFAULT_LIMITS, Limits
from edgekv.principal import AUTHORIZATION
from edgekv.server.auth import Authorizer, principal_of
from edgekv.server.interceptors import client_of
from edgekv.server.kv_messages import KVMessages
from edgekv.server.kv_stream import CallAdmission, OperationRecorder, StreamOps
from edgekv.server.status import grpc_errors, grpc_stream_errors
from edgekv.v1 import kv_pb2, kv_pb2_grpc


class KVService(kv_pb2_grpc.KVServicer):
    """gRPC door of one node's request layer.

    ``auth`` None means auth is disabled (local development only): every call
    then runs as ``ANYONE``. ``limits.max_stream_inflight`` bounds the
    operations of one Stream; ``recorder`` counts each of them (unary calls are
    counted by the metrics interceptor).
    """

    def __init__(
        self,
        coordinator: Coordinator,
        auth: Authorizer | None = None,
        limits: Limits = DEFAULT_LIMITS,
        recorder: OperationRecorder | None = None,
        drain: StreamDrain | None = None,
        admission: CallAdmission | None = None,
    ) -> None:
        self._messages = KVMessages(coordinator)
        self._auth = auth
        self._stream = StreamOps(
            self._messages, limits.max_stream_inflight, recorder, drain, admission
        )

    def _call(self, context: grpc.aio.ServicerContext) -> Call:
        """Authenticate the caller and read what the request layer needs from metadata."""
        credentials = forwarded_by = None
        for key, value in context.invocation_metadata() or ():  # the first of each counts
            if key == AUTHORIZATION and credentials is None:
                credentials = value if isinstance(value, str) else value.decode("latin-1")
            elif key == FORWARDED_BY and forwarded_by is None:
                forwarded_by = str(value)
        principal = principal_of(self._auth, credentials)
        return Call(principal, credentials, forwarded_by, context.time_remaining)

    @grpc_errors
    async def Get(
        self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.GetResponse:
        return await self._messages.get(request, self._call(context))

    @grpc_errors
    async def BatchGet(
        self, request: kv_pb2.BatchGetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.BatchGetResponse:
        return await self._messages.batch_get(request, self._call(context))

    @grpc_errors
    async def Put(
        self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.PutResponse:
        return await self._messages.put(request, self._call(context))

    @grpc_errors
    async def Delete(
        self, request: kv_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.DeleteResponse:
        return await self._messages.delete(request, self._call(context))

    @grpc_errors
    async def Write(
        self, request: kv_pb2.WriteRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.WriteResponse:
        return await self._messages.write(request, self._call(context))

    @grpc_errors
    async def Scan(
        self, request: kv_pb2.ScanRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.ScanResponse:
        return await self._messages.scan(request, self._call(context))

    @grpc_stream_errors
    async def Watch(
        self, request: kv_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[kv_pb2.WatchEvent, None]:
        events = self._messages.watch(request, self._call(context))
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    @grpc_errors
    async def Stream(
        self, requests: AsyncIterator[kv_pb2.StreamRequest], context: grpc.aio.ServicerContext
    ) -> None:
        client = client_of(context.peer())  # ``requests`` unused: StreamOps reads the context
        await self._stream.serve(context, self._call(context), client)
