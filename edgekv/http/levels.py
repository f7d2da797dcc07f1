"""Read levels, session tokens and receipts on the REST face, as HTTP headers.

Requests: ``edgekv-consistency: local|session|strong`` and
``edgekv-session-token`` (base64url, as answers give it) on reads;
``edgekv-await-replicas`` (a count of other PoPs), ``edgekv-await-regions``
(comma-separated) and ``edgekv-await-timeout-ms`` on writes. Answers carry
``edgekv-session-token`` (reads that asked for a level or sent a token, every
write) and, for writes that awaited replicas, the receipts in the JSON body.
The Connect and gRPC-Web doors carry the same things in the protobuf messages.
"""

from __future__ import annotations

from typing import Any

from edgekv.consistency import level_of, token_from_text, token_of_versions, token_text
from edgekv.coordinator import Call, WriteAck
from edgekv.errors import InvalidArgument
from edgekv.replication.receipts import AwaitSpec

CONSISTENCY = "edgekv-consistency"
SESSION_TOKEN = "edgekv-session-token"
AWAIT_REPLICAS = "edgekv-await-replicas"
AWAIT_REGIONS = "edgekv-await-regions"
AWAIT_TIMEOUT_MS = "edgekv-await-timeout-ms"
REQUEST_HEADERS = (CONSISTENCY, SESSION_TOKEN, AWAIT_REPLICAS, AWAIT_REGIONS, AWAIT_TIMEOUT_MS)
RESPONSE_HEADERS = (SESSION_TOKEN,)


def read_level(call: Call, args: dict[str, Any]) -> None:
    """The request's level and token onto ``call`` (InvalidArgument naming the header)."""
    level, token = args.get(CONSISTENCY), args.get(SESSION_TOKEN)
    try:
        if level is not None:
            call.consistency = level_of(level)
        if token:
            call.session_token = token_from_text(token)
    except InvalidArgument as exc:
        raise InvalidArgument(f"header {CONSISTENCY if level else SESSION_TOKEN}: {exc}") from None


def await_of(args: dict[str, Any]) -> AwaitSpec | None:
    """The write's ``edgekv-await-*`` headers as an AwaitSpec (None when absent)."""
    count = args.get(AWAIT_REPLICAS) or 0
    regions = tuple(r.strip() for r in (args.get(AWAIT_REGIONS) or "").split(",") if r.strip())
    timeout_ms = args.get(AWAIT_TIMEOUT_MS) or 0
    if not count and not regions:
        return None
    return AwaitSpec(count, regions, timeout_ms)


def token_header(token: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """The ``edgekv-session-token`` response header, or none for an empty token."""
    return ((SESSION_TOKEN.encode(), token_text(token).encode()),) if token else ()


def ack_fields(ack: WriteAck) -> tuple[dict[str, Any], bytes]:
    """A write's session token and receipts: JSON body fields, and the token."""
    version = ack.version
    token = token_of_versions(((version.timestamp, version.origin),))
    fields: dict[str, Any] = {"session_token": token_text(token)}
    if ack.receipts or ack.not_applied_by:
        fields["receipts"] = [
            {"node_id": r.node_id, "region": r.region, "applied_after_ms": r.applied_after_ms}
            for r in ack.receipts
        ]
        fields["not_applied_by"] = list(ack.not_applied_by)
    return fields, token
