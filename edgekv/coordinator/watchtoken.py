"""Watch resume tokens: a position in one PoP's change feed, usable at any PoP of the cluster.

A token says "the watcher has seen everything up to here". It carries:

* the PoP whose feed it points into (node id and the feed's epoch) and the
  feed seq of the last entry passed: the same PoP resumes at ``seq + 1``,
  exactly;
* a per-origin vector, origin node id -> the greatest HLC timestamp among
  the feed entries passed (delivered or outside the prefix): another PoP
  resumes by replaying its own feed from where it holds entries newer than
  the vector (coordinator/resumable.py).

Clients treat tokens as opaque bytes. Layout (integers big-endian):
``format (1) | epoch (8) | seq (u64) | node id length (u8) | node id | vector``
with the vector as storage/feed.py encodes it. At most MAX_TOKEN_BYTES and
MAX_TOKEN_ORIGINS origins; anything else is InvalidArgument naming the limit.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from edgekv.errors import InvalidArgument
from edgekv.storage.feed import Vector, decode_vector, encode_vector
from edgekv.storage.record import U64

TOKEN_FORMAT = 1
MAX_TOKEN_BYTES = 4096
MAX_TOKEN_ORIGINS = 128
_EPOCH_BYTES = 8


class WatchToken(NamedTuple):
    """A decoded resume token (see the module docstring)."""

    node_id: str
    epoch: bytes
    seq: int
    vector: Vector


def encode_token(token: WatchToken) -> bytes:
    """The opaque bytes of ``token``."""
    node = token.node_id.encode("ascii")
    return (
        bytes((TOKEN_FORMAT,))
        + token.epoch
        + U64.pack(token.seq)
        + bytes((len(node),))
        + node
        + encode_vector(token.vector)
    )


def decode_token(raw: bytes) -> WatchToken:
    """The token in ``raw``; InvalidArgument (naming the problem and the limit) if it is not one."""
    if len(raw) > MAX_TOKEN_BYTES:
        raise InvalidArgument(
            f"resume_token is {len(raw)} bytes; the limit is {MAX_TOKEN_BYTES} "
            "(send back a token this cluster issued)"
        )
    if not raw or raw[0] != TOKEN_FORMAT:
        first = raw[0] if raw else None
        raise InvalidArgument(
            f"resume_token has format {first}; this node reads format {TOKEN_FORMAT} "
            "(send back a token a Watch event or a Scan issued)"
        )
    try:
        epoch = raw[1 : 1 + _EPOCH_BYTES]
        offset = 1 + _EPOCH_BYTES
        (seq,) = U64.unpack_from(raw, offset)
        offset += 8
        n = raw[offset]
        node = raw[offset + 1 : offset + 1 + n]
        offset += 1 + n
        if len(epoch) != _EPOCH_BYTES or len(node) != n or not n:
            raise ValueError("truncated")
        vector, offset = decode_vector(raw, offset)
        node_id = node.decode("ascii")
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as exc:
        raise InvalidArgument(
            f"resume_token is malformed ({exc}); send back a token as issued"
        ) from None
    if offset != len(raw):
        raise InvalidArgument(
            f"resume_token has {len(raw) - offset} trailing bytes; send back a token as issued"
        )
    if len(vector) > MAX_TOKEN_ORIGINS:
        raise InvalidArgument(
            f"resume_token names {len(vector)} origins; the limit is {MAX_TOKEN_ORIGINS}"
        )
    return WatchToken(node_id, bytes(epoch), int(seq), vector)
