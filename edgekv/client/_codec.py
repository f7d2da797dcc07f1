"""Request building, response parsing and error mapping shared by Client and AsyncClient.

Both clients call these functions, so the sync and asyncio SDKs accept the same
arguments, return the same typed results and raise the same exceptions. They are
pure (no I/O) and run on every call: keep them allocation-lean.

Conversions: keys and values are ``bytes``; ``str`` is encoded as UTF-8, and
``bytearray``/``memoryview`` are copied to ``bytes``; anything else is an
``InvalidArgument``. Integer options that protobuf cannot carry (a negative
``ttl_ms``, a page size of 0) are rejected here with ``InvalidArgument`` rather
than leaking protobuf's ``ValueError``/``TypeError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import grpc

from edgekv.client._types import (
    Delete,
    Entry,
    Member,
    NodeStatus,
    Put,
    Receipt,
    Version,
    WatchEvent,
    WriteResult,
)
from edgekv.condition_status import error_from_status
from edgekv.errors import (
    EdgeKVError,
    InvalidArgument,
    MessageTooLarge,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    error_from_code,
)
from edgekv.v1 import cluster_pb2, common_pb2, kv_pb2

MAX_U64 = (1 << 64) - 1
MAX_U32 = (1 << 32) - 1


def to_bytes(value: object, what: str = "key") -> bytes:
    """``value`` as bytes: bytes as is, str encoded as UTF-8; InvalidArgument otherwise."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidArgument(f"{what} must be bytes or str, got {type(value).__name__}")


def check_uint(value: object, what: str, maximum: int = MAX_U64, minimum: int = 0) -> int:
    """``value`` if it is an int in [minimum, maximum]; InvalidArgument naming ``what`` if not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an integer, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"{what} is {value}; it must be {minimum}..{maximum}")
    return value


def version_of(msg: common_pb2.Version) -> Version:
    return Version(msg.timestamp, msg.origin)


# -- requests -----------------------------------------------------------------


def get_many_request(keys: Iterable[bytes | str]) -> kv_pb2.BatchGetRequest:
    """A BatchGet of ``keys`` in order (duplicates allowed, answered once each)."""
    if isinstance(keys, bytes | str):
        # A lone key would iterate as its characters: almost certainly a mistake.
        raise InvalidArgument("get_many takes a list of keys, not a single key")
    return kv_pb2.BatchGetRequest(keys=[to_bytes(k) for k in keys])


def put_request(
    key: bytes, value: bytes | str, ttl_ms: int, condition: common_pb2.Condition | None = None
) -> kv_pb2.PutRequest:
    """A Put of ``value`` under the already-encoded ``key``."""
    v = value if type(value) is bytes else to_bytes(value, "value")
    if ttl_ms == 0 and condition is None:
        return kv_pb2.PutRequest(key=key, value=v)
    return kv_pb2.PutRequest(
        key=key, value=v, ttl_ms=check_uint(ttl_ms, "ttl_ms"), condition=condition
    )


def condition(
    if_absent: bool = False, if_version: Version | None = None, what: str = ""
) -> common_pb2.Condition | None:
    """The wire condition of a write (None: unconditional); InvalidArgument for both."""
    if if_version is not None:
        if if_absent:
            raise InvalidArgument(f"{what}give if_absent or if_version, not both")
        try:
            timestamp, origin = if_version
            version = common_pb2.Version(timestamp=timestamp, origin=origin)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"{what}if_version must be a Version (timestamp, origin), got {if_version!r}"
            ) from exc
        return common_pb2.Condition(if_version=version)
    return common_pb2.Condition(if_absent=True) if if_absent else None


def write_request(ops: Iterable[Put | Delete]) -> kv_pb2.WriteRequest:
    """A Write of ``ops`` (edgekv.Put / edgekv.Delete) in order; InvalidArgument on others."""
    if isinstance(ops, Put | Delete):
        raise InvalidArgument("write takes a list of Put/Delete operations, not a single one")
    out = []
    for i, op in enumerate(ops):
        if isinstance(op, Put):
            ttl_ms = check_uint(op.ttl_ms, f"ops[{i}].ttl_ms")
            put = kv_pb2.PutOp(
                key=to_bytes(op.key),
                value=to_bytes(op.value, "value"),
                ttl_ms=ttl_ms,
                condition=condition(op.if_absent, op.if_version, f"ops[{i}]: "),
            )
            out.append(kv_pb2.WriteOp(put=put))
        elif isinstance(op, Delete):
            cond = condition(False, op.if_version, f"ops[{i}]: ")
            out.append(kv_pb2.WriteOp(delete=kv_pb2.DeleteOp(key=to_bytes(op.key), condition=cond)))
        else:
            raise InvalidArgument(f"ops[{i}] is {type(op).__name__}; expected edgekv.Put or Delete")
    return kv_pb2.WriteRequest(ops=out)


def first_key(req: kv_pb2.WriteRequest) -> bytes | None:
    """The key that routes a Write: all its keys must share one placement anyway."""
    if not req.ops:
        return None
    op = req.ops[0]
    return op.put.key if op.HasField("put") else op.delete.key


def scan_request(
    prefix: bytes | str, start: bytes | str, end: bytes | str, page_size: int, keys_only: bool
) -> kv_pb2.ScanRequest:
    """The first page's ScanRequest; later pages copy it with ``page_token`` set."""
    return kv_pb2.ScanRequest(
        prefix=to_bytes(prefix, "prefix"),
        start=to_bytes(start, "start"),
        end=to_bytes(end, "end"),
        limit=check_uint(page_size, "page_size", MAX_U32, 1),
        keys_only=bool(keys_only),
    )


def scan_route_key(req: kv_pb2.ScanRequest) -> bytes | None:
    """The key whose placement routes a scan (prefix, else start; None: any node)."""
    return req.prefix or req.start or None


def check_limit(limit: int | None) -> int | None:
    """A scan's total ``limit``: None (no limit) or an integer >= 0."""
    return None if limit is None else check_uint(limit, "limit")


# -- responses ----------------------------------------------------------------


def entry_from_get(key: bytes, resp: kv_pb2.GetResponse) -> Entry | None:
    if not resp.found:
        return None
    v = resp.version
    return Entry(
        key, resp.value, Version(v.timestamp, v.origin), resp.expires_at_ms, resp.served_by
    )


def entries_from_batch(resp: kv_pb2.BatchGetResponse) -> list[Entry | None]:
    served_by = resp.served_by
    return [
        Entry(r.key, r.value, version_of(r.version), r.expires_at_ms, r.served_by or served_by)
        if r.found
        else None
        for r in resp.results
    ]


def write_result(
    resp: kv_pb2.PutResponse | kv_pb2.DeleteResponse | kv_pb2.WriteResponse,
) -> WriteResult:
    return WriteResult(
        version_of(resp.version),
        resp.served_by,
        resp.session_token,
        tuple(Receipt(r.node_id, r.region, r.applied_after_ms) for r in resp.receipts),
        tuple(resp.not_applied_by),
    )


def scan_entries(resp: kv_pb2.ScanResponse) -> list[Entry]:
    served_by = resp.served_by
    return [
        Entry(i.key, i.value, version_of(i.version), i.expires_at_ms, i.served_by or served_by)
        for i in resp.items
    ]


def watch_event(e: kv_pb2.WatchEvent) -> WatchEvent:
    return WatchEvent(
        e.key,
        e.value,
        version_of(e.version),
        e.deleted,
        e.expires_at_ms,
        e.local,
        e.served_by,
        e.resume_token,
        e.progress,
    )


def node_status(s: cluster_pb2.StatusResponse) -> NodeStatus:
    return NodeStatus(
        node_id=s.node_id,
        region=s.region,
        cluster=s.cluster,
        uptime_s=s.uptime_s,
        key_count=s.key_count,
        read_path=s.read_path,
        server_version=s.server_version,
        last_seq=s.last_seq,
        sync_writes=s.sync_writes,
        metrics_endpoint=s.metrics_endpoint,
        hlc_timestamp=s.hlc_timestamp,
    )


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
            m.replication_connected,
        )
        for m in resp.members
    ]


# -- errors -------------------------------------------------------------------
#
# The one place where gRPC failures become EdgeKVError messages, for the SDK and
# the CLI alike. Transport errors a user can cause (a peer port, an oversized
# message, a TLS mismatch, a missing token) are recognised here and reworded to
# name the cause and the fix; everything else keeps the node's own message.

# gRPC target schemes the channel understands besides plain host:port.
_TARGET_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:")
# grpc core: "[SERVER: ]Received message larger than max (5000010 vs. 4194304)".
_LARGER_THAN_MAX = re.compile(
    r"(?P<server>SERVER: )?(?P<way>Received|Sent) message larger than max "
    r"\((?P<size>\d+) vs\. (?P<limit>\d+)\)"
)
# What BoringSSL (gRPC), Python's ssl (client/_http1.py) and rustls (pyqwest) say when the
# node's certificate does not chain to the CA given, then when it names other hosts.
_WRONG_CA = (
    "CERTIFICATE_VERIFY_FAILED", "certificate verify failed", "certificate signature failure",
    "unable to get local issuer certificate", "invalid peer certificate: BadSignature",
    "invalid peer certificate: UnknownIssuer",
)  # fmt: skip
_WRONG_HOST = ("is not in peer certificate", "certificate is not valid for", "NotValidForName")
_TLS_FIX_PLAINTEXT = (
    "drop --ca-file/$EDGEKV_CA_FILE (tls_ca_file in the SDK), or turn on security.tls on the node"
)
_TLS_FIX_SECURE = (
    "give the cluster's CA certificate: --ca-file or $EDGEKV_CA_FILE, or --config with "
    "the cluster file (tls_ca_file in the SDK)"
)
_TOKEN_FIX = "pass one with --token or $EDGEKV_TOKEN (token= in the SDK)"
_TOKEN_BAD_FIX = (
    "check the token given with --token, $EDGEKV_TOKEN or token= (its SHA-256 must be "
    "listed in the cluster file's security.auth.tokens)"
)


def check_endpoint(endpoint: object) -> str:
    """``endpoint`` if it is HOST:PORT (port 1..65535), a gRPC target (unix:/path)
    or the URL of a node's HTTP door (``http://HOST:PORT``, ``https://HOST:PORT``).

    Raises InvalidArgument naming the mistake (another URL scheme, a path, no
    port, a bad port) and the expected form, before anything is dialled.
    """
    if not isinstance(endpoint, str) or not endpoint:
        raise InvalidArgument(f"endpoint must be HOST:PORT (e.g. 127.0.0.1:7101), got {endpoint!r}")
    if endpoint.startswith(_TARGET_SCHEMES):
        return endpoint
    scheme, sep, rest = endpoint.partition("://")
    if sep:
        if scheme not in ("http", "https"):
            raise InvalidArgument(
                f"{endpoint!r} is not HOST:PORT: edgekv endpoints are HOST:PORT (gRPC) or "
                f"http(s)://HOST:PORT (the HTTP door), not {scheme}://"
            )
        address = rest.rstrip("/")
        if "/" in address or "?" in address:
            raise InvalidArgument(
                f"{endpoint!r} has a path; give the HTTP door as {scheme}://HOST:PORT"
            )
        _check_host_port(
            endpoint, address, f"{scheme}://HOST:PORT (e.g. {scheme}://127.0.0.1:8101)"
        )
        return endpoint
    return _check_host_port(endpoint, endpoint, "HOST:PORT (e.g. 127.0.0.1:7101)")


def _check_host_port(endpoint: str, address: str, example: str) -> str:
    form = example.split()[0]
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise InvalidArgument(f"{endpoint!r} is not {form}: the port is missing; give {example}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgument(
            f"{endpoint!r} is not {form}: the port {port!r} is not a number 1..65535; "
            f"give {example}"
        )
    return endpoint


# The HTTP clients' words for a port answering with HTTP/2 (a gRPC preface, then a close):
# pyqwest's, then client/_http1.py's (NOT_HTTP1).
_NOT_HTTP1 = ("invalid HTTP version", "unexpected message from connection", "was not ready",
              "the answer is not HTTP/1.1")  # fmt: skip


def _explain(
    code: grpc.StatusCode, details: str, endpoint: str, tls: bool | None
) -> tuple[type[EdgeKVError], str] | None:
    """(class, message) for a transport error a user can cause; None for the others."""
    where = f"{endpoint}: " if endpoint else ""
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return Unimplemented, (
            f"{where}this endpoint does not serve the edgekv client API; it is probably a "
            "node's peer port (peer_listen): use the node's listen address; the server said: "
            f"{details}"
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        m = _LARGER_THAN_MAX.search(details)
        if m is None:
            return None
        size, limit = m["size"], m["limit"]
        if m["way"] == "Sent":
            return MessageTooLarge, (
                f"the request is {size} bytes; this client sends at most {limit} "
                "(channel option grpc.max_send_message_length), and the node takes a value "
                "of at most limits.max_value_bytes (default 1048576)"
            )
        if m["server"]:
            return MessageTooLarge, (
                f"the request is {size} bytes; the node accepts messages up to {limit} bytes "
                "(limits.max_message_bytes) and values up to limits.max_value_bytes "
                "(default 1048576): store a smaller value, or raise both settings in the "
                "cluster file"
            )
        return MessageTooLarge, (
            f"the response is {size} bytes; this client accepts at most {limit} (channel "
            "option grpc.max_receive_message_length): ask for fewer items per call"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        if any(sign in details for sign in _NOT_HTTP1):  # an http:// URL naming a gRPC port
            return Unavailable, (
                f"{where}this port does not speak HTTP/1.1: it is probably a node's gRPC "
                "port (listen or peer_listen); an http(s):// endpoint names the node's HTTP "
                "door (http_listen)"
            )
        if "WRONG_VERSION_NUMBER" in details:
            return Unavailable, (
                f"{where}TLS handshake failed: the node does not use TLS (plaintext); "
                + _TLS_FIX_PLAINTEXT
            )
        if any(sign in details for sign in _WRONG_HOST):  # before _WRONG_CA: Python's
            return Unavailable, (  # words for it start as those of a wrong CA
                f"{where}TLS handshake failed: the node's certificate does not name the host "
                "you dialled; connect with a host name or IP it lists, or reissue it with "
                f"this one (`edgekv certs issue --host`); {details}"
            )
        if any(sign in details for sign in _WRONG_CA):
            return Unavailable, (
                f"{where}TLS handshake failed: the node's certificate is not signed by the "
                f"given CA; {_TLS_FIX_SECURE}"
            )
        if "handshake failed" in details.lower():
            return Unavailable, f"{where}TLS handshake failed ({details}); {_TLS_FIX_SECURE}"
        if not tls and "Socket closed" in details and "failed to connect" in details:
            return Unavailable, (
                f"{where}the node closed the connection before it was set up ({details}); "
                f"if the node uses TLS (security.tls), {_TLS_FIX_SECURE}"
            )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if "not valid" in details:
            return (
                Unauthenticated,
                f"the token was refused: {_TOKEN_BAD_FIX}; the node said: {details}",
            )
        return Unauthenticated, f"no valid token: {_TOKEN_FIX}; the node said: {details}"
    return None


def error_from_rpc(
    exc: grpc.RpcError, endpoint: str = "", *, tls: bool | None = None
) -> EdgeKVError:
    """The EdgeKVError subclass the node raised, from a gRPC error.

    The class comes from ``edgekv.errors.error_from_code`` (the table the node
    uses the other way round); codes outside the table give a plain EdgeKVError.
    The message is the node's own; when the node could not be reached at all
    (UNAVAILABLE, DEADLINE_EXCEEDED) it starts with ``endpoint`` so the caller
    sees which address failed. Transport errors a user can cause (a peer port,
    a message over the size limit, a TLS mismatch, a missing or unknown token)
    get a message that names the cause and the fix, and the class the table
    gives their code (an oversized message: MessageTooLarge, also an
    InvalidArgument). ``tls`` says whether the channel used TLS (None: unknown).
    """
    code = exc.code() if hasattr(exc, "code") else None
    if not isinstance(code, grpc.StatusCode):
        return EdgeKVError(f"{endpoint + ': ' if endpoint else ''}gRPC call failed: {exc!r}")
    details = exc.details() if hasattr(exc, "details") else None
    message = details or code.name
    explained = _explain(code, message, endpoint, tls)
    if explained is not None:
        cls, text = explained
        return cls(text)
    if (
        code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        and endpoint
        and not message.startswith(endpoint)
    ):
        message = f"{endpoint}: {message}"
    if code == grpc.StatusCode.FAILED_PRECONDITION:  # a failed condition carries a version
        trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
        return error_from_status(code, message, trailers)
    return error_from_code(code, message)
