"""How a failed condition travels: FAILED_PRECONDITION plus the key's current version.

A write whose condition (``if_absent``, ``if_version``) does not hold at the
key's home fails with :class:`~edgekv.errors.ConditionFailed`. On gRPC its
status carries the trailing metadata ``edgekv-current-version-bin`` (the
serialized ``edgekv.v1.Version`` of the live value; absent when there is
none); the HTTP door sends the same as a Connect error metadata header and the
REST face as the ``EdgeKV-Current-Version`` header (``TS:ORIGIN``). A node that
relays a forwarded call's status, and the SDK, rebuild the same exception from
it. Used by the node's doors, its forwarder and the SDK alike (no node imports).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from edgekv.errors import ConditionFailed, EdgeKVError, relayed_status
from edgekv.storage.record import Version
from edgekv.v1 import common_pb2

CURRENT_VERSION_METADATA = "edgekv-current-version-bin"
# The REST face's header: the current version as text, "TS:ORIGIN".
CURRENT_VERSION_HEADER = "edgekv-current-version"
# The Connect error detail's type that carries the current version.
VERSION_TYPE = "edgekv.v1.Version"
# Every ConditionFailed message starts so (with or without a current version).
MESSAGE_START = "condition failed"

Metadata = Iterable[tuple[str, str | bytes]]


def trailing_metadata(exc: EdgeKVError) -> tuple[tuple[str, bytes], ...]:
    """What a status for ``exc`` carries besides its code and message (empty for most)."""
    if not isinstance(exc, ConditionFailed) or exc.current_version is None:
        return ()
    timestamp, origin = exc.current_version
    version = common_pb2.Version(timestamp=timestamp, origin=origin)
    return ((CURRENT_VERSION_METADATA, version.SerializeToString()),)


def version_text(exc: ConditionFailed) -> str:
    """The current version as the REST header writes it ("TS:ORIGIN"), "" without one."""
    if exc.current_version is None:
        return ""
    return f"{exc.current_version[0]}:{exc.current_version[1]}"


def error_from_status(
    code: grpc.StatusCode, message: str, metadata: Metadata | None
) -> EdgeKVError:
    """The error a status stands for, a ConditionFailed (with its version) included.

    Other statuses give what ``errors.relayed_status`` gives.
    """
    if code != grpc.StatusCode.FAILED_PRECONDITION or not message.startswith(MESSAGE_START):
        return relayed_status(code, message)
    current = None
    for key, value in metadata or ():
        if key == CURRENT_VERSION_METADATA and isinstance(value, bytes):
            version = common_pb2.Version.FromString(value)
            current = Version(version.timestamp, version.origin)
    return ConditionFailed(message, b"", current)


def error_from_rpc_error(exc: grpc.aio.AioRpcError) -> EdgeKVError:
    """``error_from_status`` of a failed gRPC call (what a forwarding node relays)."""
    return error_from_status(exc.code(), exc.details() or "", exc.trailing_metadata())
