"""Read levels and session tokens: shared by the SDK, the CLI and the node.

A session token is the serialized ``edgekv.v1.SessionToken``: per origin node,
the greatest hybrid-logical-clock timestamp of a write from that origin the
session has written or read. Tokens merge by taking, per origin, the greater
timestamp, so merging is commutative, associative and idempotent, and a token
handed from one process to another (a cookie, a queue message) keeps working.
Clients treat the bytes as opaque; ``token_text``/``token_from_text`` give the
base64url form used by the HTTP face and the CLI.

This module is a leaf: it imports only the generated messages and the error
classes, so the SDK uses it without the node.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping

from google.protobuf.message import DecodeError

from edgekv.errors import InvalidArgument
from edgekv.v1 import common_pb2

# The edgekv.v1.Consistency values.
LOCAL = 0
SESSION = 1
STRONG = 2
LEVELS = {"local": LOCAL, "session": SESSION, "strong": STRONG}
LEVEL_NAMES = {number: name for name, number in LEVELS.items()}

# A token names at most this many origins (one per node that ever wrote for the
# session) and is at most this many bytes; origin ids are node ids (short).
MAX_TOKEN_ORIGINS = 256
MAX_TOKEN_BYTES = 16 * 1024
MAX_ORIGIN_BYTES = 128

Seen = dict[str, int]

_SessionToken = common_pb2.SessionToken


def level_of(value: str | int | None) -> int:
    """The level number of ``value`` ("local", "session", "strong", or 0..2); None is LOCAL."""
    if value is None:
        return LOCAL
    if isinstance(value, int) and not isinstance(value, bool):
        if value in LEVEL_NAMES:
            return value
    elif isinstance(value, str) and value.strip().lower() in LEVELS:
        return LEVELS[value.strip().lower()]
    raise InvalidArgument(
        f"consistency is {value!r}; it must be one of {', '.join(LEVELS)} (or 0..2)"
    )


def decode_token(raw: bytes) -> Seen:
    """The per-origin timestamps of a serialized token (b"": none).

    Raises InvalidArgument naming the limit for a token that is too large,
    names too many origins, or is not a SessionToken.
    """
    if not raw:
        return {}
    if len(raw) > MAX_TOKEN_BYTES:
        raise InvalidArgument(f"session token is {len(raw)} bytes; the limit is {MAX_TOKEN_BYTES}")
    message = _SessionToken()
    try:
        message.ParseFromString(raw)
    except DecodeError:
        raise InvalidArgument(
            "session token is not a serialized edgekv.v1.SessionToken; send back the bytes "
            "an earlier answer carried"
        ) from None
    seen = dict(message.seen)
    if len(seen) > MAX_TOKEN_ORIGINS:
        raise InvalidArgument(
            f"session token names {len(seen)} origins; the limit is {MAX_TOKEN_ORIGINS}"
        )
    for origin in seen:
        if not origin or len(origin.encode()) > MAX_ORIGIN_BYTES:
            raise InvalidArgument(
                f"session token names origin {origin[:MAX_ORIGIN_BYTES]!r}; an origin is a node "
                f"id of 1..{MAX_ORIGIN_BYTES} bytes"
            )
    return seen


def encode_token(seen: Mapping[str, int]) -> bytes:
    """The serialized token of ``seen`` (deterministic: equal tokens, equal bytes)."""
    if not seen:
        return b""
    return _SessionToken(seen={o: t for o, t in seen.items() if t}).SerializeToString(
        deterministic=True
    )


def merge_seen(into: Seen, more: Mapping[str, int]) -> Seen:
    """``into`` updated with ``more`` (per origin, the greater timestamp); returns ``into``."""
    for origin, timestamp in more.items():
        if timestamp > into.get(origin, 0):
            into[origin] = timestamp
    return into


def merge_tokens(*tokens: bytes) -> bytes:
    """One token covering every token given (empty ones are skipped)."""
    present = [t for t in tokens if t]
    if len(present) <= 1:
        return present[0] if present else b""
    seen: Seen = {}
    for token in present:
        merge_seen(seen, decode_token(token))
    return encode_token(seen)


def token_of_versions(versions: Iterable[tuple[int, str]], base: Seen | None = None) -> bytes:
    """A token of ``base`` merged with each (timestamp, origin) version."""
    seen: Seen = dict(base) if base else {}
    for timestamp, origin in versions:
        if origin and timestamp > seen.get(origin, 0):
            seen[origin] = timestamp
    return encode_token(seen)


def token_text(token: bytes) -> str:
    """``token`` as unpadded base64url (HTTP headers, the CLI)."""
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def token_from_text(text: str) -> bytes:
    """The token bytes of a base64url text (padding optional); InvalidArgument if malformed."""
    text = text.strip()
    if len(text) > MAX_TOKEN_BYTES * 2:
        raise InvalidArgument(
            f"session token text is {len(text)} characters; the limit is {MAX_TOKEN_BYTES * 2}"
        )
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("session token is not base64url text") from None
    decode_token(raw)  # refuse a malformed token here, with its reason
    return raw
