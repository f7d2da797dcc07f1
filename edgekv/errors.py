"""Error classes shared by the node, the SDK and the CLI.

Inside the node every failure is raised as an :class:`EdgeKVError` subclass. At the
gRPC edge one table (:data:`GRPC_CODE_BY_ERROR`) maps the class to a status code, and
the SDK maps the code back to the same class (:func:`error_from_code`), so callers
catch the same exception whether they use the engine in-process or a remote node.
"""

from __future__ import annotations

import grpc


class EdgeKVError(Exception):
    """Base class of every error edgekv raises on purpose."""


class InvalidArgument(EdgeKVError, ValueError):
    """The request is malformed: bad key, oversized value, bad range, bad option."""


class NotFound(EdgeKVError, KeyError):
    """The named thing does not exist (used only where the API says so)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FailedPrecondition(EdgeKVError):
    """A condition the caller asked for does not hold."""


class ConditionFailed(FailedPrecondition):
    """A write's condition (``if_absent``, ``if_version``) did not hold at the key's home.

    ``key`` is the key whose condition failed and ``current_version`` its live
    value's (timestamp, origin), None when it has no live value (absent,
    deleted or expired). On the wire it is FAILED_PRECONDITION with the message
    starting "condition failed" and the version in the trailing metadata
    ``edgekv-current-version-bin`` (a serialized ``edgekv.v1.Version``).
    """

    def __init__(
        self, message: str, key: bytes = b"", current_version: tuple[int, str] | None = None
    ) -> None:
        super().__init__(message)
        self.key = key
        self.current_version = current_version


class ResourceExhausted(EdgeKVError):
    """A size, rate or concurrency limit was hit."""


class Unavailable(EdgeKVError):
    """The node (or every node allowed to serve the key) cannot be reached now."""


class DeadlineExceeded(EdgeKVError):
    """The call did not finish within its deadline."""


class Unauthenticated(EdgeKVError):
    """The caller presented no valid credentials."""


class PermissionDenied(EdgeKVError):
    """The caller's credentials do not allow this call."""


class Internal(EdgeKVError):
    """A bug or a storage failure on the node; the message says which."""


class StorageError(Internal):
    """RocksDB refused an operation or returned something unreadable."""


class CorruptRecord(StorageError):
    """A stored record does not parse; the message says where and why."""


class DiskFull(ResourceExhausted):
    """The node's data directory has no space left: it refuses writes (reads are
    served) until space is freed there and it reopens its database by itself
    (storage/recovery.py). Write through another PoP meanwhile."""


class Unimplemented(EdgeKVError):
    """The endpoint does not serve this method: usually a node's peer port
    (``peer_listen``) or another gRPC service instead of the client ``listen`` port."""


class MessageTooLarge(InvalidArgument, ResourceExhausted):
    """A request or response is over a gRPC message-size limit.

    Both an InvalidArgument (like a value over ``max_value_bytes``, the same
    mistake by a wider margin) and a ResourceExhausted (the gRPC code it
    arrives with), so code that catches either keeps working.
    """


class OtherStatus(EdgeKVError):
    """A gRPC status with no class of its own (CANCELLED, ABORTED, DATA_LOSS...).

    It keeps its ``code``, so a status relayed from another node (a forwarded
    call) reaches the caller unchanged, and SDK users can still tell them apart.
    """

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


class WatchTokenExpired(EdgeKVError):
    """A Watch resume token is older than the serving PoP's change feed retains (OUT_OF_RANGE).

    Nothing can be replayed without a gap: rescan the range, then watch from
    the first scan page's ``watch_token``.
    """


class ConfigError(EdgeKVError, ValueError):
    """The cluster file is invalid; the message names the entry."""


GRPC_CODE_BY_ERROR: dict[type[EdgeKVError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Internal: grpc.StatusCode.INTERNAL,
    Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    WatchTokenExpired: grpc.StatusCode.OUT_OF_RANGE,
    ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
}

_ERROR_BY_CODE: dict[grpc.StatusCode, type[EdgeKVError]] = {
    code: cls for cls, code in GRPC_CODE_BY_ERROR.items() if cls is not ConfigError
}


def grpc_code_for(exc: EdgeKVError) -> grpc.StatusCode:
    """The status code for ``exc``: the entry of its nearest class in the table."""
    if isinstance(exc, OtherStatus):
        return exc.code
    for cls in type(exc).__mro__:
        code = GRPC_CODE_BY_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


# What each status code is over HTTP: the Connect protocol's mapping
# (connectrpc.com/docs/protocol, "Error Codes"), used by every HTTP face (Connect
# unary errors, REST). With GRPC_CODE_BY_ERROR it is the one table from an
# EdgeKVError to its gRPC code, Connect code and HTTP status.
HTTP_STATUS_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def connect_code_name(code: grpc.StatusCode) -> str:
    """The Connect protocol's name of a status code: "invalid_argument", "canceled"."""
    return "canceled" if code is grpc.StatusCode.CANCELLED else code.name.lower()


def http_status_for(exc: EdgeKVError) -> int:
    """The HTTP status of ``exc`` (through its gRPC code, so the two never disagree)."""
    return HTTP_STATUS_BY_CODE.get(grpc_code_for(exc), 500)


# What the SDK's streamed transport adds to the status of an operation that its
# stream ended before the operation was written to it (client/_stream.py).
NOT_SENT_ON_STREAM = "not sent: the stream had ended"

# The words of a call that failed before it was sent: gRPC core's when no
# subchannel could connect (connection refused, unreachable, handshake failed),
# the HTTP client's under the SDK's http(s):// endpoints (pyqwest: the
# connection, TCP or TLS, could not be made), and the streamed transport's.
_NOT_CONNECTED = (
    "failed to connect to all addresses",
    "client error (Connect)",
    "cannot connect over HTTP/1.1",  # client/_http1.py (both SDK clients' unary calls)
    NOT_SENT_ON_STREAM,
)


def never_sent(code: grpc.StatusCode, details: str | None) -> bool:
    """Whether a failed gRPC call certainly never reached its server.

    True only for UNAVAILABLE because no connection could be made to send it
    on. Any other failure may have come after the server acted on the call (a
    connection lost on the way back): a write that failed so has an unknown
    outcome, and sending it again elsewhere could store it twice.
    """
    return code == grpc.StatusCode.UNAVAILABLE and any(
        words in (details or "") for words in _NOT_CONNECTED
    )


def error_from_code(code: grpc.StatusCode, message: str) -> EdgeKVError:
    """The SDK side of the table: an exception of the class the node raised."""
    cls = _ERROR_BY_CODE.get(code, EdgeKVError)
    return cls(message)


def relayed_status(code: grpc.StatusCode, message: str) -> EdgeKVError:
    """A status another node answered, to pass on to our caller unchanged.

    Like ``error_from_code``, but a code with no class of its own becomes an
    ``OtherStatus`` that keeps it (``grpc_code_for`` gives it back).
    """
    if code in _ERROR_BY_CODE:
        return _ERROR_BY_CODE[code](message)
    return OtherStatus(message, code)
