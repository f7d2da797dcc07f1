"""Request building and response parsing shared by Client and AsyncClient."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from edgekv.client._types import (
    Delete,
    Entry,
    Member,
    NodeStatus,
    Put,
    Version,
    WatchEvent,
    WriteResult,
)
from edgekv.errors import EdgeKVError, InvalidArgument, error_from_code
from edgekv.v1 import cluster_pb2, common_pb2, kv_pb2


def to_bytes(value: bytes | str, what: str = "key") -> bytes:
    """Keys and values are bytes; str is accepted and encoded as UTF-8."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidArgument(f"{what} must be bytes or str, got {type(value).__name__}")


def version_of(msg: common_pb2.Version) -> Version:
    return Version(msg.timestamp, msg.origin)


def entry_from_get(key: bytes, resp: kv_pb2.GetResponse) -> Entry | None:
    if not resp.found:
        return None
    return Entry(key, resp.value, version_of(resp.version), resp.expires_at_ms, resp.served_by)


def entries_from_batch(resp: kv_pb2.BatchGetResponse) -> list[Entry | None]:
    served_by = resp.served_by
    return [
        Entry(r.key, r.value, version_of(r.version), r.expires_at_ms, served_by)
        if r.found
        else None
        for r in resp.results
    ]


def write_result(
    resp: kv_pb2.PutResponse | kv_pb2.DeleteResponse | kv_pb2.WriteResponse,
) -> WriteResult:
    return WriteResult(version_of(resp.version), resp.served_by)


def write_request(ops: Iterable[Put | Delete]) -> kv_pb2.WriteRequest:
    out = []
    for i, op in enumerate(ops):
        if isinstance(op, Put):
            out.append(
                kv_pb2.WriteOp(
                    put=kv_pb2.PutOp(
                        key=to_bytes(op.key), value=to_bytes(op.value, "value"), ttl_ms=op.ttl_ms
                    )
                )
            )
        elif isinstance(op, Delete):
            out.append(kv_pb2.WriteOp(delete=kv_pb2.DeleteOp(key=to_bytes(op.key))))
        else:
            raise InvalidArgument(f"ops[{i}] is {type(op).__name__}; expected edgekv.Put or Delete")
    return kv_pb2.WriteRequest(ops=out)


def first_key(req: kv_pb2.WriteRequest) -> bytes | None:
    """The key that routes a Write: all its keys must share one placement anyway."""
    if not req.ops:
        return None
    op = req.ops[0]
    return op.put.key if op.HasField("put") else op.delete.key


def scan_entries(resp: kv_pb2.ScanResponse) -> list[Entry]:
    served_by = resp.served_by
    return [
        Entry(i.key, i.value, version_of(i.version), i.expires_at_ms, served_by) for i in resp.items
    ]


def watch_event(e: kv_pb2.WatchEvent) -> WatchEvent:
    return WatchEvent(
        e.key, e.value, version_of(e.version), e.deleted, e.expires_at_ms, e.local, e.served_by
    )


def node_status(s: cluster_pb2.StatusResponse) -> NodeStatus:
    return NodeStatus(
        s.node_id, s.region, s.cluster, s.uptime_s, s.key_count, s.read_path,
        s.server_version, s.last_seq, s.sync_writes, s.metrics_endpoint,
    )  # fmt: skip


def members(resp: cluster_pb2.MembersResponse) -> list[Member]:
    return [
        Member(
            m.node_id,
            m.region,
            m.endpoint,
            m.is_self,
            m.reachable,
            m.rtt_ms,
            m.lag_entries,
            m.lag_seconds,
            m.last_error,
        )
        for m in resp.members
    ]


def error_from_rpc(exc: grpc.RpcError, endpoint: str = "") -> EdgeKVError:
    """The EdgeKVError subclass the node raised, from a gRPC error."""
    code = exc.code()
    details = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE and endpoint and endpoint not in details:
        details = f"{endpoint}: {details}"
    return error_from_code(code, details)
