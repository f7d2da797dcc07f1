"""KV.Stream's messages on the gRPC door, and its one shortcut past protobuf.

Most of what a stream carries is LOCAL gets, and on a streamed get the node's
own cost is mostly Python objects: the request decoded into a StreamRequest,
the answer built field by field, then serialized. So the stream's decoder
hands ``_OneStream`` a LOCAL get that sets nothing but its key as a tuple
``(id, timeout_ms, key)`` (``native.stream_plain_get``, which leaves anything
else, a field twice included, to protobuf), and its answer is written as the
bytes protobuf would write (``native.stream_get_answer``; tests/parity checks
both against protobuf). Every other request and answer is a protobuf message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from edgekv.errors import EdgeKVError, grpc_code_for
from edgekv.native import stream_plain_get
from edgekv.server.status import trailing_metadata_of
from edgekv.v1 import kv_pb2, kv_pb2_grpc

_StreamRequest = kv_pb2.StreamRequest
_StreamResponse = kv_pb2.StreamResponse
_StreamError = kv_pb2.StreamError

# An answer as written: a StreamResponse, or its bytes (a LOCAL get's).
Answer = kv_pb2.StreamResponse | bytes
# A request as read: a StreamRequest, or a LOCAL get's (id, timeout_ms, key).
Request = kv_pb2.StreamRequest | tuple[int, int, bytes]

# The answer of a finished operation, by its StreamRequest oneof field.
ANSWER: dict[str, Callable[[int, Any], kv_pb2.StreamResponse]] = {
    "get": lambda i, r: _StreamResponse(id=i, get=r),
    "put": lambda i, r: _StreamResponse(id=i, put=r),
    "delete": lambda i, r: _StreamResponse(id=i, delete=r),
    "batch_get": lambda i, r: _StreamResponse(id=i, batch_get=r),
    "write": lambda i, r: _StreamResponse(id=i, write=r),
}


def error_response(request_id: int, exc: EdgeKVError) -> kv_pb2.StreamResponse:
    """The StreamResponse failing operation ``request_id`` as the unary method fails."""
    error = _StreamError(code=grpc_code_for(exc).value[0], message=str(exc))
    for key, value in trailing_metadata_of(exc):
        error.metadata[key] = value if isinstance(value, bytes) else value.encode()
    return _StreamResponse(id=request_id, error=error)


def decode_request(raw: bytes) -> Request:
    """KV.Stream's request decoder: a LOCAL get as a tuple, anything else as protobuf
    decodes it (a DecodeError is the door's to answer: server/interceptors.py)."""
    plain = stream_plain_get(raw)
    return plain if plain is not None else _StreamRequest.FromString(raw)


def encode_response(answer: Answer) -> bytes:
    """KV.Stream's answer encoder: bytes as they are, a StreamResponse serialized."""
    if isinstance(answer, bytes):
        return answer
    return answer.SerializeToString()


class _Registered:
    """Stands in for the server while the generated code registers KV's handlers."""

    handlers: dict[str, grpc.RpcMethodHandler]

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.handlers = dict(handlers)


def add_kv_service(servicer: Any, server: grpc.aio.Server) -> None:
    """``kv_pb2_grpc.add_KVServicer_to_server`` with KV.Stream's own codec."""
    registered = _Registered()
    kv_pb2_grpc.add_KVServicer_to_server(servicer, registered)
    handlers = registered.handlers
    handlers["Stream"] = grpc.stream_stream_rpc_method_handler(
        servicer.Stream, request_deserializer=decode_request, response_serializer=encode_response
    )
    service = "edgekv.v1.KV"
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


__all__ = [
    "ANSWER",
    "Answer",
    "Request",
    "add_kv_service",
    "decode_request",
    "encode_response",
    "error_response",
]
