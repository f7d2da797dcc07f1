"""Hypothesis strategies for the wire fuzzer: protobuf messages, their mutations, metadata.

``messages(cls, keys, records)`` draws any message of the edgekv/v1 protos from
its descriptor: every field may be set, repeated fields get a few items, nested
messages recurse (bounded depth), and the fields that carry user keys or
stored records draw from the given strategies, so a call reaches the code
behind validation as well as validation itself. ``payloads`` then serializes
it, or mutates those bytes (flips, truncations, insertions), or sends junk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from edgekv import native

KEY_FIELDS = frozenset({"key", "keys", "prefix", "start", "end", "after_key", "placement"})
RECORD_FIELDS = frozenset({"record"})
NODE_IDS = ("a-1", "b-1", "zz-9", "", "a-1\x00", "é" * 3)
MAX_DEPTH = 3

_U64 = st.one_of(
    st.sampled_from([0, 1, 2**16, 2**32 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1)
)
_U32 = st.one_of(
    st.sampled_from([0, 1, 255, 256, 65535, 65536, 2**32 - 1]), st.integers(0, 2**32 - 1)
)


def keys_under(prefixes: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """Keys that start with one of ``prefixes``, now and then empty or over 1024 bytes."""
    tails = st.binary(max_size=12)
    good = st.builds(lambda p, t: p + t, st.sampled_from(prefixes), tails)
    return st.one_of(
        good,
        good,
        good,
        st.builds(lambda p: p + b"x" * 1100, st.sampled_from(prefixes)),
        st.just(b""),
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def records(keyless: bool = False) -> st.SearchStrategy[bytes]:
    """Stored-record bytes: valid ones (any version, tombstones, expiry) and junk."""
    # Offsets from the wall clock when drawn: bounds that moved with time between test
    # cases made hypothesis refuse the strategy (FlakyStrategyDefinition).
    timestamps = st.one_of(
        st.integers(0, 2**64 - 1),
        st.integers(-10_000, 1_000).map(lambda d: (_now_ms() + d) << 16),
        st.integers(60_000, 10**9).map(lambda d: (_now_ms() + d) << 16),  # far ahead
    )
    origins = st.sampled_from([b"a-1", b"b-1", b"zz-9", b"x" * 255])

    def encode(tomb: bool, ts: int, exp: int, origin: bytes, value: bytes) -> bytes:
        return native.encode_record(tomb, ts, exp, origin, b"" if tomb else value)

    expiries = st.sampled_from([0, 1, -1, 2**64 - 1]).map(
        lambda e: _now_ms() + 60_000 if e == -1 else e  # -1: a minute from now
    )
    valid = st.builds(
        encode, st.booleans(), timestamps, expiries,
        origins, st.binary(max_size=32),
    )  # fmt: skip
    return st.one_of(valid, st.binary(max_size=40))


def messages(
    cls: type[Message],
    keys: st.SearchStrategy[bytes],
    recs: st.SearchStrategy[bytes],
    depth: int = 0,
    hello: Message | None = None,
) -> st.SearchStrategy[Message]:
    """Any ``cls`` message; fields named in KEY_FIELDS draw ``keys``, RECORD_FIELDS ``recs``.

    With ``hello``, a ``hello`` field is mostly that one (a peer's true hello), so
    the calls get past the identity checks to the code behind them.
    """
    descriptor: Descriptor = cls.DESCRIPTOR
    fields = list(descriptor.fields)

    @st.composite
    def build(draw: Callable[[st.SearchStrategy[Any]], Any]) -> Message:
        msg = cls()
        for f in fields:
            if hello is not None and f.name == "hello" and draw(st.integers(0, 9)) != 9:
                msg.hello.CopyFrom(hello)  # type: ignore[attr-defined]
                continue
            if not draw(st.booleans()):
                continue
            if f.is_repeated and not _is_map(f):
                for item in draw(st.lists(_field(f, keys, recs, depth), max_size=3)):
                    _append(msg, f, item)
            elif not _is_map(f):
                _assign(msg, f, draw(_field(f, keys, recs, depth)))
        return msg

    return build()


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def _field(
    f: FieldDescriptor, keys: st.SearchStrategy[bytes], recs: st.SearchStrategy[bytes], depth: int
) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        if depth >= MAX_DEPTH:
            return st.none()
        sub = f.message_type._concrete_class
        return messages(sub, keys, recs, depth + 1)
    if t == FieldDescriptor.TYPE_BYTES:
        if f.name in KEY_FIELDS:
            return keys
        if f.name in RECORD_FIELDS:
            return recs
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from((*NODE_IDS, "torture", "test")), st.text(max_size=16))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _U64
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return _U32
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return st.integers(-(2**63), 2**63 - 1)
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return st.integers(-(2**31), 2**31 - 1)
    if t == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in f.enum_type.values])
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=False, width=32)
    raise NotImplementedError(f"field type {t} of {f.full_name}")


def _assign(msg: Message, f: FieldDescriptor, value: Any) -> None:
    if value is None:
        return
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(msg, f.name).CopyFrom(value)
    else:
        setattr(msg, f.name, value)


def _append(msg: Message, f: FieldDescriptor, value: Any) -> None:
    if value is None:
        return
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(msg, f.name).add().CopyFrom(value)
    else:
        getattr(msg, f.name).append(value)


@st.composite
def mutated(draw: Callable[[st.SearchStrategy[Any]], Any], data: bytes) -> bytes:
    """``data`` with a few flips, truncations or small insertions."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "byte"]))
        if op == "flip" and buf:
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut" and buf:
            del buf[draw(st.integers(0, len(buf) - 1)) :]
        elif op == "insert":
            i = draw(st.integers(0, len(buf)))
            buf[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "byte" and buf:
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    return bytes(buf)


def payloads(msgs: st.SearchStrategy[Message]) -> st.SearchStrategy[bytes]:
    """Serialized messages (mostly), their mutations, or junk."""
    serialized = msgs.map(lambda m: m.SerializeToString())
    return st.one_of(serialized, serialized.flatmap(mutated), st.binary(max_size=64))


# -- metadata -----------------------------------------------------------------

_HEADER_NAME = st.from_regex(r"\A[a-z][a-z0-9_.-]{0,15}\Z").filter(
    lambda n: not n.startswith("grpc-") and n not in {"te", "content-type", "user-agent"}
)
_HEADER_VALUE = st.from_regex(r"\A[ -~]{0,40}\Z")


def extra_headers() -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
    """Random ASCII and binary (``-bin``) headers."""
    text = st.tuples(_HEADER_NAME, _HEADER_VALUE)
    binary = st.tuples(_HEADER_NAME.map(lambda n: n + "-bin"), st.binary(max_size=16))
    return st.lists(st.one_of(text, binary), max_size=3)
